"""Shared pieces of the query-conditioned tasks (point and box tracking).

* ``QueryTrackingTask``: their common base — Fourier queries replicated per time chunk, per-frame
  outputs, query positions, the LinearReadout's pooling and the 3-frame plot; a subclass says what
  a query encodes and decodes, scores and draws its own outputs.
* ``fourier_features``: NeRF-style encoding of normalised coordinates.
* ``FourierQueries``: the 4DS query encoder — Fourier features (16 bases) of a normalised
  input (a query point (t, y, x) or a first-frame box) → MLP(512) → one token per input,
  optionally replicated per time chunk of the feature grid with a learned temporal embedding,
  so that query token (n, t') predicts input n on the frames of chunk t'.
* ``sample_tokens`` / ``box_pool``: what a LinearReadout reads for a query (the token under a
  point, the tokens inside a box), so a linear probe can be query-conditioned while staying
  linear in the features.

Files starting with ``_`` are not registered as tasks.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from bench.readouts import token_positions
from bench.task import FeatureSpec, Task

Batch = dict[str, torch.Tensor]


def fourier_features(x: torch.Tensor, num_bases: int = 16, max_freq: float = 32.0) -> torch.Tensor:
    """[..., D] coordinates in [0, 1] -> [..., D·(2·num_bases + 1)]: the coordinates themselves,
    then sin(π f_k x) and cos(π f_k x) for ``num_bases`` frequencies f_k log-spaced from 1 to
    ``max_freq`` (the highest period is 2/max_freq of the unit range)."""
    freqs = torch.logspace(0.0, math.log2(max_freq), num_bases, base=2.0, device=x.device, dtype=x.dtype)
    ang = math.pi * x.unsqueeze(-1) * freqs  # [..., D, K]
    return torch.cat([x, ang.sin().flatten(-2), ang.cos().flatten(-2)], dim=-1)


class FourierQueries(nn.Module):
    """Queries from task inputs: ``coords(batch)`` [B, N, D] in [0, 1] → Fourier features →
    MLP(hidden) → [B, N, dim]; with ``num_chunks`` = T' the tokens are replicated per time chunk
    and a learned temporal embedding (N(0, 0.02)) is added: [B, N·T', dim] laid out (n t')."""

    def __init__(self, coords: Callable[[Batch], torch.Tensor], in_dim: int, dim: int, num_chunks: int = 0,
                 num_bases: int = 16, hidden: int = 512, max_freq: float = 32.0):
        super().__init__()
        self.coords = coords
        self.num_bases, self.max_freq = num_bases, max_freq
        self.mlp = nn.Sequential(nn.Linear(in_dim * (2 * num_bases + 1), hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.num_chunks = num_chunks
        self.time_embed = nn.Parameter(torch.randn(1, 1, num_chunks, dim) * 0.02) if num_chunks else None

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.mlp(fourier_features(self.coords(batch).float(), self.num_bases, self.max_freq))
        if self.time_embed is None:
            return x
        return rearrange(x.unsqueeze(2) + self.time_embed, "b n t d -> b (n t) d")


def chunk_positions(yx: torch.Tensor, chunks: int) -> torch.Tensor:
    """Readout query positions of per-chunk query tokens: normalised (y, x) [B, N, 2] placed at
    the centre of each of ``chunks`` time chunks -> [B, N·chunks, 3] (t, y, x), laid out (n t')."""
    t = (torch.arange(chunks, device=yx.device, dtype=yx.dtype) + 0.5) / chunks
    t = t.view(1, 1, -1, 1).expand(*yx.shape[:2], -1, 1)
    return rearrange(torch.cat([t, yx.unsqueeze(2).expand(-1, -1, chunks, -1)], dim=-1), "b n t d -> b (n t) d")


def sample_tokens(features: torch.Tensor, yx: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample every time chunk of features [B, T', h*w, C] at normalised points
    yx [B, N, 2] in [0, 1] (align_corners=False, border padding) -> [B, N·T', C], laid out (n t')."""
    b, t, _, c = features.shape
    h, w = grid_hw
    fmap = rearrange(features, "b t (h w) c -> (b t) c h w", h=h, w=w)
    grid = (yx.flip(-1) * 2 - 1).to(features.dtype)  # grid_sample wants (x, y) in [-1, 1]
    grid = grid.unsqueeze(1).expand(b, t, -1, -1).reshape(b * t, 1, -1, 2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return rearrange(out, "(b t) c 1 n -> b (n t) c", b=b, t=t)


def box_pool(features: torch.Tensor, boxes: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Mean of the tokens whose centre lies inside each normalised box (x0, y0, x1, y1)
    [B, M, 4], in every time chunk of features [B, T', h*w, C] -> [B, M·T', C] laid out (m t').
    A box that covers no token centre reads the token nearest to its centre."""
    h, w = grid_hw
    yy, xx = token_positions((1, h, w)).to(features.device)[:, 1:].unbind(-1)  # normalised centres, [N]
    x0, y0, x1, y1 = boxes.unbind(-1)  # [B, M]
    inside = ((xx >= x0[..., None]) & (xx <= x1[..., None]) & (yy >= y0[..., None]) & (yy <= y1[..., None]))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    nearest = ((xx - cx[..., None]) ** 2 + (yy - cy[..., None]) ** 2).argmin(-1)  # [B, M]
    weights = inside.float()
    weights = torch.where(inside.any(-1, keepdim=True), weights, F.one_hot(nearest, h * w).float())
    weights = weights / weights.sum(-1, keepdim=True)  # [B, M, N]
    out = torch.einsum("bmn,btnc->bmtc", weights.to(features.dtype), features)
    return rearrange(out, "b m t c -> b (m t) c")


class QueryTrackingTask(Task):
    """A task whose queries each follow one input (a point, a box) through the clip: query n is
    ``FourierQueries`` of ``query_coords`` replicated per time chunk, so token (n, t') predicts
    ``frame_dim`` numbers for every frame of chunk t' (a residual on the query: zero is "static")."""

    query_conditioned = True
    zero_init_head = True
    has_query_positions = True
    coord_dim: ClassVar[int]  # numbers per query input (the width of ``query_coords``)
    frame_dim: ClassVar[int]  # readout outputs per query and frame
    plot_legend: ClassVar[str]  # how ``draw_clip`` marks truth and prediction, for the plot titles

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", num_bases: int = 16, mlp_hidden: int = 512,
                 **cfg: Any):
        super().__init__(spec, readout, **cfg)
        self.num_bases, self.mlp_hidden = num_bases, mlp_hidden
        self.chunks, self.chunk_len = spec.grid[0], self.frames_per_chunk()

    @abstractmethod
    def query_coords(self, batch: Batch) -> torch.Tensor:
        """What each query encodes, normalised to [0, 1]: [B, Q, coord_dim]."""

    @abstractmethod
    def query_place(self, batch: Batch) -> torch.Tensor:
        """Where each query sits in the image, normalised (y, x): [B, Q, 2]."""

    @abstractmethod
    def draw_clip(self, axes: Sequence[Any], frames: list[int], i: int, pred: dict[str, np.ndarray],
                  target: dict[str, np.ndarray]) -> None:
        """Overlay clip ``i``'s truth and prediction at ``frames`` on ``axes`` (one per frame)."""

    def queries(self, dim: int) -> nn.Module:
        return FourierQueries(self.query_coords, self.coord_dim, dim, num_chunks=self.chunks,
                              num_bases=self.num_bases, hidden=self.mlp_hidden)

    def query_positions(self, batch: Batch) -> torch.Tensor:
        """Each query token at its query's place, in its time chunk: [B, Q·T', 3]."""
        return chunk_positions(self.query_place(batch), self.chunks)

    def linear_pool(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The token under the query's place (bilinear) in every time chunk: [B, Q·T', C]."""
        return sample_tokens(features, self.query_place(batch), self.spec.grid[1:])

    @property
    def output_dim(self) -> int:
        return self.frame_dim * self.chunk_len

    def per_frame(self, out: torch.Tensor) -> torch.Tensor:
        """Readout output [B, Q·T', frame_dim·L] -> [B, Q, T, frame_dim]."""
        return rearrange(out, "b (q c) (l k) -> b q (c l) k", c=self.chunks, l=self.chunk_len, k=self.frame_dim)

    def visualize(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], out_dir: Path) -> list[str]:
        """``<name>.png``: up to 3 clips × frames (0, T/2, T−1), ``draw_clip``'s overlays on the video
        (``pred`` is ``decode``'s output, which holds each clip's ``query_valid``)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n_clips, (t, h, w) = min(3, len(pred["query_valid"])), self.spec.clip
        frames = [0, t // 2, t - 1]
        fig, axes = plt.subplots(n_clips, len(frames), figsize=(3 * len(frames), 3 * n_clips), squeeze=False)
        for i in range(n_clips):
            for ax, f in zip(axes[i], frames):
                ax.imshow(target["video"][i, f] if "video" in target else np.zeros((h, w, 3), np.uint8))
            self.draw_clip(axes[i], frames, i, pred, target)
            for ax, f in zip(axes[i], frames):
                ax.set_xlim(0, w), ax.set_ylim(h, 0)
                ax.set_title(f"clip {i} t={f}  ({self.plot_legend})", fontsize=7)
                ax.axis("off")
        path = Path(out_dir) / f"{self.name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return [str(path)]
