"""Camera pose (4DS readout): the relative pose of the last frame's camera w.r.t. the first.

Target: P = inv(cam_to_world[0]) @ cam_to_world[T-1], the 4×4 camera-from-camera transform that
maps points in the last camera's coordinates to the first camera's coordinates (OpenCV axes);
its rotation's columns are the last camera's axes and its translation the last camera's centre,
both expressed in the first camera's frame. One learned query predicts 12 numbers: the 3×3
rotation (row-major) and the translation, as the deviation from the identity pose (a zero
output means "the camera did not move"). Evaluation projects the rotation to SO(3) by SVD.

The primary metric is the *mean* rotation error: in the synthetic world 8 of the 12 action classes
barely rotate the camera (object motions, dolly), so the median is set by handheld drift (the
identity prediction scores ~1.7° median, ~14° mean on the default test split) and cannot tell a
readout that recovers pans and orbits from one that does not.

For sequences of arbitrary scale (RealEstate10K) two scale-invariant metrics are reported beside
these: the translation-direction error (angle between t̂ and t) and AUC@30 as PoseDiffusion
(Wang et al. ICCV 2023, ``calculate_auc_np`` in ``pose_diffusion/util/metric.py``) defines it,
extending RelPose++'s pairwise relative-rotation accuracy. Those evaluations score all pairs of a
sequence's frames; this task predicts one relative pose per clip, so each clip is one pair, (first, last).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import DatasetError
from bench.readouts import LearnedQueries
from bench.registry import TASKS
from bench.task import FeatureSpec, Task

IDENTITY12 = np.concatenate([np.eye(3).reshape(-1), np.zeros(3)]).astype(np.float32)


def relative_pose(cam_to_world: np.ndarray | torch.Tensor):
    """[..., T, 4, 4] camera-to-world poses -> [..., 4, 4] inv(P_0) @ P_{T-1} (numpy or torch)."""
    if isinstance(cam_to_world, torch.Tensor):
        c2w = cam_to_world.double()
        return torch.linalg.inv(c2w[..., 0, :, :]) @ c2w[..., -1, :, :]
    c2w = np.asarray(cam_to_world, np.float64)
    return np.linalg.inv(c2w[..., 0, :, :]) @ c2w[..., -1, :, :]


def pose_to_12(pose):
    """[..., 4, 4] -> [..., 12]: rotation row-major, then translation."""
    lib = torch if isinstance(pose, torch.Tensor) else np
    return lib.concatenate([pose[..., :3, :3].reshape(*pose.shape[:-2], 9), pose[..., :3, 3]], -1)


def project_to_so3(m: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius norm) to each 3×3 matrix [..., 3, 3]: U diag(1, 1, det(UVᵀ)) Vᵀ."""
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    return u @ (np.concatenate([np.ones(d.shape + (2,)), d[..., None]], -1)[..., None] * vt)


def rotation_error_deg(r_pred: np.ndarray, r_gt: np.ndarray) -> np.ndarray:
    """Geodesic angle of R̂ᵀR in degrees: arccos((tr(R̂ᵀR) − 1) / 2), [..., 3, 3] -> [...]."""
    tr = np.einsum("...ij,...ij->...", np.asarray(r_pred, np.float64), np.asarray(r_gt, np.float64))
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))


def direction_error_deg(t_pred: np.ndarray, t_gt: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Angle between translation vectors [..., 3] -> [...] in degrees (0–180), blind to their
    lengths; a zero vector has no direction and scores 90°, as with PoseDiffusion's eps. Unlike
    PoseDiffusion's acos(|cos|) (≤ 90°, for essential-matrix methods), the sign counts here."""
    unit = [t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), eps) for t in (t_pred, t_gt)]
    return np.degrees(np.arccos(np.clip(np.sum(unit[0] * unit[1], -1), -1.0, 1.0)))


def pose_auc(errors_deg: np.ndarray, max_deg: int = 30) -> float:
    """AUC@max_deg of pair errors (each max(rotation, translation-direction) error): the mean over
    thresholds τ = 1, 2, …, max_deg degrees of the fraction of pairs with error < τ, as PoseDiffusion's
    ``calculate_auc_np`` (its cumulative 1°-bin histogram; it also counts an error of exactly 30°)."""
    return float(np.mean(np.asarray(errors_deg)[:, None] < np.arange(1, max_deg + 1)))


