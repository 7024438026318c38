"""Box tracking (4DS readout): given an object's box in the first frame, predict it in every frame.

Query: the first-frame box (x0, y0, x1, y1), normalised to [0, 1] by the image size, encoded with
Fourier features (16 bases) → MLP(512), replicated per time chunk of the feature grid with a
learned temporal embedding (``QueryTrackingTask``, shared with point tracking); query token
(m, t') predicts the boxes of object m on the frames of chunk t' as (Δcx, Δcy, Δlog w, Δlog h)
from the first-frame box, so boxes are always well formed and a zero output is the "static box"
tracker.
Only objects valid in frame 0 are queried; the others are masked out of loss and metric.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from bench.errors import DatasetError
from bench.registry import TASKS
from bench.task import FeatureSpec
from tasks._queries import QueryTrackingTask, box_pool

MIN_SIZE = 1e-3  # normalised width/height floor of a query box (log-size parametrisation)


def box_iou_pairs(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of each pair (pred[i], target[i]) of (x0, y0, x1, y1) boxes [K, 4] -> [K], computed by
    ``pycocotools.mask.iou`` on (x, y, w, h) boxes (the COCO definition: intersection area over
    union area). Negative widths/heights count as 0; a pair whose union is empty (two zero-area
    boxes, even identical ones) has IoU 0, as in pycocotools."""
    from pycocotools import mask as mask_utils

    def xywh(b):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        return np.stack([b[:, 0], b[:, 1], np.maximum(b[:, 2] - b[:, 0], 0), np.maximum(b[:, 3] - b[:, 1], 0)], 1)

    p, t = xywh(pred), xywh(target)
    out = np.zeros(len(p))
    for start in range(0, len(p), 256):  # pycocotools returns the full matrix: keep blocks small
        p_blk, t_blk = p[start:start + 256], t[start:start + 256]
        iou = np.asarray(mask_utils.iou(p_blk, t_blk, [0] * len(t_blk)), dtype=np.float64)
        out[start:start + len(p_blk)] = np.diagonal(iou.reshape(len(p_blk), len(t_blk)))
    return out


def scored_pairs(box_valid: np.ndarray, include_query_frame: bool = False) -> np.ndarray:
    """[B, M, T] bool: the (object, frame) pairs box tracking scores — objects valid in frame 0
    (they have a query), in frames where they are valid, frame 0 excluded unless asked."""
    valid = np.asarray(box_valid, bool)
    pairs = valid & valid[..., :1]
    if not include_query_frame:
        pairs[..., 0] = False
    return pairs


def box_tracking_metrics(pred_boxes: np.ndarray, gt_boxes: np.ndarray, box_valid: np.ndarray,
                         include_query_frame: bool = False) -> dict[str, float]:
    """Mean IoU over (object, frame) pairs (the box-tracking metric of 4DS), pooled over the split.

    pred_boxes, gt_boxes [B, M, T, 4] (x0, y0, x1, y1) px; box_valid [B, M, T]. A pair counts when
    the object is valid in frame 0 (it has a query) and in that frame; frame 0 itself — the query,
    given to the readout — is left out unless ``include_query_frame``. IoU as ``box_iou_pairs``.
    """
    pairs = scored_pairs(box_valid, include_query_frame)
    if not pairs.any():
        raise DatasetError("box tracking: no valid (object, frame) pair to evaluate")
    iou = box_iou_pairs(np.asarray(pred_boxes)[pairs], np.asarray(gt_boxes)[pairs])
    return {"mean_iou": float(iou.mean())}


