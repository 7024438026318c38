"""Depth metrics against hand-computed values, and the depth task's patch layout."""
import numpy as np
import pytest
import torch

from bench.task import FeatureSpec
from tasks.depth import Depth, depth_metrics, position_prior


def test_metrics_hand_computed():
    target = np.array([[1.0, 2.0], [4.0, 0.0]])  # the 0 is invalid and ignored
    pred = np.array([[1.5, 2.0], [2.0, 99.0]])
    m = depth_metrics(pred, target)
    # |d̂-d|/d = 0.5, 0, 0.5 -> 1/3; ratios 1.5, 1, 2 -> one under 1.25; sq errors .25, 0, 4
    assert m["abs_rel"] == pytest.approx(1 / 3)
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(4.25 / 3))


def test_perfect_prediction_and_nonpositive_predictions():
    target = np.full((2, 3), 2.0)
    assert depth_metrics(target, target) == {"abs_rel": 0.0, "delta1": 1.0, "rmse": 0.0}
    m = depth_metrics(-np.ones((2, 3)), target)  # clamped to eps, never a division by zero
    assert m["delta1"] == 0.0 and np.isfinite(m["abs_rel"])


def test_4ds_patch_at_224_and_bad_patch_size():
    """4DS: 2×8×8 output patches for 16-px tubelets; a patch that does not tile the tubelet is refused."""
    assert Depth(FeatureSpec(grid=(8, 14, 14), dim=32, clip=(16, 224, 224))).patch == (2, 8, 8)
    with pytest.raises(ValueError, match="patch_px=3"):
        Depth(FeatureSpec(grid=(8, 8, 8), dim=32, clip=(16, 64, 64)), patch_px=3)


def test_no_valid_pixel_is_an_error():
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_metrics(np.ones(3), np.zeros(3))


@pytest.mark.parametrize("readout,patch_px,patch,queries", [("attentive", 8, (2, 8, 8), 8 * 8 * 8),
                                                            ("attentive", 4, (2, 4, 4), 8 * 16 * 16),
                                                            ("linear", 4, (2, 8, 8), 8 * 8 * 8)])
def test_depth_layout_roundtrip(readout, patch_px, patch, queries):
    task = Depth(FeatureSpec(grid=(8, 8, 8), dim=32, clip=(16, 64, 64)), readout=readout, patch_px=patch_px)
    assert task.patch == patch and task.output_dim == int(np.prod(patch))
    assert task.queries(32)({"features": torch.zeros(2, 8, 64, 32)}).shape == (2, queries, 32)
    # a depth map that equals its pixel's row index must come back through the patch layout
    rows = torch.arange(64.0).view(1, 1, 64, 1).expand(2, 16, 64, 64)
    from einops import rearrange
    gt, gh, gw = task.out_grid
    out = rearrange(rows, "b (gt pt) (gh ph) (gw pw) -> b (gt gh gw) (pt ph pw)", gt=gt, gh=gh, gw=gw)
    torch.testing.assert_close(task.decode(out, {})["depth"], rows)
    assert task.loss(out, {"depth": rows + 0.0}).item() == 0.0


@pytest.mark.parametrize("loss", ["l1", "log"])
def test_loss_is_the_mean_over_valid_pixels_only(loss):
    task = Depth(FeatureSpec(grid=(1, 1, 1), dim=8, clip=(2, 8, 8)), loss=loss)
    target = torch.full((1, 2, 8, 8), 2.0)
    target[0, 0, :4] = 0.0  # a quarter of the pixels invalid: their prediction must not count
    pred = torch.where(target > 0, 3.0, 100.0)
    out = pred.reshape(1, 1, 128)  # one 2x8x8 output patch: row-major, as depth_map lays it out
    want = abs(3.0 - 2.0) if loss == "l1" else abs(3.0 - np.log(2.0))
    assert task.loss(out, {"depth": target}).item() == pytest.approx(want)


def test_position_prior_is_the_per_pixel_median():
    train = np.array([[[[1.0, 0.0]]], [[[3.0, 0.0]]], [[[2.0, 5.0]]]])  # [N=3, T=1, H=1, W=2]; 0 = invalid
    np.testing.assert_allclose(position_prior(train), [[[2.0, 5.0]]])
    assert position_prior(np.zeros((2, 1, 1, 1)))[0, 0, 0] == 1.0  # never valid: 1 m, finite


def test_synthetic_depth_is_not_solved_by_pixel_position(tmp_path):
    """The world varies camera height, distance, pitch, roll, field of view and room size enough
    that predicting each pixel's train-median depth (no input at all) stays far from the readouts'
    range: world v1 (fixed-ish camera) gave AbsRel 0.22 here at full size, as good as any encoder."""
    from bench.data.world import SyntheticWorld
    kw = dict(num_frames=4, resolution=32, train_size=96, test_size=32, root=tmp_path)
    train, test = (SyntheticWorld(split=s, **kw).arrays(["depth"])["depth"] for s in ("train", "test"))
    prior = np.broadcast_to(position_prior(np.asarray(train)), test.shape)
    assert depth_metrics(prior, np.asarray(test))["abs_rel"] > 0.3


