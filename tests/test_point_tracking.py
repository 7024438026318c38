"""TAP-Vid metrics against hand-computed cases, TAP-Vid query sampling, and the task's layout."""
import math

import numpy as np
import pytest
import torch

from bench.errors import ConfigError
from bench.readouts import build_readout
from bench.task import FeatureSpec
from tasks.point_tracking import PointTracking, evaluation_frames, make_queries, tapvid_metrics


def one_track(pred_xy, gt_xy, gt_occ=None, pred_occ=None, query_t=0, mode="first", size=(256, 256)):
    """Metrics of a single clip holding a single track (arrays over frames)."""
    gt_xy, pred_xy = np.asarray(gt_xy, float), np.asarray(pred_xy, float)
    t = len(gt_xy)
    gt_occ = np.zeros(t, bool) if gt_occ is None else np.asarray(gt_occ, bool)
    pred_occ = np.zeros(t, bool) if pred_occ is None else np.asarray(pred_occ, bool)
    query = np.array([[[query_t, gt_xy[query_t, 1], gt_xy[query_t, 0]]]])
    return tapvid_metrics(query, gt_occ[None, None], gt_xy[None, None], pred_occ[None, None], pred_xy[None, None],
                          mode, size)


def test_hand_computed_distances_jaccard_and_query_frame_exclusion():
    gt = np.zeros((4, 2))
    pred = np.array([[50.0, 0], [3, 0], [0, 10], [20, 0]])  # the query frame's 50-px error is not scored
    m = one_track(pred, gt)
    # evaluated errors 3, 10, 20 px: within δ=1,2,4,8,16 -> 0,0,1,1,2 of 3
    assert m["delta_avg"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 3 + 2 / 3) / 5)
    # all predicted visible: J_δ = TP / (3 visible + FP) with FP = 3 - TP -> 0, 0, 1/5, 1/5, 2/4
    assert m["average_jaccard"] == pytest.approx((0 + 0 + 0.2 + 0.2 + 0.5) / 5)
    assert m["occlusion_accuracy"] == 1.0


def test_threshold_is_strict_and_coordinates_scale_to_256():
    gt = np.zeros((2, 2))
    # exactly 1 px at 256 is not within δ=1 (strict <): within 2,4,8,16 -> 4/5
    assert one_track(np.array([[0, 0], [1.0, 0]]), gt)["delta_avg"] == pytest.approx(4 / 5)
    # a 128-wide, 64-high image: 1 px in x is 2 px at 256, 1 px in y is 4 px at 256
    assert one_track(np.array([[0, 0], [1.0, 0]]), gt, size=(64, 128))["delta_avg"] == pytest.approx(3 / 5)
    assert one_track(np.array([[0, 0], [0, 1.0]]), gt, size=(64, 128))["delta_avg"] == pytest.approx(2 / 5)


def test_occlusion_terms():
    gt = np.zeros((4, 2))
    gt_occ = [False, False, True, False]
    pred_occ = [True, True, False, False]  # frame 1: missed (FN), frame 2: false positive, frame 3: TP
    m = one_track(gt, gt, gt_occ, pred_occ)
    assert m["occlusion_accuracy"] == pytest.approx(1 / 3)
    assert m["delta_avg"] == 1.0  # positions are exact; predicted occlusion does not matter for δ
    # every δ: TP = 1 (frame 3), GT visible = 2 (frames 1, 3), FP = 1 (frame 2) -> 1 / 3
    assert m["average_jaccard"] == pytest.approx(1 / 3)


def test_everything_occluded():
    gt = np.zeros((3, 2))
    occ = [False, True, True]  # visible only at the query frame
    # the prediction agrees: occlusion accuracy 1, but δ and Jaccard are 0/0 -> an error for one clip
    with pytest.raises(ValueError, match="delta_avg|average_jaccard"):
        one_track(gt, gt, occ, occ)
    # predicted visible where the truth is occluded: Jaccard 0/(0 + 2 FP) = 0, δ still undefined
    query = np.zeros((2, 1, 3))
    gt_occ = np.array([[[False, True, True]], [[False, False, False]]])
    pred_occ = np.zeros_like(gt_occ)
    tracks = np.zeros((2, 1, 3, 2))
    m = tapvid_metrics(query, gt_occ, tracks, pred_occ, tracks, "first", (256, 256))
    # clip 0: J = 0, δ undefined (left out), OA = 0; clip 1: perfect
    assert m["average_jaccard"] == pytest.approx(0.5)
    assert m["delta_avg"] == 1.0
    assert m["occlusion_accuracy"] == pytest.approx(0.5)
    # all predicted occluded, truth visible: Jaccard 0, δ unaffected
    m = tapvid_metrics(query, np.zeros_like(gt_occ), tracks, np.ones_like(gt_occ), tracks, "first", (256, 256))
    assert m == {"average_jaccard": 0.0, "delta_avg": 1.0, "occlusion_accuracy": 0.0}


