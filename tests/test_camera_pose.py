"""Relative-pose metrics against hand-computed cases; target convention; readouts + ridge fast path."""
import numpy as np
import pytest
import torch

from bench.fit import fit, fit_closed_form, predict
from bench.readouts import build_readout
from bench.task import FeatureSpec
from tasks.camera_pose import (IDENTITY12, CameraPose, camera_pose_metrics, direction_error_deg, pose_auc,
                               pose_to_12, project_to_so3, relative_pose, rotation_error_deg)

FIRST_TO_LAST = ("rot_err_deg_median", "rot_err_deg_mean", "trans_err_median", "trans_err_mean")


def first_to_last(metrics):
    """The metrics reported before the scale-invariant ones."""
    return {k: metrics[k] for k in FIRST_TO_LAST}


def rot_z(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def rot_x(deg):
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def pose(r, t):
    p = np.eye(4)
    p[:3, :3], p[:3, 3] = r, t
    return p


def test_identity_and_known_rotations():
    assert rotation_error_deg(np.eye(3), np.eye(3)) == pytest.approx(0.0)
    assert rotation_error_deg(rot_z(90), np.eye(3)) == pytest.approx(90.0)
    assert rotation_error_deg(rot_x(30), rot_x(-60)) == pytest.approx(90.0)
    assert rotation_error_deg(rot_z(180), np.eye(3)) == pytest.approx(180.0)
    gt = np.stack([pose_to_12(pose(np.eye(3), [0, 0, 0])), pose_to_12(pose(np.eye(3), [1, 0, 0]))])
    pred = np.stack([pose_to_12(pose(rot_z(90), [3, 4, 0])), pose_to_12(pose(np.eye(3), [1, 0, 0]))])
    m = camera_pose_metrics(pred, gt)
    assert m["rot_err_deg_mean"] == pytest.approx(45.0) and m["rot_err_deg_median"] == pytest.approx(45.0)
    assert m["trans_err_mean"] == pytest.approx(2.5) and m["trans_err_median"] == pytest.approx(2.5)
    assert first_to_last(camera_pose_metrics(gt, gt)) == {"rot_err_deg_median": 0.0, "rot_err_deg_mean": 0.0,
                                                          "trans_err_median": 0.0, "trans_err_mean": 0.0}
    # three clips, errors 0°, 0°, 90° and 0, 0, 3: median and mean differ
    gt3 = np.stack([pose_to_12(np.eye(4))] * 3)
    pred3 = np.stack([pose_to_12(np.eye(4)), pose_to_12(np.eye(4)), pose_to_12(pose(rot_x(90), [0, 3, 0]))])
    assert first_to_last(camera_pose_metrics(pred3, gt3)) == {
        "rot_err_deg_median": 0.0, "rot_err_deg_mean": pytest.approx(30.0),
        "trans_err_median": 0.0, "trans_err_mean": pytest.approx(1.0)}
    assert CameraPose.primary_metric == "rot_err_deg_mean" and not CameraPose.higher_is_better


def test_translation_direction_error_is_scale_invariant():
    t = np.array([1.0, -2.0, 0.5])
    assert direction_error_deg(3.7 * t, t) == pytest.approx(0.0, abs=1e-6)  # any positive scale
    assert direction_error_deg(np.array([0.0, 0.0, 2.0]), np.array([5.0, 0.0, 0.0])) == pytest.approx(90.0)
    assert direction_error_deg(-t, t) == pytest.approx(180.0)  # the sign counts (PoseDiffusion folds it)
    assert direction_error_deg(np.zeros(3), t) == pytest.approx(90.0)  # no direction: 90°
    np.testing.assert_allclose(direction_error_deg(np.array([[1.0, 1, 0], [0, 1, 0]]), np.array([[1.0, 0, 0]] * 2)),
                               [45.0, 90.0])


def test_auc30_hand_computed():
    """Errors 0.5°, 10.5°, 29.5°, 45° against τ = 1..30: 0.5 is under all 30 thresholds, 10.5 under
    τ = 11..30 (20), 29.5 under τ = 30 (1), 45 under none -> (30 + 20 + 1 + 0) / (4·30)."""
    assert pose_auc(np.array([0.5, 10.5, 29.5, 45.0])) == pytest.approx(51 / 120)
    assert pose_auc(np.zeros(3)) == 1.0 and pose_auc(np.full(2, 30.0)) == 0.0
    assert pose_auc(np.array([1.0])) == pytest.approx(29 / 30)  # 1° is not under τ = 1


def test_auc30_takes_the_worse_of_rotation_and_direction():
    """Clip 1: rotation 0°, direction 20.5° -> pair error 20.5° (under τ = 21..30: 10/30). Clip 2:
    rotation 5.5°, translation only scaled -> 5.5° (under τ = 6..30: 25/30). AUC = (10 + 25) / 60."""
    a = np.radians(20.5)
    gt = np.stack([pose_to_12(pose(np.eye(3), [1, 0, 0])), pose_to_12(pose(np.eye(3), [0, 0, 1]))])
    pred = np.stack([pose_to_12(pose(np.eye(3), [np.cos(a), np.sin(a), 0])), pose_to_12(pose(rot_z(5.5), [0, 0, 9]))])
    m = camera_pose_metrics(pred, gt)
    assert m["trans_dir_err_deg_mean"] == pytest.approx(10.25) and m["auc30"] == pytest.approx(35 / 60)
    directions = CameraPose(SPEC).directions()
    assert directions["auc30"] and not directions["trans_dir_err_deg_mean"] and set(directions) == set(m)


def test_svd_projection():
    r = rot_z(40) @ rot_x(25)
    np.testing.assert_allclose(project_to_so3(3.0 * r), r, atol=1e-12)  # scale removed
    noisy = r + np.random.default_rng(0).normal(0, 0.05, (3, 3))
    p = project_to_so3(noisy)
    np.testing.assert_allclose(p @ p.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(p) == pytest.approx(1.0)
    reflected = project_to_so3(np.diag([1.0, 1.0, -1.0]))  # a reflection maps to a proper rotation
    assert np.linalg.det(reflected) == pytest.approx(1.0)
    # the all-zero output of an untrained readout still gives a finite error
    assert np.isfinite(camera_pose_metrics(np.zeros((1, 12)), IDENTITY12[None])["rot_err_deg_mean"])


def test_relative_pose_convention():
    first = pose(rot_z(30), [1, 2, 3])
    delta = pose(rot_x(90), [0, 0, 2])  # the camera turns 90° about its x axis and moves 2 forward
    c2w = np.stack([first, first @ pose(np.eye(3), [0, 0, 1]), first @ delta])
    np.testing.assert_allclose(relative_pose(c2w), delta, atol=1e-12)
    torch.testing.assert_close(relative_pose(torch.from_numpy(c2w)), torch.from_numpy(delta))
    assert pose_to_12(delta).tolist() == rot_x(90).reshape(-1).tolist() + [0, 0, 2]


SPEC = FeatureSpec(grid=(2, 4, 4), dim=16, clip=(4, 32, 32))


def synthetic(n=64, seed=0):
    """Features whose mean over tokens carries the yaw of the last camera (linear in the target)."""
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-30, 30, n)
    feats = rng.normal(0, 1, (n, 2, 16, 16)).astype(np.float32)
    feats[:, :, :, 0] += (yaw / 10)[:, None, None]
    c2w = np.stack([np.stack([np.eye(4), np.eye(4), pose(rot_z(y), [0, 0, y / 30])]) for y in yaw])
    return feats, {"cam_to_world": c2w.astype(np.float32)}


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_readout_shapes_and_zero_output(kind):
    task = CameraPose(SPEC, readout=kind)
    ro = build_readout(kind, task, 16, num_heads=4)
    feats, targets = synthetic(4)
    batch = {"features": torch.from_numpy(feats), "cam_to_world": torch.from_numpy(targets["cam_to_world"])}
    out = ro(batch["features"], batch)
    assert out.shape == (4, 1, 12)
    assert not out.any()  # zero-initialised output layers: training starts from the no-change prediction
    assert torch.isfinite(task.loss(out, batch))
    assert task.decode(out, batch)["pose"].shape == (4, 12)
    np.testing.assert_allclose(task.decode(torch.zeros(1, 1, 12), {})["pose"].numpy(), IDENTITY12[None])


def test_closed_form_ridge_matches_sgd_shapes_and_learns():
    feats, targets = synthetic(96)
    test_feats, test_targets = synthetic(32, seed=1)
    task = CameraPose(SPEC, readout="linear")
    scores = {}
    for solver in ("closed_form", "sgd"):
        torch.manual_seed(0)
        ro = build_readout("linear", task, 16)
        if solver == "closed_form":
            fit_closed_form(ro, task, feats, targets, alpha=1e-3)
        else:
            fit(ro, task, feats, targets, epochs=30, batch_size=16, lr=3e-3, weight_decay=0.0, seed=0)
        pred = predict(ro, task, test_feats, test_targets, batch_size=8)
        assert pred["pose"].shape == (32, 12)
        scores[solver] = task.metrics(pred, test_targets)
    baseline = task.metrics({"pose": np.tile(IDENTITY12, (32, 1))}, test_targets)["rot_err_deg_mean"]
    assert scores["closed_form"]["rot_err_deg_mean"] < 0.3 * baseline
    assert scores["closed_form"]["rot_err_deg_mean"] <= scores["sgd"]["rot_err_deg_mean"] + 1.0


def test_closed_form_refuses_a_readout_it_cannot_fit():
    task = CameraPose(SPEC, readout="attentive")
    feats, targets = synthetic(8)
    with pytest.raises(ValueError, match="LinearReadout"):
        fit_closed_form(build_readout("attentive", task, 16, num_heads=4), task, feats, targets)


def test_visualize_writes_a_png(tmp_path):
    task = CameraPose(SPEC)
    _, targets = synthetic(5)
    pred = {"pose": pose_to_12(relative_pose(targets["cam_to_world"])) + 0.01}
    (path,) = task.visualize(pred, targets, tmp_path)
    assert path.endswith("camera_pose.png") and (tmp_path / "camera_pose.png").stat().st_size > 0
