"""Keypoint propagation (JHMDB pose tracking, PCK@0.1), training-free.

Keypoints are the tracks visible in the first frame (``target_points`` [N, T, 2] (x, y) px,
``occluded`` [N, T]; on JHMDB the 15 joints). Each becomes a Gaussian heatmap on the token grid
(σ = 0.5 tokens, CRW's and RVM's ``draw_labelmap_np``), the heatmaps are propagated by
``readout=propagation`` (bench/propagation.py), and each keypoint of each chunk is read back as
the heatmap-weighted mean of its ``decode_topk`` = 5 strongest tokens (RVM's ``process_pose``;
CRW uses 3). We place the Gaussian at the exact keypoint and read tokens at their centres,
where upstream rounds to token corners.

PCK (as CRW's ``eval/eval_pck.py`` and RVM, after UVC's JHMDB ``eval_pck.py``): a keypoint of
frame t ≥ 1 is correct when its error is at most α · 0.6 · ‖max − min‖ of the ground-truth
keypoints visible in that frame (0.6 × the diagonal of their box); PCK@α is the fraction
correct over every scored (keypoint, frame) — keypoints visible in the first frame and in frame
t. Upstream averages per joint class, which equals this pooled fraction when every joint is
scored equally often (JHMDB annotates all 15 joints in every frame); the synthetic world's
tracks share no identity across clips, so only the pooled form is defined for them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.errors import ConfigError, DatasetError
from bench.propagation import PropagationTask
from bench.registry import TASKS
from bench.task import FeatureSpec

ALPHAS = (0.1, 0.2)  # PCK thresholds reported (JHMDB tables give @0.1 and @0.2)
BOX_SCALE = 0.6  # normaliser = 0.6 × the diagonal of the visible keypoints' box (CRW / UVC eval_pck.py)


def keypoints(points: np.ndarray | torch.Tensor, occluded: np.ndarray | torch.Tensor,
              size: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """[..., N] bool: the tracks that are keypoints — visible (``occluded`` is boolean) and inside
    the (H, W) image in frame 0 (NaN positions are not)."""
    first = points[..., 0, :]
    inside = (first[..., 0] >= 0) & (first[..., 0] < size[1]) & (first[..., 1] >= 0) & (first[..., 1] < size[0])
    return ~occluded[..., 0] & inside


def pck_counts(pred: np.ndarray, points: np.ndarray, occluded: np.ndarray, size: tuple[int, int],
               alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(correct, scored) per clip [B] from predicted and true tracks [B, N, T, 2] and occlusion
    [B, N, T] in (H, W) images: keypoints of frame 0 visible in frame t ≥ 1, correct within
    α · the frame's normaliser."""
    points, occluded = np.asarray(points, np.float64), np.asarray(occluded, bool)
    visible = ~occluded & keypoints(points, occluded, size)[..., None]
    lo = np.where(visible[..., None], points, np.inf).min(1)  # [B, T, 2]
    hi = np.where(visible[..., None], points, -np.inf).max(1)
    with np.errstate(invalid="ignore"):
        norm = BOX_SCALE * np.linalg.norm(hi - lo, axis=-1)  # [B, T]; NaN / inf where no keypoint is visible
    scored = visible & np.isfinite(norm)[:, None] & (norm > 0)[:, None]
    scored[..., 0] = False
    dist = np.linalg.norm(np.nan_to_num(np.asarray(pred, np.float64), nan=np.inf) - points, axis=-1)
    correct = scored & (dist <= alpha * np.where(scored, norm[:, None], 0))
    return correct.sum((1, 2)).astype(np.float64), scored.sum((1, 2)).astype(np.float64)


@TASKS.register()
class KeypointPropagation(PropagationTask):
    name = "keypoint_propagation"
    requires = ("video", "target_points", "occluded")
    metric_directions = {f"pck_{alpha}": True for alpha in ALPHAS}  # pck_0.1 first
    positive_options = ("sigma",)

    def __init__(self, spec: FeatureSpec, readout: str = "propagation", sigma: float = 0.5, decode_topk: int = 5,
                 **cfg: Any):
        super().__init__(spec, readout, **cfg)
        if sigma <= 0 or decode_topk < 1:
            raise ConfigError(f"keypoint_propagation: need sigma > 0 and decode_topk >= 1 (got {sigma}, {decode_topk})")
        self.sigma, self.decode_topk = float(sigma), int(decode_topk)
        h, w = spec.grid[1:]
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        self.token_xy = torch.stack([xs, ys], -1).reshape(-1, 2).float()  # token centres, grid units
        self.pixels_per_token = torch.tensor([spec.clip[2] / w, spec.clip[1] / h])

    def seed_labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A Gaussian (σ tokens) at each keypoint of frame 0, zero for other tracks: [B, h·w, N]."""
        points, occ = batch["target_points"].float(), batch["occluded"]
        centre = points[:, :, 0] / self.pixels_per_token.to(points) - 0.5  # [B, N, 2] grid units
        dist2 = (self.token_xy.to(points)[None, :, None] - centre[:, None]).square().sum(-1)
        heat = torch.exp(-dist2 / (2 * self.sigma ** 2))
        return heat * keypoints(points, occ.bool(), self.spec.clip[1:])[:, None].to(heat)

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Heatmaps [B, T'·h·w, N] -> tracks [B, N, T, 2] px: per chunk, the weighted mean of the
        centres of the ``decode_topk`` strongest tokens (NaN where a heatmap is all zero)."""
        chunks = self.spec.grid[0]
        heat = out.view(out.shape[0], chunks, -1, out.shape[-1]).clamp_min(0)  # [B, T', h·w, N]
        values, index = heat.topk(min(self.decode_topk, heat.shape[2]), dim=2)
        total = values.sum(2, keepdim=True)
        xy = (self.token_xy.to(out)[index] * (values / total)[..., None]).sum(2)  # [B, T', N, 2]
        xy = torch.where(total.transpose(2, 3) > 0, (xy + 0.5) * self.pixels_per_token.to(out), float("nan"))
        return {"tracks": self.frames(xy).transpose(1, 2)}

    def blind(self, split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every keypoint left where it is in the first frame."""
        points = np.asarray(split["target_points"], np.float32)
        return {"tracks": np.repeat(points[:, :, :1], points.shape[2], axis=2)}

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        out = {}
        for alpha in ALPHAS:
            correct, scored = pck_counts(pred["tracks"], target["target_points"], target["occluded"],
                                         self.spec.clip[1:], alpha)
            if scored.sum() == 0:
                raise DatasetError("keypoint propagation: no keypoint of a first frame is visible in a later frame")
            out[f"pck_{alpha}"] = float(correct.sum() / scored.sum())
        return out

    def per_clip(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each clip's PCK@0.1, weighted by its scored (keypoint, frame) pairs."""
        correct, scored = pck_counts(pred["tracks"], target["target_points"], target["occluded"],
                                     self.spec.clip[1:], ALPHAS[0])
        return correct / np.maximum(scored, 1), scored