def test_strided_scores_frames_before_the_query_and_invalid_queries_are_ignored():
    gt = np.zeros((3, 2))
    pred = np.array([[100.0, 0], [0, 0], [0, 0]])
    assert one_track(pred, gt, query_t=1, mode="first")["delta_avg"] == 1.0  # frame 0 precedes the query
    assert one_track(pred, gt, query_t=1, mode="strided")["delta_avg"] == pytest.approx(0.5)
    assert evaluation_frames(np.array([1.0]), 3, "strided").tolist() == [[True, False, True]]
    query = np.zeros((1, 2, 3))
    tracks = np.zeros((1, 2, 3, 2))
    bad = tracks.copy()
    bad[0, 1] = 100.0
    m = tapvid_metrics(query, np.zeros((1, 2, 3), bool), tracks, np.zeros((1, 2, 3), bool), bad, "first",
                       (256, 256), query_valid=np.array([[True, False]]))
    assert m["delta_avg"] == 1.0


def reference_loop(query, gt_occ, gt, pred_occ, pred, mode):
    """An independent per-point implementation of the TAP-Vid definitions (one clip per row)."""
    out = {"average_jaccard": [], "delta_avg": [], "occlusion_accuracy": []}
    for b in range(len(gt)):
        n_eval = correct_occ = 0
        within = {d: [0, 0] for d in (1, 2, 4, 8, 16)}  # [correct, visible]
        jac = {d: [0, 0, 0] for d in (1, 2, 4, 8, 16)}  # tp, gt visible, fp
        for q in range(gt.shape[1]):
            for t in range(gt.shape[2]):
                qt = int(round(query[b, q, 0]))
                if (mode == "first" and t <= qt) or (mode == "strided" and t == qt):
                    continue
                n_eval += 1
                correct_occ += pred_occ[b, q, t] == gt_occ[b, q, t]
                dist = np.hypot(*(pred[b, q, t] - gt[b, q, t]))
                for d in within:
                    hit = dist < d
                    if not gt_occ[b, q, t]:
                        within[d][1] += 1
                        within[d][0] += hit
                        jac[d][1] += 1
                        jac[d][0] += hit and not pred_occ[b, q, t]
                    if not pred_occ[b, q, t] and (gt_occ[b, q, t] or not hit):
                        jac[d][2] += 1
        out["occlusion_accuracy"].append(correct_occ / n_eval)
        out["delta_avg"].append(np.mean([c / v for c, v in within.values()]))
        out["average_jaccard"].append(np.mean([tp / (v + fp) for tp, v, fp in jac.values()]))
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_matches_an_independent_loop_implementation(mode):
    rng = np.random.default_rng(0)
    b, n, t = 3, 5, 6
    gt = rng.uniform(0, 256, (b, n, t, 2))
    pred = gt + rng.normal(0, 6, gt.shape)
    gt_occ = rng.random((b, n, t)) < 0.3
    pred_occ = rng.random((b, n, t)) < 0.3
    gt_occ[:, :, 0] = False  # at least one visible frame per track
    query = np.zeros((b, n, 3))
    query[..., 0] = rng.integers(0, t - 1, (b, n))
    expected = reference_loop(query, gt_occ, gt, pred_occ, pred, mode)
    got = tapvid_metrics(query, gt_occ, gt, pred_occ, pred, mode, (256, 256))
    for k in expected:
        assert got[k] == pytest.approx(expected[k])


def test_make_queries_first_and_strided():
    pts = np.arange(2 * 4 * 2, dtype=np.float32).reshape(2, 4, 2)  # (x, y) = (2k, 2k+1) at frame t of track n
    occ = np.array([[True, False, False, True], [True, True, True, True]])
    q, valid, track = make_queries(pts, occ, "first")
    assert valid.tolist() == [True, False] and track.tolist() == [0, 1]
    assert q[0].tolist() == [1, 3, 2]  # first visible frame 1: (t, y, x)
    q, valid, track = make_queries(pts, occ, "strided", stride=2)
    assert track.tolist() == [0, 1, 0, 1]
    assert q[:, 0].tolist() == [0, 0, 2, 2] and valid.tolist() == [False, False, True, False]
    assert q[2].tolist() == [2, pts[0, 2, 1], pts[0, 2, 0]]
    qt, vt, _ = make_queries(torch.from_numpy(pts)[None], torch.from_numpy(occ)[None], "first")  # batched torch
    assert qt.shape == (1, 2, 3) and vt.tolist() == [[True, False]]


