"""Monocular video depth (4DS): one learned query per output patch predicts that patch's depth.

The readout predicts the depth as a residual on each pixel's train-median depth (``prepare``;
in log space with ``loss=log``), with a zero-initialised head: training starts from the
input-blind answer and spends its budget on what the features add, not on learning the scene's
scale (frozen4d's choice for short CPU budgets; 4DS regresses depth directly).

Output patches are 2×p×p with p = ``patch_px`` (8, as in 4DS at 224 with 16-px tubelets),
capped at the encoder's spatial tubelet: the CPU models' 8-px tubelets give one query per
tubelet (2×8×8), which keeps the readout at 512 queries for a 16×64×64 clip. Under the linear
readout each token predicts its own tubelet. Metrics are the standard ones of Eigen et al. (NIPS 2014),
over the valid pixels (depth > 0), with two protocol options (docs/datasets.md, "Protocol options"):

- ``average``: ``pooled`` (default, frozen4d's behaviour so far and docs/design.md §7: one mean over every
  valid pixel of the split) or ``per_image`` (each frame's mean, then the mean over frames, as the
  KITTI/NYU evaluations of Monodepth2's ``evaluate_depth.py`` compute it);
- ``align``: ``none`` (default: 4DS regresses and scores metric depth; docs/design.md §7 names no
  alignment), ``median`` (per frame, pred · median(d)/median(d̂): Zhou et al. CVPR 2017, Monodepth2)
  or ``lstsq`` (per frame, the least-squares scale s = Σd̂d/Σd̂² in depth space: scale only, unlike
  the scale-and-shift disparity alignment of MiDaS, Ranftl et al. TPAMI 2020).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from einops import rearrange
from torch import nn

from bench.errors import ConfigError, DatasetError
from bench.readouts import LearnedQueries, token_positions
from bench.registry import READOUTS, TASKS
from bench.task import FeatureSpec, Task


Average = Literal["pooled", "per_image"]  # how per-image means are weighted in the split mean
Align = Literal["none", "median", "lstsq"]  # per-image scale alignment of predictions before scoring
AVERAGES, ALIGNMENTS = get_args(Average), get_args(Align)


def check_option(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """A one-line ValueError naming the config key and its allowed values."""
    if value not in allowed:
        raise ConfigError(f"task.{key}={value!r}: expected one of {list(allowed)}")


def as_images(x: np.ndarray) -> np.ndarray:
    """[..., H, W] -> [images, H·W] in float64 (an array of fewer than 2 axes is one image)."""
    x = np.asarray(x, np.float64)
    return x.reshape(int(np.prod(x.shape[:-2])), -1)


def masked_median(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median of each row's valid entries [I, P] -> [I, 1] (1 for a row with none), vectorised."""
    k = valid.sum(1, keepdims=True)
    ranked = np.sort(np.where(valid, x, np.inf), axis=1)
    lo = np.take_along_axis(ranked, np.maximum(k - 1, 0) // 2, 1)
    hi = np.take_along_axis(ranked, k // 2, 1)
    return np.where(k > 0, (lo + hi) / 2, 1.0)


def median_scale(p: np.ndarray, d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-image scale median(d)/median(d̂) over valid pixels (Zhou et al. 2017; Monodepth2)."""
    return masked_median(d, valid) / masked_median(p, valid)


def lstsq_scale(p: np.ndarray, d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-image least-squares scale argmin_s Σ(s·d̂ − d)² = Σd̂d / Σd̂² over valid pixels (1 if none)."""
    num, den = np.sum(valid * p * d, 1, keepdims=True), np.sum(valid * p * p, 1, keepdims=True)
    return np.divide(num, den, out=np.ones_like(num), where=den > 0)


SCALE_FITS = {"median": median_scale, "lstsq": lstsq_scale}


def image_sums(pred: np.ndarray, target: np.ndarray, align: str = "none",
               eps: float = 1e-3) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per image (the last two axes): sums over valid pixels (d > 0) of |d̂−d|/d, [max(d̂/d, d/d̂) < 1.25]
    and (d̂−d)², and the valid count, each [I]. d̂ is clamped to ≥ eps, then scaled per ``align``."""
    check_option("align", align, ALIGNMENTS)
    d = as_images(target)
    valid = d > 0
    d = np.where(valid, d, 1.0)
    p = np.maximum(as_images(pred), eps)
    if align != "none":
        p = p * SCALE_FITS[align](p, d, valid)
    p = np.where(valid, p, d)  # an invalid pixel adds no error
    diff = p - d
    pixel = {"abs_rel": np.abs(diff) / d, "delta1": (np.maximum(p, d) < 1.25 * np.minimum(p, d)) & valid,
             "sq": diff ** 2}
    return {k: v.sum(1, dtype=np.float64) for k, v in pixel.items()}, valid.sum(1).astype(np.float64)


def image_weights(counts: np.ndarray, average: str) -> np.ndarray:
    """Each image's weight in a split mean of per-image means: its valid-pixel count (``pooled``, the
    same as one mean over all pixels) or 1 for an image with any valid pixel (``per_image``)."""
    check_option("average", average, AVERAGES)
    return counts if average == "pooled" else (counts > 0).astype(np.float64)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Σ w·v / Σ w."""
    return float(np.sum(values * weights) / np.sum(weights))


def depth_metrics(pred: np.ndarray, target: np.ndarray, eps: float = 1e-3, average: str = "pooled",
                  align: str = "none") -> dict[str, float]:
    """AbsRel = mean |d̂−d|/d, δ1 = mean[max(d̂/d, d/d̂) < 1.25], RMSE = sqrt(mean (d̂−d)²) over valid
    pixels (d > 0) (Eigen et al. 2014), averaged and aligned as the module docstring says."""
    sums, counts = image_sums(pred, target, align, eps)
    if not counts.any():
        raise DatasetError("depth metrics: the target has no valid pixel (depth > 0)")
    w, n = image_weights(counts, average), np.maximum(counts, 1)
    mse = sums["sq"] / n
    rmse = np.sqrt(weighted_mean(mse, w)) if average == "pooled" else weighted_mean(np.sqrt(mse), w)
    return {"abs_rel": weighted_mean(sums["abs_rel"] / n, w), "delta1": weighted_mean(sums["delta1"] / n, w),
            "rmse": float(rmse)}


def depth_per_clip(pred: np.ndarray, target: np.ndarray, eps: float = 1e-3, average: str = "pooled",
                   align: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """AbsRel of each clip [N, T, H, W] and its weight (valid pixels for ``pooled``, valid frames for
    ``per_image``), so the weighted mean over clips is the AbsRel of ``depth_metrics``."""
    sums, counts = image_sums(pred, target, align, eps)
    w = image_weights(counts, average).reshape(len(pred), -1)
    v = (sums["abs_rel"] / np.maximum(counts, 1)).reshape(len(pred), -1)
    weight = w.sum(1)
    return np.divide((v * w).sum(1), weight, out=np.zeros_like(weight), where=weight > 0), weight


def position_prior(train_depth: np.ndarray) -> np.ndarray:
    """The input-blind depth prediction [T, H, W]: each pixel's median valid depth over the train
    clips [N, T, H, W] (1 m where a pixel is never valid). A readout that does not beat it on the
    test split has learned where pixels lie in the frame, not anything from the features."""
    valid = np.where(train_depth > 0, train_depth, np.nan)
    return np.nan_to_num(np.nanmedian(valid, axis=0), nan=1.0).astype(np.float32)


@TASKS.register()
class Depth(Task):
    name = "depth"
    requires = ("video", "depth")
    metric_directions = {"abs_rel": False, "delta1": True, "rmse": False}
    has_query_positions = True
    zero_init_head = True

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", loss: Literal["l1", "log"] = "l1",
                 patch_px: int = 8, average: Average = "pooled", align: Align = "none", **cfg: Any):
        super().__init__(spec, readout, **cfg)
        self.check_options(loss=loss, average=average, align=align)
        self.loss_kind, self.scoring = loss, {"average": average, "align": align}
        t, h, w = spec.clip
        tube = (t // spec.grid[0], h // spec.grid[1], w // spec.grid[2])
        if patch_px < 1 or tube[1] % min(patch_px, tube[1]) or tube[2] % min(patch_px, tube[2]):
            raise ConfigError(f"depth patch_px={patch_px} must divide the encoder's tubelet {tube[1]}×{tube[2]}")
        per_token = READOUTS.get(readout).token_outputs
        self.patch = tube if per_token else (2, min(patch_px, tube[1]), min(patch_px, tube[2]))
        self.out_grid = (t // self.patch[0], h // self.patch[1], w // self.patch[2])
        self.prior = torch.zeros(t, h, w)  # what the readout's output is added to (``prepare``)

    def prepare(self, train: dict[str, np.ndarray]) -> None:
        """The per-pixel train-median depth (``position_prior``), as the readout's offset."""
        prior = torch.from_numpy(position_prior(np.asarray(train["depth"])))
        self.prior = prior.clamp_min(1e-3).log() if self.loss_kind == "log" else prior

    def queries(self, dim: int) -> nn.Module:
        return LearnedQueries(int(np.prod(self.out_grid)), dim)

    def query_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The centre of each output patch, [1, Q, 3]."""
        return token_positions(self.out_grid)[None].to(batch["features"].device)

    @property
    def output_dim(self) -> int:
        return int(np.prod(self.patch))

    def depth_map(self, out: torch.Tensor) -> torch.Tensor:
        """Readout output [B, Q, patch] -> depth (log depth with ``loss=log``) [B, T, H, W]."""
        gt, gh, gw = self.out_grid
        pt, ph, pw = self.patch
        residual = rearrange(out, "b (gt gh gw) (pt ph pw) -> b (gt pt) (gh ph) (gw pw)",
                             gt=gt, gh=gh, gw=gw, pt=pt, ph=ph, pw=pw)
        return residual + self.prior.to(out)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred, target = self.depth_map(out), batch["depth"]
        valid = target > 0
        if self.loss_kind == "log":  # scale-invariant-ish log loss, positive by construction
            target = torch.log(torch.where(valid, target, 1.0))
        # L1 over valid pixels as a masked mean: boolean indexing (nonzero + index_put in backward)
        # was ~12% of a readout step
        return ((pred - target).abs() * valid).sum() / valid.sum().clamp_min(1)

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.depth_map(out)
        return {"depth": pred.exp() if self.loss_kind == "log" else pred}

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        return depth_metrics(pred["depth"], target["depth"], **self.scoring)

    def per_clip(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return depth_per_clip(pred["depth"], target["depth"], **self.scoring)

    def visualize(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], out_dir: Path) -> list[str]:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n, frames = min(3, len(target["depth"])), target["depth"].shape[1]
        cols = [0, frames // 2, frames - 1]
        fig, axes = plt.subplots(n, 2 * len(cols), figsize=(2 * 2 * len(cols), 2 * n), squeeze=False)
        for i in range(n):
            vmax = float(target["depth"][i].max())
            for j, t in enumerate(cols):
                axes[i, 2 * j].imshow(target["depth"][i, t], vmin=0, vmax=vmax, cmap="turbo")
                axes[i, 2 * j + 1].imshow(pred["depth"][i, t], vmin=0, vmax=vmax, cmap="turbo")
                axes[i, 2 * j].set_title(f"true t={t}", fontsize=7)
                axes[i, 2 * j + 1].set_title(f"pred t={t}", fontsize=7)
        for ax in axes.flat:
            ax.axis("off")
        path = Path(out_dir) / "depth.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return [str(path)]
