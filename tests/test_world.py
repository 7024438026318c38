"""The synthetic 4D world: clip contract, determinism, geometric consistency of every ground truth, labels, cache."""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bench.data import world
from bench.data.world import LABEL_NAMES, SyntheticWorld, WorldConfig, clip_label, render_clip

CFG = WorldConfig(num_frames=8, resolution=32, num_points=24, train_size=6, test_size=3)
DTYPES = {"video": np.uint8, "depth": np.float32, "intrinsics": np.float32, "cam_to_world": np.float32,
          "query_points": np.float32, "target_points": np.float32, "occluded": np.bool_, "track_object": np.int32,
          "boxes": np.float32, "box_valid": np.bool_, "segmentation": np.uint8}


def shapes(cfg: WorldConfig) -> dict[str, tuple[int, ...]]:
    t, r, n, m = cfg.num_frames, cfg.resolution, cfg.num_points, cfg.max_objects
    return {"video": (t, r, r, 3), "depth": (t, r, r), "intrinsics": (3, 3), "cam_to_world": (t, 4, 4),
            "query_points": (n, 3), "target_points": (n, t, 2), "occluded": (n, t), "track_object": (n,),
            "boxes": (m, t, 4), "box_valid": (m, t), "segmentation": (t, r, r)}


def check_contract(clip: dict, cfg: WorldConfig) -> None:
    for key, shape in shapes(cfg).items():
        assert clip[key].shape == shape and clip[key].dtype == DTYPES[key], key
    assert isinstance(clip["label"], int) and 0 <= clip["label"] < len(LABEL_NAMES)


@pytest.fixture(scope="module")
def clips() -> list[dict]:
    return [render_clip(CFG, "train", i) for i in range(6)]


@pytest.fixture
def train(tmp_path) -> SyntheticWorld:
    return SyntheticWorld(CFG, "train", root=tmp_path)


def test_clip_contract_and_masks(train):
    assert len(train) == 6 and set(train.provides) >= set(DTYPES) | {"masks", "label"}
    assert train.meta["label_names"] == LABEL_NAMES and train.meta["num_classes"] == len(LABEL_NAMES)
    clip = train[1]
    check_contract(clip, CFG)
    assert len(clip["masks"]) == CFG.max_objects and all(len(m) == CFG.num_frames for m in clip["masks"])
    for m, rles in enumerate(clip["masks"]):
        decoded = mask_utils.decode(rles).transpose(2, 0, 1)
        np.testing.assert_array_equal(decoded, clip["segmentation"] == m + 1)
    stacked = train.arrays(["depth", "label"])
    assert stacked["depth"].shape == (6, *shapes(CFG)["depth"]) and stacked["label"].shape == (6,)
    with pytest.raises(KeyError, match="masks"):
        train.arrays(["masks"])


def test_128_pixels_works():
    cfg = WorldConfig(num_frames=2, resolution=128, num_points=8)
    clip = render_clip(cfg, "test", 0)
    check_contract(clip, cfg)
    assert (clip["depth"] > 0).all() and clip["box_valid"].any()


def test_deterministic_and_distinct(clips):
    again = render_clip(CFG, "train", 0)
    assert all(np.array_equal(again[k], clips[0][k]) for k in DTYPES) and again["label"] == clips[0]["label"]
    others = [clips[1], render_clip(dataclasses.replace(CFG, seed=1), "train", 0), render_clip(CFG, "test", 0)]
    assert all(not np.array_equal(o["video"], clips[0]["video"]) for o in others)


def test_cache_matches_render_and_is_reused(train, tmp_path, monkeypatch):
    for i in (0, 5):
        clip = train[i]
        fresh = render_clip(CFG, "train", i)
        assert all(np.array_equal(clip[k], fresh[k]) for k in DTYPES) and clip["label"] == fresh["label"]

    def fail(*args):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(world, "render_clip", fail)
    again = SyntheticWorld(split="train", root=tmp_path, **dataclasses.asdict(CFG))
    assert again.fingerprint == train.fingerprint
    np.testing.assert_array_equal(again.arrays(["video"])["video"], train.arrays(["video"])["video"])
    assert SyntheticWorld(dataclasses.replace(CFG, test_size=4), "train", root=tmp_path).fingerprint == train.fingerprint