SPEC = FeatureSpec(grid=(2, 4, 4), dim=32, clip=(4, 32, 32))


def tiny_batch(b=2, n=3, seed=0):
    rng = np.random.default_rng(seed)
    pts = torch.from_numpy(rng.uniform(0, 32, (b, n, 4, 2)).astype(np.float32))
    occ = torch.from_numpy(rng.random((b, n, 4)) < 0.3)
    occ[:, -1] = True  # a never-visible track, whose positions are garbage
    pts[:, -1] = float("nan")
    return {"features": torch.randn(b, 2, 16, 32), "target_points": pts, "occluded": occ}


@pytest.mark.parametrize("kind", ["attentive", "linear"])
@pytest.mark.parametrize("mode", ["first", "strided"])
def test_readout_shapes_loss_and_decode(kind, mode):
    task = PointTracking(SPEC, readout=kind, query_mode=mode, query_stride=2)
    ro = build_readout(kind, task, 32, num_heads=4)
    batch = tiny_batch()
    out = ro(batch["features"], batch)
    q = 3 if mode == "first" else 6
    assert out.shape == (2, q * 2, 3 * 2)  # Q queries × 2 time chunks, 2 frames × (dx, dy, occ) each
    assert not out.any()  # zero-initialised output layers: training starts from the no-change prediction
    loss = task.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in ro.parameters() if p.grad is not None)
    pred = task.decode(out.detach(), batch)
    assert pred["tracks"].shape == (2, q, 4, 2) and pred["occluded"].shape == (2, q, 4)


def test_perfect_output_scores_one_and_zero_output_is_static():
    task = PointTracking(SPEC)
    batch = tiny_batch()
    q, valid, track = make_queries(batch["target_points"], batch["occluded"])
    start = torch.nan_to_num(q[..., [2, 1]]) / 32  # (x, y) normalised
    gt = torch.nan_to_num(batch["target_points"][:, track]) / 32
    occ = batch["occluded"][:, track]
    per_frame = torch.cat([gt - start[:, :, None], torch.where(occ, 10.0, -10.0)[..., None]], -1)  # [B,Q,T,3]
    out = per_frame.reshape(2, 3, 2, 2 * 3).reshape(2, 6, 6)  # (q c) (l k)
    pred = {k: v.numpy() for k, v in task.decode(out, batch).items()}
    target = {k: v.numpy() for k, v in batch.items() if k != "features"}
    assert task.metrics(pred, target) == {"average_jaccard": 1.0, "delta_avg": 1.0, "occlusion_accuracy": 1.0}
    static = task.decode(torch.zeros(2, 6, 6), batch)["tracks"]
    torch.testing.assert_close(static, torch.nan_to_num(q[..., [2, 1]])[:, :, None].expand(-1, -1, 4, -1))


def test_linear_readout_reads_the_token_under_the_query():
    task = PointTracking(SPEC, readout="linear")
    feats = torch.zeros(1, 2, 16, 32)
    feats[0, 1, 2 * 4 + 3] = 1.0  # chunk 1, token row 2 col 3 (centre y=20, x=28 px)
    batch = {"features": feats, "target_points": torch.tensor([[[[28.0, 20.0]] * 4]]),
             "occluded": torch.zeros(1, 1, 4, dtype=torch.bool)}
    read = task.linear_pool(feats, batch)
    assert read.shape == (1, 2, 32)
    assert read[0, 0].abs().sum() == 0 and read[0, 1, 0] == pytest.approx(1.0)


def test_query_appearance_is_the_token_under_the_point_in_the_chunk_of_its_frame():
    """Two tracks at the same place, one first visible in frame 0 (chunk 0), one in frame 2
    (chunk 1): each query token of a track, in every chunk, reads its own chunk's token."""
    task = PointTracking(SPEC)
    feats = torch.zeros(1, 2, 16, 32)
    feats[0, 1, 2 * 4 + 3] = 1.0  # chunk 1, token row 2 col 3 (centre y=20, x=28 px)
    occ = torch.zeros(1, 2, 4, dtype=torch.bool)
    occ[0, 1, :2] = True  # track 1 appears in frame 2
    batch = {"features": feats, "target_points": torch.full((1, 2, 4, 2), 20.0).index_fill(-1, torch.tensor([0]), 28.0),
             "occluded": occ}
    read = task.query_appearance(feats, batch)
    assert read.shape == (1, 2 * 2, 32)  # (q t')
    assert read[0, :2].abs().sum() == 0  # track 0: chunk 0's token, in both query chunks
    torch.testing.assert_close(read[0, 2:, 0], torch.ones(2))  # track 1: chunk 1's token, in both


