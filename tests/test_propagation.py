"""Label propagation: J&F and PCK against hand-computed cases, the propagation readout's invariants,
the blind reference, one ``bench.run`` per task, and the positive controls on the synthetic world:
features made of each token's true 3-D position beat copying the first frame on both tasks (the
probe can see), and the ``pixels`` encoder does on masks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.fit import predict
from bench.propagation import PropagationReadout, context_chunks, radius_mask
from bench.task import FeatureSpec
from tasks.keypoint_propagation import KeypointPropagation, pck_counts
from tasks.mask_propagation import MaskPropagation, boundary_f, clip_scores, region_iou

REPO = Path(__file__).resolve().parents[1]
SPEC = FeatureSpec(grid=(4, 4, 4), dim=8, clip=(8, 32, 32))


# --------------------------------------------------------------------------------------- J&F

def half_plane(column: int, size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[:, :column] = True
    return mask


@pytest.mark.parametrize("shift, f", [(0, 1.0), (1, 1.0), (2, 0.0), (5, 0.0)])
def test_boundary_shifted_by_known_pixels(shift, f):
    # 64×64: tolerance ceil(0.008 · 90.5) = 1 px; the boundary is one column, moved by `shift`
    gt, pred = half_plane(20), half_plane(20 + shift)
    assert boundary_f(gt, pred) == f
    assert region_iou(gt[None], pred[None])[0] == pytest.approx(20 / (20 + shift))
    assert boundary_f(gt, pred, bound_th=shift) == 1.0  # a tolerance in pixels (≥ 1)


def test_mask_with_a_hole():
    ring = np.zeros((64, 64), bool)
    ring[10:30, 10:30] = True
    filled = ring.copy()
    ring[15:25, 15:25] = False
    # boundary pixels: outer square 21² ring = 80, hole 11² ring = 40; the filled prediction finds the
    # outer one only: precision 1, recall 80/120, F = 2·(2/3)/(1 + 2/3) = 0.8; J = 300/400
    assert boundary_f(ring, filled) == pytest.approx(0.8)
    assert region_iou(ring[None], filled[None])[0] == pytest.approx(0.75)


def test_object_absent_in_some_frames_and_first_last_frame_excluded():
    gt = np.zeros((5, 64, 64), np.uint8)
    gt[:, 10:30, 10:30] = 1
    gt[2] = 0  # object 1 leaves the view in frame 2
    pred = gt.copy()
    pred[3] = 0  # ... and the prediction loses it in frame 3
    pred[0] = pred[4] = 0  # the first and last frames are not scored
    j, f = clip_scores(gt, pred)
    assert j.tolist() == pytest.approx([2 / 3]) and f.tolist() == pytest.approx([2 / 3])  # frames 1, 2, 3: 1, 1, 0
    pred[2, 0:5, 0:5] = 1  # predicted while absent: that frame scores 0
    assert clip_scores(gt, pred)[0].tolist() == pytest.approx([1 / 3])


def test_j_and_f_pools_objects_and_per_clip_reproduces_it():
    task = MaskPropagation(FeatureSpec(grid=(2, 4, 4), dim=8, clip=(4, 64, 64)))
    gt = np.zeros((2, 4, 64, 64), np.uint8)
    gt[0, :, :, :20] = 1
    gt[0, :, :, 40:] = 2
    gt[1, :, 5:25, 5:25] = 3
    pred = gt.copy()
    pred[0, 1:, :, :22] = np.where(pred[0, 1:, :, :22] == 0, 1, pred[0, 1:, :, :22])  # object 1 grows 2 columns
    metrics = task.metrics({"segmentation": pred}, {"segmentation": gt})
    j = np.array([20 / 22, 1.0, 1.0])
    f = np.array([0.0, 1.0, 1.0])
    assert metrics["j_mean"] == pytest.approx(j.mean()) and metrics["f_mean"] == pytest.approx(f.mean())
    assert metrics["j_and_f"] == pytest.approx((j.mean() + f.mean()) / 2)
    values, weights = task.per_clip({"segmentation": pred}, {"segmentation": gt})
    assert weights.tolist() == [2, 1]
    assert np.sum(values * weights) / weights.sum() == pytest.approx(metrics["j_and_f"])


# --------------------------------------------------------------------------------------- PCK

def test_pck_hand_case():
    # 3 keypoints, 3 frames; box of frame 1 and 2: (0, 0)–(30, 40), diagonal 50, normaliser 0.6·50 = 30
    gt = np.zeros((1, 3, 3, 2))
    gt[0, :, :] = np.array([[0, 0], [30, 40], [30, 0]])[:, None]
    occ = np.zeros((1, 3, 3), bool)
    occ[0, 2, 2] = True  # keypoint 2 hidden in frame 2: not scored
    pred = gt.copy()
    pred[0, 0, 1] += [3, 0]  # 3 px = 0.1 · 30: correct at α = 0.1 (≤)
    pred[0, 1, 1] += [0, 3.5]  # wrong at 0.1, right at 0.2
    pred[0, 1, 2] = np.nan  # no prediction: wrong
    for alpha, right in ((0.1, 3), (0.2, 4)):
        correct, scored = pck_counts(pred, gt, occ, (64, 64), alpha)
        assert scored.tolist() == [5] and correct.tolist() == [right]
    occ[0, 0, 0] = True  # keypoint 0 not visible in the first frame: not a keypoint, and frame 2,
    # left with keypoint 1 alone, has a zero-size box: not scored
    assert pck_counts(pred, gt, occ, (64, 64), 0.1)[1].tolist() == [2]


def test_keypoint_heatmaps_decode_back_to_the_keypoints():
    task = KeypointPropagation(SPEC)
    points = np.zeros((1, 2, 8, 2), np.float32)
    points[0, 0], points[0, 1] = [12.0, 20.0], [3.0, 29.0]
    batch = {"target_points": torch.from_numpy(points), "occluded": torch.zeros(1, 2, 8, dtype=torch.bool)}
    seed = task.seed_labels(batch)
    tracks = task.decode(seed.repeat(1, 4, 1), batch)["tracks"].numpy()
    np.testing.assert_allclose(tracks, points, atol=2.0)  # top-5 soft-argmax, 8-px tokens: biased inward at edges


# --------------------------------------------------------------------------------------- propagation

def seg_batch(clips: int = 2) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    seg = np.repeat(rng.integers(0, 3, (clips, 1, 4, 4)), 8, axis=2).repeat(8, axis=3)  # one id per token
    return {"segmentation": torch.from_numpy(np.repeat(seg, 8, axis=1).astype(np.uint8))}


def test_identical_features_copy_labels_exactly():
    task = MaskPropagation(SPEC)
    feats = torch.randn(2, 1, 16, 8).expand(-1, 4, -1, -1)  # the same chunk four times
    batch = seg_batch()
    out = PropagationReadout.from_task(task, 8)(feats, batch)
    np.testing.assert_allclose(out.view(2, 4, 16, -1), task.seed_labels(batch)[:, None].expand(-1, 4, -1, -1), atol=1e-6)
    copied = task.decode(task.seed_labels(batch).repeat(1, 4, 1), batch)["segmentation"]
    np.testing.assert_array_equal(task.decode(out, batch)["segmentation"], copied)


def test_topk_and_radius_are_respected():
    assert radius_mask((4, 4), 1.5).sum(1).tolist()[:2] == [4, 6]  # a corner and an edge token, Euclidean < 1.5
    assert context_chunks(1, 2) == [0, 0, 0] and context_chunks(5, 2) == [0, 3, 4]
    task = MaskPropagation(FeatureSpec(grid=(2, 4, 4), dim=8, clip=(4, 32, 32)))
    readout = PropagationReadout.from_task(task, 8, topk=1, radius=1.0, reference_grid=None, context=1)
    feats = torch.zeros(1, 2, 16, 8)
    feats[0, :, :, 0] = 1.0
    feats[0, 0, 15, :] = torch.tensor([1.0, 1, 0, 0, 0, 0, 0, 0])  # the best match of every target token...
    feats[0, 1, :, :2] = 1.0  # ... is token 15: allowed in the first chunk, out of radius in its copy
    labels = torch.eye(16)[None]
    out = readout.step(feats[:, 1], feats[:, [0]], labels[:, None], torch.tensor([1]))  # chunk 0 and a copy
    assert (out.argmax(-1) == 15).all() and torch.allclose(out.sum(-1), torch.ones(1, 16))
    readout = PropagationReadout.from_task(task, 8, topk=3)
    assert readout.step(feats[:, 1], feats[:, [0]], labels[:, None], torch.tensor([0])).gt(0).sum(-1).max() <= 3


def propagate_with_copies(readout: PropagationReadout, feats: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """The protocol as CRW and RVM run it: every context slot a tensor of its own (chunk 0 repeated)."""
    feats, labels = F.normalize(feats, dim=-1), [seed]
    for t in range(1, feats.shape[1]):
        ctx = context_chunks(t, readout.context)
        aff = torch.einsum("bqc,bsnc->bqsn", feats[:, t], feats[:, ctx]) / readout.temperature
        allowed = torch.ones_like(aff, dtype=torch.bool)
        allowed[:, :, 1:] = readout.near[None, :, None]
        values, index = aff.masked_fill(~allowed, float("-inf")).flatten(2).topk(readout.topk, dim=-1)
        flat = torch.stack([labels[c] for c in ctx], 1).flatten(1, 2)
        picked = torch.gather(flat, 1, index.flatten(1)[..., None].expand(-1, -1, flat.shape[-1]))
        labels.append(torch.einsum("bqk,bqkl->bql", values.softmax(-1), picked.view(*index.shape, -1)))
    return torch.cat(labels, 1)


@pytest.mark.parametrize("context, topk, radius", [(20, 7, 20.0), (2, 5, 12.0), (3, 1, None), (20, 40, 30.0)])
def test_counted_copies_of_the_first_chunk_equal_the_repeated_ones(context, topk, radius):
    """The readout counts chunk 0's copies instead of repeating them: the same labels."""
    task = MaskPropagation(FeatureSpec(grid=(6, 8, 8), dim=16, clip=(12, 64, 64)))
    readout = PropagationReadout.from_task(task, 16, context=context, topk=topk, radius=radius, temperature=0.1)
    feats = torch.randn(2, 6, 64, 16)
    feats[:, 1:] += 3 * feats[:, :1]  # later chunks resemble the first: its copies win many slots
    seed = torch.rand(2, 64, 3).softmax(-1)
    batch = {"segmentation": torch.zeros(2, 12, 64, 64, dtype=torch.uint8)}
    task.seed_labels = lambda _: seed
    torch.testing.assert_close(readout(feats, batch), propagate_with_copies(readout, feats, seed), atol=1e-5, rtol=1e-5)


