"""Feature cache: reuse on a hit, a miss whenever weights/data/depth/transforms change."""
import numpy as np
import pytest
import torch

from bench.features import FeatureError, cache_key, cached_features, check_finite


def test_cache_hit_reuses_and_matches_a_fresh_forward(tiny_vit, tiny_clips, tmp_path, monkeypatch):
    feats = cached_features(tiny_vit, "sha-a", tiny_clips, tmp_path)
    assert feats.shape == (6, 2, 16, 32) and feats.dtype == np.float16
    from bench.models.vit import normalize_video
    with torch.inference_mode():
        ref = tiny_vit(normalize_video(torch.from_numpy(tiny_clips.arrays(["video"])["video"])))
    np.testing.assert_allclose(feats.astype(np.float32), ref.numpy(), atol=2e-2, rtol=1e-2)
    import bench.features as bf
    monkeypatch.setattr(bf, "extract", lambda *a, **k: pytest.fail("cache hit must not re-extract"))
    again = cached_features(tiny_vit, "sha-a", tiny_clips, tmp_path)
    np.testing.assert_array_equal(again, feats)


def test_cache_key_covers_weights_data_depth_and_transforms(tiny_vit):
    base = cache_key("w", "d", tiny_vit, {"resize": 16})
    assert cache_key("w2", "d", tiny_vit, {"resize": 16}) != base
    assert cache_key("w", "d2", tiny_vit, {"resize": 16}) != base
    assert cache_key("w", "d", tiny_vit, {"resize": 32}) != base
    tiny_vit.cfg.readout_depth = 0.5
    assert cache_key("w", "d", tiny_vit, {"resize": 16}) != base


def test_interrupted_extraction_leaves_no_trusted_entry(tiny_vit, tiny_clips, tmp_path, monkeypatch):
    import bench.features as bf

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bf, "extract", boom)
    with pytest.raises(KeyboardInterrupt):
        cached_features(tiny_vit, "sha-b", tiny_clips, tmp_path)
    assert list((tmp_path / "features").iterdir()) == []


def test_nan_features_are_refused_before_training():
    feats = np.zeros((5, 2, 3, 4), np.float16)
    check_finite(feats, "ok")
    feats[3, 1, 0, 2] = np.inf
    with pytest.raises(FeatureError, match="clip 3 contain NaN or Inf"):
        check_finite(feats, "model x")


def test_a_larger_world_split_reuses_the_features_of_a_smaller_one(tmp_path, monkeypatch):
    """Clip i of the world does not depend on the split's size: features of a 7-clip split copy the
    4 clips a cached 4-clip split holds, encode the other 3, and equal a fresh extraction."""
    import bench.features as bf
    from bench.data.world import SyntheticWorld
    from bench.models.vit import ViTConfig, VideoViT

    torch.manual_seed(0)
    model = VideoViT(ViTConfig(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=(2, 8, 8), img_size=32,
                               num_frames=4)).eval()
    cfg = dict(num_frames=4, resolution=32, num_points=4, test_size=1, workers=1)
    small = SyntheticWorld(split="train", root=tmp_path, train_size=4, **cfg)
    cached_features(model, "sha", small, tmp_path, batch_size=2)
    encoded, real = [], bf.extract

    def counted(model, videos, *args, first=0, **kwargs):
        encoded.append(first)
        real(model, videos, *args, first=first, **kwargs)
    monkeypatch.setattr(bf, "extract", counted)
    larger = cached_features(model, "sha", SyntheticWorld(split="train", root=tmp_path, train_size=7, **cfg), tmp_path,
                             batch_size=2)
    fresh = cached_features(model, "sha", SyntheticWorld(split="train", root=tmp_path / "b", train_size=7, **cfg),
                            tmp_path / "b", batch_size=2)
    assert encoded == [4, 0]
    np.testing.assert_array_equal(larger, fresh)
