"""Reference rows and the numbers a record keeps to be trusted: the input-blind answers, the
``pixels`` encoder, per-clip values that reproduce each task's primary metric, fit flags."""
import numpy as np
import pytest
import torch

from bench.data.world import SyntheticWorld, WorldConfig
from bench.fit import fit_flags, loss_tail
from bench.models.pixels import PixelEncoder
from bench.models.vit import normalize_video
from bench.models import build_encoder
from bench.registry import resolve_model
from bench.registry import TASKS
from bench.task import FeatureSpec
from tasks.depth import position_prior

TASK_NAMES = ["depth", "point_tracking", "box_tracking", "camera_pose", "action"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(train_size=12, test_size=6, num_frames=4, resolution=32, workers=1)
    train, test = (SyntheticWorld(cfg, split=s, root=root) for s in ("train", "test"))
    return train, test


def make_task(name, train):
    spec = FeatureSpec(grid=PixelEncoder().grid_for(4, 32, 32), dim=8, clip=(4, 32, 32))
    return TASKS.get(name)(spec, meta=train.meta)


def split_arrays(task, ds):
    return {k: np.asarray(v) for k, v in ds.arrays([k for k in task.requires if k != "video"]).items()}


def perturbed(pred, rng):
    """Predictions moved off the blind answer, so per-clip values differ between clips."""
    return {k: (v + rng.normal(0, 1.5, v.shape).astype(v.dtype) if v.dtype.kind == "f" else v) for k, v in pred.items()}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_per_clip_values_reproduce_the_primary_metric(world, name):
    train, test = world
    task = make_task(name, train)
    tr, te = split_arrays(task, train), split_arrays(task, test)
    task.prepare(tr)
    for pred in (task.blind(te), perturbed(task.blind(te), np.random.default_rng(0))):
        values, weights = task.per_clip(pred, te)
        assert values.shape == weights.shape == (len(test),)
        assert (weights >= 0).all() and weights.sum() > 0
        pooled = np.sum(values * weights) / np.sum(weights)
        assert pooled == pytest.approx(task.metrics(pred, te)[task.primary_metric], rel=1e-9)


def test_blind_answers_are_the_documented_references(world):
    train, test = world
    tasks = {n: make_task(n, train) for n in TASK_NAMES}
    arrays = {n: (split_arrays(t, train), split_arrays(t, test)) for n, t in tasks.items()}
    for name, task in tasks.items():
        task.prepare(arrays[name][0])

    tr, te = arrays["depth"]
    np.testing.assert_array_equal(tasks["depth"].blind(te)["depth"][3], position_prior(tr["depth"]))

    tr, te = arrays["point_tracking"]
    pred = tasks["point_tracking"].blind(te)
    query = pred["query_points"]  # (t, y, x): a static tracker stays on the query point, always visible
    np.testing.assert_allclose(pred["tracks"], np.broadcast_to(query[..., None, [2, 1]], pred["tracks"].shape),
                               atol=1e-4)
    assert not pred["occluded"].any()

    tr, te = arrays["box_tracking"]
    boxes = tasks["box_tracking"].blind(te)["boxes"]
    first = te["boxes"][:, :, :1]
    valid = te["box_valid"][:, :, 0]
    np.testing.assert_allclose(boxes[valid], np.broadcast_to(first, boxes.shape)[valid], atol=1e-3)

    tr, te = arrays["camera_pose"]
    pose = tasks["camera_pose"].blind(te)["pose"]
    np.testing.assert_allclose(pose, np.tile(np.r_[np.eye(3).ravel(), np.zeros(3)], (len(test), 1)), atol=1e-6)

    tr, te = arrays["action"]
    pred = tasks["action"].blind(te)
    majority = np.bincount(tr["label"].reshape(-1)).argmax()
    assert (pred["label"] == majority).all()
    assert tasks["action"].metrics(pred, te)["top1"] == pytest.approx(np.mean(te["label"].reshape(-1) == majority))


def test_pixels_encoder_is_raw_tubelets_plus_a_fixed_position_code():
    video = torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8)
    model, meta = build_encoder("pixels", patch_size=(2, 8, 8))
    feats = model(normalize_video(video))
    assert feats.shape == (2, 2, 4, 2 * 8 * 8 * 3 + 64) and model.cfg.embed_dim == feats.shape[-1]
    x = normalize_video(video)
    # token (t=1, y=0, x=1) holds frames 2-3, rows 0-7, columns 8-15, channel-last within a pixel
    expected = x[0, :, 2:4, 0:8, 8:16].permute(1, 2, 3, 0).reshape(-1)
    torch.testing.assert_close(feats[0, 1, 1, :384], expected)
    torch.testing.assert_close(feats[0, :, :, 384:], feats[1, :, :, 384:])  # the code depends on position only
    assert not torch.allclose(feats[0, 0, 0, 384:], feats[0, 0, 1, 384:])
    assert meta["sha256"].startswith("pixels-")


def test_reference_rows_are_named():
    assert [resolve_model(n).reference for n in ("blind", "pixels", "random_t", "supervised_s", "mae_t", "vjepa_l")] == \
        ["blind", "pixels", "random", "supervised", None, None]


def test_loss_tail_and_fit_flags_on_hand_made_curves():
    assert loss_tail([4.0, 2.0, 1.0, 1.0], parts=2) == [3.0, 1.0]
    assert loss_tail([], parts=10) == [] and loss_tail([2.0], parts=10) == [2.0]
    assert fit_flags([1.0, 0.5], 0.3, 0.3, higher_is_better=False) == ["loss_still_falling"]
    assert fit_flags([1.0, 0.995], 0.3, 0.3, higher_is_better=False) == []
    assert fit_flags([1.0, 1.0], 1.0, 0.3, higher_is_better=True) == ["train_test_gap"]   # action memorised
    assert fit_flags([1.0, 1.0], 0.2, 0.36, higher_is_better=False) == ["train_test_gap"]  # AbsRel 0.20 vs 0.36
    assert fit_flags([1.0, 1.0], 0.33, 0.36, higher_is_better=False) == []