def test_readout_has_no_parameters_and_refuses_other_tasks():
    task = MaskPropagation(SPEC)
    assert list(PropagationReadout.from_task(task, 8).parameters()) == []
    from tasks.depth import Depth

    with pytest.raises(ValueError, match="needs a label-propagation task"):
        PropagationReadout.from_task(Depth(SPEC), 8)
    with pytest.raises(ValueError, match="use readout=propagation"):
        MaskPropagation(SPEC, readout="attentive")


def test_blind_copies_the_first_frame():
    seg = seg_batch()["segmentation"].numpy().copy()
    seg[:, 3:] = 0
    blind = MaskPropagation(SPEC).blind({"segmentation": seg})["segmentation"]
    assert (blind == seg[:, :1]).all() and blind.shape == seg.shape
    points = np.random.default_rng(0).uniform(0, 32, (2, 5, 8, 2)).astype(np.float32)
    tracks = KeypointPropagation(SPEC).blind({"target_points": points, "occluded": np.zeros((2, 5, 8), bool)})["tracks"]
    assert (tracks == points[:, :, :1]).all() and tracks.shape == points.shape


# --------------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("task, primary", [("mask_propagation", "j_and_f"), ("keypoint_propagation", "pck_0.1")])
def test_bench_run_writes_a_record(tmp_path, task, primary):
    args = [sys.executable, "-m", "bench.run", f"task={task}", "readout=propagation", "model=random_t",
            "data.train_size=2", "data.test_size=4", "data.num_frames=4", "data.resolution=32", "visualize=false",
            f"paths.cache={tmp_path / 'cache'}", f"paths.results={tmp_path / 'results'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'out'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "results" / f"{task}__synthetic__random_t__propagation__seed0.json").read_text())
    assert record["primary_metric"] == primary and np.isfinite(record["metrics"][primary])
    assert record["loss_tail"] == [] and len(record["per_clip"]["values"]) == 4
    proc = subprocess.run(args[:4] + ["readout=attentive"] + args[5:], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2 and "use readout=propagation" in proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pixel_world(tmp_path_factory):
    """The test split of a small 16×128×128 world (8×16×16 tokens) and its ``pixels`` features."""
    from bench.data.world import SyntheticWorld
    from bench.features import cached_features
    from bench.models import build_encoder

    cache = tmp_path_factory.mktemp("prop")
    world = SyntheticWorld(split="test", root=cache, train_size=1, test_size=16, resolution=128)
    model, meta = build_encoder("pixels", cache, img_size=128, num_frames=16)
    feats = cached_features(model, meta["sha256"], world, cache, batch_size=8)
    spec = FeatureSpec(grid=model.grid_for(16, 128, 128), dim=model.cfg.embed_dim, clip=(16, 128, 128))
    return world, feats, spec


def geometry_features(world, clips: slice, channels: int = 96, bandwidth: float = 4.0) -> torch.Tensor:
    """Features that hold the correspondence: per pixel, random Fourier features of its world
    position (from depth and camera: a scene point keeps its code while the camera moves) and its
    object's one-hot id, averaged over each 2×8×8 tubelet: [B, T', h·w, 2·channels + ids]."""
    a = {k: torch.from_numpy(np.array(v[clips])) for k, v in
         world.arrays(["depth", "intrinsics", "cam_to_world", "segmentation"]).items()}
    b, t, h, w = a["depth"].shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    k = a["intrinsics"][:, None, :, :, None, None]
    cam = torch.stack([(xs - k[:, :, 0, 2]) / k[:, :, 0, 0], (ys - k[:, :, 1, 2]) / k[:, :, 1, 1],
                       torch.ones(b, 1, h, w)], -1) * a["depth"][..., None]
    pose = a["cam_to_world"][:, :, None, None]
    xyz = (pose[..., :3, :3] @ cam[..., None])[..., 0] + pose[..., :3, 3]
    z = xyz @ (torch.randn(3, channels, generator=torch.Generator().manual_seed(0)) * bandwidth)
    ids = F.one_hot(a["segmentation"].long(), world.cfg.max_objects + 1).float() * 3
    f = torch.cat([z.sin(), z.cos(), ids], -1).view(b, t // 2, 2, h // 8, 8, w // 8, 8, -1).mean((2, 4, 6))
    return f.reshape(b, t // 2, (h // 8) * (w // 8), -1)


@pytest.mark.parametrize("cls, keys", [(MaskPropagation, ["segmentation"]),
                                       (KeypointPropagation, ["target_points", "occluded"])])
def test_positive_control_true_geometry_beats_copying_the_first_frame(pixel_world, cls, keys):
    """With features that hold each point's identity, the probe at its published defaults must
    beat the input-blind answer by a wide margin (on 128 clips: J&F 0.670 against 0.478, PCK@0.1
    0.821 against 0.660, docs/propagation.md), or it cannot rank representations."""
    world, _, spec = pixel_world
    task = cls(spec)
    target = {k: np.asarray(v) for k, v in world.arrays(keys).items()}
    pred = predict(PropagationReadout.from_task(task, 1), task, geometry_features(world, slice(None)).numpy(), target, 8)
    score = task.metrics(pred, target)[task.primary_metric]
    blind = task.metrics(task.blind(target), target)[task.primary_metric]
    assert score > blind + 0.08, (cls.name, score, blind)


@pytest.mark.parametrize("cls, keys", [
    (MaskPropagation, ["segmentation"]),
    pytest.param(KeypointPropagation, ["target_points", "occluded"], marks=pytest.mark.xfail(
        strict=True, reason="measured: pixels PCK@0.1 0.668 < copying 0.684 on these 16 clips (0.646 > 0.625 on "
                            "32): keypoint propagation on the world does not yet clear its blind reference"))])
def test_positive_control_pixels_beat_copying_the_first_frame(pixel_world, cls, keys):
    """Features holding the answer must beat the input-blind answer, or the probe ranks nothing.
    At this grid the published top-7 mixes too many tokens for keypoints; top-1 is the control."""
    world, feats, spec = pixel_world
    task = cls(spec)
    target = {k: np.asarray(v) for k, v in world.arrays(keys).items()}
    pred = predict(PropagationReadout.from_task(task, spec.dim, topk=1), task, feats, target, 8)
    score = task.metrics(pred, target)[task.primary_metric]
    blind = task.metrics(task.blind(target), target)[task.primary_metric]
    assert score > blind, (cls.name, score, blind)