def summary(name: str, errors: np.ndarray) -> dict[str, float]:
    """``{name}_median`` and ``{name}_mean`` of per-clip errors."""
    return {f"{name}_median": float(np.median(errors)), f"{name}_mean": float(np.mean(errors))}


def camera_pose_metrics(pred12: np.ndarray, gt12: np.ndarray) -> dict[str, float]:
    """Relative-pose errors over clips, median and mean: rotation geodesic error (degrees) after
    projecting the predicted 3×3 to SO(3), translation error ‖t̂ − t‖₂ (scene units) and the
    scale-invariant translation-direction error (degrees); and AUC@30 of max(rotation, direction)
    error. pred12, gt12 [B, 12] as ``pose_to_12``."""
    pred12, gt12 = np.asarray(pred12, np.float64), np.asarray(gt12, np.float64)
    if len(gt12) == 0:
        raise DatasetError("camera pose: no clip to evaluate")
    rot = rotation_error_deg(project_to_so3(pred12[:, :9].reshape(-1, 3, 3)), gt12[:, :9].reshape(-1, 3, 3))
    trans = np.linalg.norm(pred12[:, 9:] - gt12[:, 9:], axis=-1)
    direction = direction_error_deg(pred12[:, 9:], gt12[:, 9:])
    return {**summary("rot_err_deg", rot), **summary("trans_err", trans), **summary("trans_dir_err_deg", direction),
            "auc30": pose_auc(np.maximum(rot, direction))}


@TASKS.register()
class CameraPose(Task):
    name = "camera_pose"
    requires = ("video", "cam_to_world")
    metric_directions = {"rot_err_deg_mean": False, "rot_err_deg_median": False, "trans_err_mean": False,
                         "trans_err_median": False, "trans_dir_err_deg_mean": False,
                         "trans_dir_err_deg_median": False, "auc30": True}
    clip_level = True
    query_conditioned = False
    closed_form = "ridge"
    zero_init_head = True

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", **cfg: Any):
        super().__init__(spec, readout, **cfg)

    def queries(self, dim: int) -> nn.Module:
        return LearnedQueries(1, dim)

    @property
    def output_dim(self) -> int:
        return 12

    def _pose12(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, 0] + torch.as_tensor(IDENTITY12, device=out.device)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error on the 12-D pose (rotation entries + translation)."""
        target = pose_to_12(relative_pose(batch["cam_to_world"])).to(out.dtype)
        return F.mse_loss(self._pose12(out), target)

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pose": self._pose12(out)}

    def closed_form_targets(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        return pose_to_12(relative_pose(targets["cam_to_world"])) - IDENTITY12

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        return camera_pose_metrics(pred["pose"], pose_to_12(relative_pose(target["cam_to_world"])))

    def visualize(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], out_dir: Path) -> list[str]:
        """Left: each clip's camera trajectory (top view, x–z, in the first camera's frame) with the
        predicted and true last-camera positions. Right: histogram of rotation errors."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        c2w = np.asarray(target["cam_to_world"], np.float64)
        traj = np.linalg.inv(c2w[:, :1]) @ c2w  # [B, T, 4, 4] in the first camera's frame
        gt12 = pose_to_12(relative_pose(c2w))
        rot = rotation_error_deg(project_to_so3(np.asarray(pred["pose"])[:, :9].reshape(-1, 3, 3)),
                                 gt12[:, :9].reshape(-1, 3, 3))
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 4))
        n = min(6, len(traj))
        colors = plt.cm.tab10(np.arange(n) % 10)
        for i in range(n):
            ax.plot(traj[i, :, 0, 3], traj[i, :, 2, 3], "-", color=colors[i], lw=1)
            ax.plot(traj[i, -1, 0, 3], traj[i, -1, 2, 3], "o", color=colors[i], ms=5, mfc="none")
            ax.plot(pred["pose"][i, 9], pred["pose"][i, 11], "x", color=colors[i], ms=6)
        ax.plot(0, 0, "k^", ms=6)
        ax.set_xlabel("x (first camera)"), ax.set_ylabel("z (first camera, forward)")
        ax.set_title("trajectories; o true last camera, x predicted", fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
        ax2.hist(rot, bins=20, color="tab:blue")
        ax2.set_xlabel("rotation error (deg)"), ax2.set_ylabel("clips")
        ax2.set_title(f"median {np.median(rot):.2f}°, mean {np.mean(rot):.2f}°", fontsize=8)
        path = Path(out_dir) / "camera_pose.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return [str(path)]
