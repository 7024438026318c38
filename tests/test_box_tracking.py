"""Box IoU (pycocotools) and the box-tracking metric against hand-computed cases; task layout."""
import numpy as np
import pytest
import torch

from bench.readouts import build_readout
from bench.task import FeatureSpec
from tasks.box_tracking import BoxTracking, box_iou_pairs, box_tracking_metrics


def test_iou_pairs_hand_computed():
    pred = np.array([[0, 0, 10, 10],   # identical -> 1
                     [0, 0, 2, 2],     # half overlap: inter 2, union 6 -> 1/3
                     [0, 0, 1, 1],     # disjoint -> 0
                     [3, 3, 3, 8],     # zero width -> 0
                     [5, 5, 5, 5],     # identical zero-area boxes -> 0 (empty union, pycocotools)
                     [4, 4, 0, 0]],    # inverted box counts as empty -> 0
                    dtype=float)
    gt = np.array([[0, 0, 10, 10], [1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 10, 10], [5, 5, 5, 5], [0, 0, 4, 4]],
                  dtype=float)
    np.testing.assert_allclose(box_iou_pairs(pred, gt), [1, 1 / 3, 0, 0, 0, 0])
    assert box_iou_pairs(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)
    big = np.tile(pred, (100, 1))  # more pairs than one pycocotools block
    np.testing.assert_allclose(box_iou_pairs(big, np.tile(gt, (100, 1))), np.tile([1, 1 / 3, 0, 0, 0, 0], 100))


def test_metric_masks_objects_and_frames():
    # one clip, 3 objects, 3 frames
    gt = np.zeros((1, 3, 3, 4))
    gt[0, :, :] = [0, 0, 2, 2]
    valid = np.array([[[True, True, True],      # object 0: scored at frames 1, 2
                       [False, True, True],     # object 1: not valid in frame 0 -> no query, ignored
                       [True, False, True]]])   # object 2: frame 1 invalid (its row stays zero)
    gt[0, 2, 1] = 0
    pred = gt.copy()
    pred[0, 0, 1] = [1, 0, 3, 2]   # IoU 1/3
    pred[0, 0, 0] = [50, 50, 60, 60]  # the query frame: not scored
    pred[0, 1] = [50, 50, 60, 60]  # unqueried object: anything
    m = box_tracking_metrics(pred, gt, valid)
    assert m == {"mean_iou": pytest.approx((1 / 3 + 1 + 1) / 3)}
    m = box_tracking_metrics(pred, gt, valid, include_query_frame=True)
    assert m["mean_iou"] == pytest.approx((0 + 1 / 3 + 1 + 1 + 1) / 5)


def test_metric_without_pairs_is_an_error():
    with pytest.raises(ValueError, match="no valid"):
        box_tracking_metrics(np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3), bool))
    only_first = np.zeros((1, 1, 3), bool)
    only_first[..., 0] = True  # valid only in the (unscored) query frame
    with pytest.raises(ValueError):
        box_tracking_metrics(np.zeros((1, 1, 3, 4)), np.zeros((1, 1, 3, 4)), only_first)


SPEC = FeatureSpec(grid=(2, 4, 4), dim=32, clip=(4, 32, 32))


def tiny_batch(b=2, m=3):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 20, (b, m, 4, 2))
    wh = rng.uniform(3, 10, (b, m, 4, 2))
    boxes = torch.from_numpy(np.concatenate([xy, xy + wh], -1).astype(np.float32))
    valid = torch.ones(b, m, 4, dtype=torch.bool)
    valid[:, -1, 0] = False  # last object absent in frame 0: no query
    valid[:, 0, 2] = False
    boxes[~valid] = 0
    return {"features": torch.randn(b, 2, 16, 32), "boxes": boxes, "box_valid": valid}


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_readout_shapes_and_loss(kind):
    task = BoxTracking(SPEC, readout=kind)
    ro = build_readout(kind, task, 32, num_heads=4)
    batch = tiny_batch()
    out = ro(batch["features"], batch)
    assert out.shape == (2, 3 * 2, 4 * 2)  # M objects × 2 time chunks; 2 frames × 4 numbers each
    assert not out.any()  # zero-initialised output layers: training starts from the no-change prediction
    loss = task.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss)
    pred = task.decode(out.detach(), batch)
    assert pred["boxes"].shape == (2, 3, 4, 4)
    assert (pred["boxes"][..., 2:] >= pred["boxes"][..., :2]).all()  # always well formed


def test_zero_output_is_static_and_perfect_output_scores_one():
    task = BoxTracking(SPEC)
    batch = tiny_batch()
    static = task.decode(torch.zeros(2, 6, 8), batch)["boxes"]
    first = batch["boxes"][:, :, :1]
    torch.testing.assert_close(static[:, :2], first[:, :2].expand(-1, -1, 4, -1))
    # invert the parametrisation: (Δcx, Δcy, Δlog w, Δlog h) from the first-frame box
    norm = torch.tensor([32.0, 32, 32, 32])
    gt, q = batch["boxes"] / norm, first / norm
    centre = lambda b: (b[..., :2] + b[..., 2:]) / 2  # noqa: E731
    size = lambda b: (b[..., 2:] - b[..., :2]).clamp_min(1e-3)  # noqa: E731
    per_frame = torch.cat([centre(gt) - centre(q), (size(gt) / size(q)).log()], -1)  # [B, M, T, 4]
    out = per_frame.reshape(2, 3, 2, 8).reshape(2, 6, 8)
    assert task.loss(out, batch).item() == pytest.approx(0.0, abs=1e-5)
    pred = {k: v.numpy() for k, v in task.decode(out, batch).items()}
    m = task.metrics(pred, {k: v.numpy() for k, v in batch.items()})
    assert m["mean_iou"] == pytest.approx(1.0, abs=1e-5)


def test_linear_readout_pools_inside_the_first_box():
    task = BoxTracking(SPEC, readout="linear")
    feats = torch.zeros(1, 2, 16, 32)
    feats[0, :, 0, 0] = 1.0  # token (0, 0): centre (4, 4) px
    feats[0, :, 1, 0] = 3.0  # token (0, 1): centre (12, 4) px
    boxes = torch.zeros(1, 2, 4, 4)
    boxes[0, 0, 0] = torch.tensor([0, 0, 16, 8])  # covers both token centres -> mean 2
    boxes[0, 1, 0] = torch.tensor([11, 3, 13, 5])  # covers only token (0, 1) -> 3
    batch = {"features": feats, "boxes": boxes, "box_valid": torch.ones(1, 2, 4, dtype=torch.bool)}
    read = task.linear_pool(feats, batch)
    assert read.shape == (1, 4, 32)
    assert read[0, :, 0].tolist() == [2.0, 2.0, 3.0, 3.0]
    boxes[0, 1, 0] = torch.tensor([13, 5, 14, 6])  # covers no centre: the nearest token, (0, 1)
    assert task.linear_pool(feats, batch)[0, 2, 0].item() == 3.0


def test_visualize_writes_a_png(tmp_path):
    task = BoxTracking(SPEC)
    batch = tiny_batch()
    pred = {k: v.numpy() for k, v in task.decode(torch.zeros(2, 6, 8), batch).items()}
    target = {k: v.numpy() for k, v in batch.items() if k != "features"}  # no video: a black background
    (path,) = task.visualize(pred, target, tmp_path)
    assert (tmp_path / "box_tracking.png").stat().st_size > 0 and path.endswith("box_tracking.png")