def test_interrupted_or_stale_generation_is_never_trusted(tmp_path, monkeypatch):
    fp = world.fingerprint(CFG, "test")
    stale = tmp_path / "world" / f".tmp-{fp[:16]}-crashed"
    stale.mkdir(parents=True)
    np.save(stale / "video.npy", np.zeros(3))

    def crash_late(cfg, split, index):
        if index == 2:
            raise RuntimeError("killed")
        return render_clip(cfg, split, index)

    monkeypatch.setattr(world, "render_clip", crash_late)
    with pytest.raises(RuntimeError, match="killed"):
        SyntheticWorld(CFG, "test", root=tmp_path)
    assert not (tmp_path / "world" / fp).exists()
    monkeypatch.undo()
    ds = SyntheticWorld(CFG, "test", root=tmp_path)
    np.testing.assert_array_equal(ds[2]["video"], render_clip(CFG, "test", 2)["video"])


def test_parallel_generation_is_byte_identical(tmp_path):
    serial = SyntheticWorld(CFG, "train", root=tmp_path / "a", workers=1)
    pooled = SyntheticWorld(CFG, "train", root=tmp_path / "b", workers=2)
    for key in world.ARRAY_KEYS:
        a, b = (d.directory / f"{key}.npy" for d in (serial, pooled))
        assert a.read_bytes() == b.read_bytes(), key


def test_a_larger_split_copies_the_clips_a_smaller_one_cached(train, tmp_path, monkeypatch):
    """Clip i does not depend on the split's size: a 9-clip split renders clips 6-8 only, and its
    files are byte-identical to a fresh 9-clip build; another world's splits are never copied."""
    rendered = []

    def counted(cfg, split, index):
        rendered.append(index)
        return render_clip(cfg, split, index)

    monkeypatch.setattr(world, "render_clip", counted)
    SyntheticWorld(dataclasses.replace(CFG, seed=1, train_size=2), "train", root=tmp_path, workers=1)
    larger = SyntheticWorld(dataclasses.replace(CFG, train_size=9), "train", root=tmp_path, workers=1)
    assert rendered == [0, 1, 6, 7, 8]
    fresh = SyntheticWorld(dataclasses.replace(CFG, train_size=9), "train", root=tmp_path / "fresh", workers=1)
    for key in world.ARRAY_KEYS:
        assert (larger.directory / f"{key}.npy").read_bytes() == (fresh.directory / f"{key}.npy").read_bytes(), key


def test_bad_split_and_option():
    with pytest.raises(ValueError, match="'val'"):
        render_clip(CFG, "val", 0)
    with pytest.raises(ValueError, match="val"):
        SyntheticWorld(CFG, "val")
    with pytest.raises(ValueError, match="no_such_option"):
        SyntheticWorld(CFG, "train", no_such_option=1)


def test_depth_boxes_and_masks(clips):
    for clip in clips:
        assert (clip["depth"] > 0).all()  # the room is closed
        seg = clip["segmentation"]
        for m in range(CFG.max_objects):
            for t in range(CFG.num_frames):
                ys, xs = np.nonzero(seg[t] == m + 1)
                assert clip["box_valid"][m, t] == (len(xs) > 0)
                expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0]
                np.testing.assert_array_equal(clip["boxes"][m, t], expected)
    assert any(c["box_valid"].any() for c in clips)