def test_frozen4d_readout_adds_query_appearance_and_4ds_does_not():
    task = PointTracking(SPEC)
    frozen, exact = (build_readout("attentive", task, 32, num_heads=4, protocol=p) for p in ("frozen4d", "4ds"))
    assert frozen.appearance is not None and exact.appearance is None
    batch = tiny_batch()
    frozen.head.weight.data.normal_()  # past the zero init, so the output depends on the query
    task.loss(frozen(batch["features"], batch), batch).backward()
    assert frozen.appearance.weight.grad.abs().sum() > 0


def test_visualize_writes_a_png(tmp_path):
    task = PointTracking(SPEC)
    batch = tiny_batch(b=2)
    pred = {k: v.numpy() for k, v in task.decode(torch.zeros(2, 6, 6), batch).items()}
    target = {k: v.numpy() for k, v in batch.items() if k != "features"}
    target["video"] = np.zeros((2, 4, 32, 32, 3), np.uint8)
    (path,) = task.visualize(pred, target, tmp_path)
    assert (tmp_path / "point_tracking.png").stat().st_size > 0 and path.endswith("point_tracking.png")


def test_loss_is_huber_in_256_pixel_units_over_delta_plus_occlusion_bce():
    """One query visible in frames 0..3 of a 32-px clip; the readout places it 2 px (16 px at
    256×256) right of the truth in frame 1 and exactly elsewhere, with occlusion logits 0.
    Huber(δ=4) on x in frame 1: 4·(16 − 2) = 56; averaged over the 4 visible frames (the query
    frame too) × 2 coords: 7; divided by δ: 7/4. BCE of logit 0 against "visible": ln 2."""
    task = PointTracking(SPEC, huber_delta=4.0, occlusion_weight=1.0)
    track = torch.tensor([[10.0, 12.0]] * 4)  # static (x, y) px
    batch = {"target_points": track[None, None], "occluded": torch.zeros(1, 1, 4, dtype=torch.bool)}
    per_frame = torch.zeros(1, 1, 4, 3)
    per_frame[0, 0, 1, 0] = 2.0 / 32  # Δx of frame 1, normalised
    out = per_frame.reshape(1, 1, 2, 6).reshape(1, 2, 6)  # (q c) (l k)
    torch.testing.assert_close(task.loss(out, batch), torch.tensor(7 / 4 + math.log(2)))


def test_train_view_keeps_k_tracks_of_each_clip_aligned_across_keys_and_in_order():
    task = PointTracking(SPEC, train_tracks=3)
    batch = tiny_batch(b=4, n=8)
    batch["target_points"] = torch.arange(4 * 8, dtype=torch.float32).view(4, 8, 1, 1).expand(-1, -1, 4, 2).clone()
    batch["occluded"] = (torch.arange(8) % 2 == 0).view(1, 8, 1).expand(4, -1, 4).clone()
    view = task.train_view(batch, np.random.default_rng(0))
    assert view["target_points"].shape == (4, 3, 4, 2) and view["occluded"].shape == (4, 3, 4)
    assert view["features"] is batch["features"]  # only the keys indexed by track are cut
    kept = view["target_points"][:, :, 0, 0].long() - 8 * torch.arange(4)[:, None]  # each clip's own track indices
    assert ((kept >= 0) & (kept < 8)).all() and (kept.diff(dim=1) > 0).all()  # distinct, in their order
    assert len({tuple(k) for k in kept.tolist()}) > 1  # clips draw their own subsets
    torch.testing.assert_close(view["occluded"][:, :, 0], kept % 2 == 0)  # the same tracks in every key
    again = task.train_view(batch, np.random.default_rng(0))
    assert torch.equal(again["target_points"], view["target_points"])  # the generator decides


def test_train_view_is_the_whole_batch_without_train_tracks_or_with_too_few_tracks():
    batch = tiny_batch()
    assert PointTracking(SPEC).train_view(batch, np.random.default_rng(0)) is batch
    assert PointTracking(SPEC, train_tracks=3).train_view(batch, np.random.default_rng(0)) is batch
    with pytest.raises(ConfigError, match="task.train_tracks=0"):
        PointTracking(SPEC, train_tracks=0)