@TASKS.register()
class BoxTracking(QueryTrackingTask):
    name = "box_tracking"
    requires = ("video", "boxes", "box_valid")
    metric_directions = {"mean_iou": True}
    coord_dim, frame_dim = 4, 4  # query: the first-frame box; per frame Δcx, Δcy, Δlog w, Δlog h
    plot_legend = "— true, -- pred"

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", num_bases: int = 16, mlp_hidden: int = 512,
                 l1_weight: float = 5.0, giou_weight: float = 2.0, smooth_l1_beta: float = 0.01,
                 include_query_frame: bool = False, **cfg: Any):
        super().__init__(spec, readout, num_bases, mlp_hidden, **cfg)
        self.l1_weight, self.giou_weight, self.beta = l1_weight, giou_weight, smooth_l1_beta
        self.include_query_frame = include_query_frame
        _, h, w = spec.clip
        self.scale = torch.tensor([w, h, w, h], dtype=torch.float32)

    def query_coords(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised first-frame boxes [B, M, 4] (invalid objects: a zero box)."""
        box = batch["boxes"][:, :, 0].float() / self.scale.to(batch["boxes"].device)
        valid = batch["box_valid"][:, :, 0].bool()[..., None]
        return torch.where(valid, torch.nan_to_num(box), torch.zeros_like(box)).clamp(0, 1)

    def query_place(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The first-frame box centre, normalised (y, x): [B, M, 2]."""
        x0, y0, x1, y1 = self.query_coords(batch).unbind(-1)
        return torch.stack([(y0 + y1) / 2, (x0 + x1) / 2], dim=-1)

    def linear_pool(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the tokens inside the first-frame box, in every time chunk: [B, M·T', C]."""
        return box_pool(features, self.query_coords(batch), self.spec.grid[1:])

    def _boxes(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Readout output [B, M·T', 4·L] -> normalised boxes (x0, y0, x1, y1) [B, M, T, 4]."""
        out = self.per_frame(out)
        x0, y0, x1, y1 = self.query_coords(batch).unsqueeze(2).unbind(-1)
        cx, cy = (x0 + x1) / 2 + out[..., 0], (y0 + y1) / 2 + out[..., 1]
        bw = (x1 - x0).clamp_min(MIN_SIZE) * out[..., 2].clamp(max=10).exp()
        bh = (y1 - y0).clamp_min(MIN_SIZE) * out[..., 3].clamp(max=10).exp()
        return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)

    def _mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        valid = batch["box_valid"].bool()
        return valid & valid[:, :, :1]

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """l1_weight · SmoothL1(β) + giou_weight · GIoU loss on normalised boxes (DETR's weights
        5 and 2), over valid frames of objects valid in frame 0."""
        mask = self._mask(batch)
        if not mask.any():
            return out.sum() * 0
        pred = self._boxes(out, batch)[mask]
        gt = batch["boxes"].float()[mask] / self.scale.to(out.device)
        l1 = F.smooth_l1_loss(pred, gt, beta=self.beta)
        giou = generalized_box_iou_loss(pred, gt, reduction="mean", eps=1e-7)
        return self.l1_weight * l1 + self.giou_weight * giou

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"boxes": self._boxes(out, batch) * self.scale.to(out.device),
                "query_valid": batch["box_valid"][:, :, 0]}

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        return box_tracking_metrics(pred["boxes"], target["boxes"], target["box_valid"], self.include_query_frame)

    def per_clip(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each clip's mean IoU over its scored pairs, weighted by their count (pooled mean IoU)."""
        pairs = scored_pairs(target["box_valid"], self.include_query_frame)
        iou = np.zeros(pairs.shape)
        iou[pairs] = box_iou_pairs(np.asarray(pred["boxes"])[pairs], np.asarray(target["boxes"])[pairs])
        count = pairs.reshape(len(pairs), -1).sum(1).astype(np.float64)
        return iou.reshape(len(iou), -1).sum(1) / np.maximum(count, 1), count

    def draw_clip(self, axes: Sequence[Any], frames: list[int], i: int, pred: dict[str, np.ndarray],
                  target: dict[str, np.ndarray]) -> None:
        """The boxes of the objects valid in frame 0 and the shown frame: truth solid, prediction dashed."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        valid = target["box_valid"][i] & target["box_valid"][i][:, :1]
        colors = plt.cm.tab10(np.arange(valid.shape[0]) % 10)
        for ax, f in zip(axes, frames):
            for m in np.flatnonzero(valid[:, f]):
                for box, style in ((target["boxes"][i, m, f], "-"), (pred["boxes"][i, m, f], "--")):
                    ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                                           ec=colors[m], ls=style, lw=1.2))