def background_tracks(clip: dict) -> dict[str, np.ndarray]:
    """World points of static tracks unprojected at their query pixel, and their camera z and
    pixel position in every frame computed from intrinsics and cam_to_world alone."""
    k, c2w = clip["intrinsics"].astype(np.float64), clip["cam_to_world"].astype(np.float64)
    sel = clip["track_object"] == 0
    tq, y, x = clip["query_points"][sel].T.astype(np.float64)
    t = tq.astype(int)
    z = clip["depth"][t, y.astype(int), x.astype(int)]
    cam = np.stack([(x - k[0, 2]) / k[0, 0] * z, (y - k[1, 2]) / k[1, 1] * z, z, np.ones_like(z)], -1)
    world_pts = np.einsum("nij,nj->ni", c2w[t], cam)
    in_cam = np.einsum("tij,nj->nti", np.linalg.inv(c2w), world_pts)
    proj = np.stack([k[0, 0] * in_cam[..., 0] / in_cam[..., 2] + k[0, 2],
                     k[1, 1] * in_cam[..., 1] / in_cam[..., 2] + k[1, 2]], -1)
    return {"z": in_cam[..., 2], "proj": proj, "target": clip["target_points"][sel],
            "occluded": clip["occluded"][sel], "depth": clip["depth"]}


def depth_at(track: dict, xy: np.ndarray) -> np.ndarray:
    r = track["depth"].shape[-1]
    px = np.clip(np.floor(xy).astype(int), 0, r - 1)
    return track["depth"][np.arange(track["depth"].shape[0])[None, :], px[..., 1], px[..., 0]]


def test_tracks_follow_the_geometry(clips):
    """Static tracks reproject through the camera poses, visible ones sit on the depth map, occluded
    ones lie behind it or off screen; some tracks really get occluded."""
    behind = []
    for clip in clips:
        tr = background_tracks(clip)
        front, r = tr["z"] > 0.1, CFG.resolution
        proj = np.clip(tr["proj"][front], -r, 2 * r)  # targets far off screen are clipped to [-r, 2r]
        np.testing.assert_allclose(tr["target"][front], proj, atol=0.02)
        visible, seen = ~tr["occluded"], depth_at(tr, tr["target"])
        rel = np.abs(seen - tr["z"]) / tr["z"]
        assert np.median(rel[visible]) < 0.03 and (rel[visible] < 0.1).mean() > 0.95  # sub-pixel offsets only
        on_screen = front & (tr["target"] >= 0).all(-1) & (tr["target"] < r).all(-1)
        assert tr["occluded"][~on_screen].all()
        hidden = tr["occluded"] & on_screen
        behind.extend(tr["z"][hidden] > seen[hidden] * 1.001)
    assert len(behind) > 0 and np.mean(behind) >= 0.9
    queries = np.concatenate([c["query_points"][:, 0] for c in clips])
    assert (queries == 0).mean() > 0.5 and (queries > 0).any()
    for clip in clips:  # the query point is visible where it was sampled
        n = np.arange(CFG.num_points)
        tq = clip["query_points"][:, 0].astype(int)
        assert not clip["occluded"][n, tq].any()
        np.testing.assert_array_equal(clip["target_points"][n, tq], clip["query_points"][:, [2, 1]])
        assert ((clip["track_object"] > 0) == (clip["segmentation"][tq, *clip["query_points"][:, 1:].astype(int).T] > 0)).all()


def test_labels_balanced_and_middle_frame_uninformative(monkeypatch):
    counts = Counter(clip_label(CFG, "train", i) for i in range(10 * len(LABEL_NAMES)))
    assert sorted(counts) == list(range(len(LABEL_NAMES))) and set(counts.values()) == {10}
    middles = []  # frame T // 2 of one clip rendered under several labels: byte-identical
    for label in (0, 3, 4, 6, 9, 11):
        monkeypatch.setattr(world, "clip_label", lambda *args, label=label: label)
        clip = render_clip(CFG, "train", 7)
        assert clip["label"] == label and not np.array_equal(clip["video"][0], clip["video"][-1])
        middles.append(clip["video"][CFG.num_frames // 2])
    assert all(np.array_equal(m, middles[0]) for m in middles)