def test_twice_the_truth_is_perfect_only_after_scale_alignment():
    """pred = 2·gt: AbsRel 1 unaligned, 0 under median and least-squares scale (δ1 0 -> 1)."""
    target = np.arange(1.0, 17.0).reshape(1, 2, 2, 4)
    target[0, 0, 0, 0] = 0.0  # invalid pixels do not enter the fitted scale
    pred = np.where(target > 0, 2 * target, 50.0)
    assert depth_metrics(pred, target)["abs_rel"] == pytest.approx(1.0)
    for align in ("median", "lstsq"):
        m = depth_metrics(pred, target, align=align)
        assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12) and m["delta1"] == 1.0


def test_median_scale_is_per_image():
    """Two frames with different scale errors (×2, ×0.5) are each corrected; the median of an even
    count of valid pixels is the mean of the middle two."""
    target = np.array([[[[1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0, 3.0, 4.0]]]])  # [N=1, T=2, H=1, W=4]
    pred = target * np.array([2.0, 0.5])[None, :, None, None]
    assert depth_metrics(pred, target, align="median")["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    skewed = np.array([[[1.0, 1.0, 1.0, 5.0]]])  # median 1, mean 2: median and lstsq scales differ
    target1 = np.full((1, 1, 4), 2.0)
    assert depth_metrics(skewed, target1, align="median")["abs_rel"] == pytest.approx(1.0)  # scale 2: 2,2,2,10
    # lstsq: s = Σd̂d / Σd̂² = 16/28 = 4/7 -> 4/7 (×3), 20/7: errors 5/7 (×3), 3/7 -> mean 18/28
    assert depth_metrics(skewed, target1, align="lstsq")["abs_rel"] == pytest.approx(9 / 14)


def test_pooled_and_per_image_averages_differ():
    """Frame A: 1 valid pixel, AbsRel 1 (pred 2, gt 1). Frame B: 3 valid pixels, AbsRel 0.
    Pooled: 1/4 of the pixels are off -> 0.25; per image: mean(1, 0) -> 0.5. RMSE: pooled
    sqrt(1/4) = 0.5, per image mean(1, 0) = 0.5; δ1 0.75 vs 0.5."""
    target = np.array([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]]])  # [1, 2, 2, 2]
    pred = np.array([[[[2.0, 9.0], [9.0, 9.0]], [[1.0, 1.0], [1.0, 9.0]]]])
    assert depth_metrics(pred, target) == pytest.approx({"abs_rel": 0.25, "delta1": 0.75, "rmse": 0.5})
    assert depth_metrics(pred, target, average="per_image") == pytest.approx({"abs_rel": 0.5, "delta1": 0.5,
                                                                             "rmse": 0.5})


@pytest.mark.parametrize("average,align", [("pooled", "none"), ("per_image", "none"), ("per_image", "median"),
                                           ("pooled", "lstsq")])
def test_per_clip_reproduces_the_split_abs_rel(average, align):
    """The runner's identity: Σ w·v / Σ w over clips is the split AbsRel, an empty frame included."""
    rng = np.random.default_rng(0)
    target = rng.uniform(0.5, 5, (3, 2, 4, 4)) * (rng.random((3, 2, 4, 4)) > 0.3)
    target[1, 0] = 0.0  # a frame with no valid pixel: weight 0 under both averages
    pred = rng.uniform(0.5, 5, target.shape)
    task = Depth(FeatureSpec(grid=(1, 1, 1), dim=8, clip=(2, 4, 4)), average=average, align=align)
    values, weights = task.per_clip({"depth": pred}, {"depth": target})
    pooled = np.sum(values * weights) / np.sum(weights)
    assert pooled == pytest.approx(task.metrics({"depth": pred}, {"depth": target})["abs_rel"])


@pytest.mark.parametrize("key,value", [("average", "mean"), ("align", "scale_shift")])
def test_bad_protocol_option_names_the_key_and_choices(key, value):
    with pytest.raises(ValueError, match=rf"task\.{key}='{value}': expected one of \["):
        Depth(FeatureSpec(grid=(1, 1, 1), dim=8, clip=(2, 8, 8)), **{key: value})
    with pytest.raises(ValueError, match=rf"task\.{key}="):
        depth_metrics(np.ones((2, 2)), np.ones((2, 2)), **{key: value})


def test_protocol_options_are_in_the_task_config():
    from hydra.core.config_store import ConfigStore
    node = ConfigStore.instance().load("task/depth.yaml").node
    assert (node.average, node.align) == ("pooled", "none")
