"""Mask propagation (semi-supervised video object segmentation, DAVIS-2017 J&F), training-free.

The first frame's object masks (``segmentation`` [T, H, W] ids, 0 = background) are propagated
through the clip by ``readout=propagation`` (bench/propagation.py): one-hot masks are averaged
over each token's pixels, propagated chunk by chunk, upsampled bilinearly to pixels and turned
back into ids by argmax (the upsampling of DINO's ``eval_video_segmentation.py`` and RVM's
``process_segmentation``).

Scores follow the davis2017-evaluation code (davisvideochallenge/davis2017-evaluation,
``davis2017/metrics.py`` and ``evaluation.py``): for every object of the first frame,
J = region IoU and F = boundary F-measure (boundaries matched within ``bound_th`` = 0.008 of
the image diagonal, rounded up to whole pixels), each averaged over the scored frames — every
frame but the first and the last, as that code scores them; J-mean and F-mean are means over
all objects of the split and J&F their mean. A frame where both the object's mask and its
prediction are empty scores J = F = 1, one where only one is empty 0.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import DatasetError
from bench.propagation import PropagationTask, area_downsample
from bench.registry import TASKS
from bench.task import FeatureSpec

BOUND_TH = 0.008  # davis2017-evaluation ``db_eval_boundary`` default: a fraction of the image diagonal


def region_iou(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J of binary masks [T, H, W] per frame [T]; 1 where both are empty (``db_eval_iou``)."""
    inter = np.sum(gt & pred, axis=(-2, -1))
    union = np.sum(gt | pred, axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask [H, W]: pixels whose right, lower or lower-right
    neighbour differs (davis2017-evaluation ``_seg2bmap`` at the mask's own size)."""
    mask = mask.astype(bool)
    right, down, diag = (np.zeros_like(mask) for _ in range(3))
    right[:, :-1], down[:-1], diag[:-1, :-1] = mask[:, 1:], mask[1:], mask[1:, 1:]
    edge = (mask ^ right) | (mask ^ down) | (mask ^ diag)
    edge[-1, :] = mask[-1, :] ^ right[-1, :]
    edge[:, -1] = mask[:, -1] ^ down[:, -1]
    edge[-1, -1] = False
    return edge


def disk(radius: int) -> np.ndarray:
    """uint8 disk of ``radius`` pixels (``skimage.morphology.disk``: x² + y² ≤ r²)."""
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F of one frame's binary masks [H, W] (``f_measure``): boundary precision and recall with
    boundaries matched within ceil(bound_th · diagonal) pixels (``bound_th`` ≥ 1: pixels)."""
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_gt == 0 or n_pred == 0:
        return 1.0 if n_gt == n_pred else 0.0
    kernel = disk(int(radius))
    precision = np.sum(pred_b & cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)) / n_pred
    recall = np.sum(gt_b & cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)) / n_gt
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def clip_scores(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
    """(J, F) [M] of each object of the first frame of one clip (ids [T, H, W]), averaged over
    frames 1 … T−2 (davis2017-evaluation drops the first and the last frame)."""
    if gt.shape != pred.shape or gt.shape[0] < 3:
        raise ValueError(f"mask propagation: need matching [T >= 3, H, W] masks, got {gt.shape} and {pred.shape}")
    objects = [i for i in np.unique(gt[0]) if i != 0]
    scored_gt, scored_pred = gt[1:-1], pred[1:-1]
    j = [region_iou(scored_gt == i, scored_pred == i).mean() for i in objects]
    f = [np.mean([boundary_f(g == i, p == i, bound_th) for g, p in zip(scored_gt, scored_pred)]) for i in objects]
    return np.asarray(j, np.float64), np.asarray(f, np.float64)


def split_scores(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> list[tuple[np.ndarray, np.ndarray]]:
    """``clip_scores`` of every clip of a split [N, T, H, W]."""
    return [clip_scores(np.asarray(g), np.asarray(p), bound_th) for g, p in zip(gt, pred)]


@TASKS.register()
class MaskPropagation(PropagationTask):
    name = "mask_propagation"
    requires = ("video", "segmentation")
    metric_directions = {"j_and_f": True, "j_mean": True, "f_mean": True}
    positive_options = ("bound_th",)

    def __init__(self, spec: FeatureSpec, readout: str = "propagation", bound_th: float = BOUND_TH, **cfg: Any):
        super().__init__(spec, readout, **cfg)
        self.bound_th = float(bound_th)

    def seed_labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One-hot ids of frame 0 (K = the batch's largest id + 1), averaged over each token: [B, h·w, K]."""
        first = batch["segmentation"][:, 0].long()
        return area_downsample(F.one_hot(first, int(first.max()) + 1), self.spec.grid[1:]).to(first.device)

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Labels [B, T'·h·w, K] -> ids [B, T, H, W]: bilinear upsampling of each chunk, argmax."""
        chunks, h, w = self.spec.grid
        soft = out.view(out.shape[0] * chunks, h, w, -1).permute(0, 3, 1, 2)
        soft = F.interpolate(soft, size=self.spec.clip[1:], mode="bilinear", align_corners=False)
        ids = soft.argmax(1).view(out.shape[0], chunks, *self.spec.clip[1:])
        return {"segmentation": self.frames(ids).to(torch.int32)}

    def blind(self, split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The first frame's masks copied to every frame."""
        seg = np.asarray(split["segmentation"])
        return {"segmentation": np.repeat(seg[:, :1], seg.shape[1], axis=1).astype(np.int32)}

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        scores = split_scores(target["segmentation"], pred["segmentation"], self.bound_th)
        j = np.concatenate([s[0] for s in scores])
        f = np.concatenate([s[1] for s in scores])
        if not len(j):
            raise DatasetError("mask propagation: no clip has an object in its first frame")
        return {"j_and_f": float((j.mean() + f.mean()) / 2), "j_mean": float(j.mean()), "f_mean": float(f.mean())}

    def per_clip(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each clip's mean over its objects of (J + F) / 2, weighted by its object count (0: no object)."""
        scores = split_scores(target["segmentation"], pred["segmentation"], self.bound_th)
        counts = np.array([len(j) for j, _ in scores], np.float64)
        values = np.array([np.mean((j + f) / 2) if len(j) else 0.0 for j, f in scores])
        return values, counts

