"""Training-free label propagation over frozen features: the ``propagation`` readout and the base
class of the tasks it serves (``mask_propagation``, ``keypoint_propagation``).

The protocol of CRW (Jabri et al., NeurIPS 2020; ajabri/videowalk ``code/test.py``), DINO's
``eval_video_segmentation.py`` (Caron et al., ICCV 2021) and the RVM evaluation of
google-deepmind/representations4d (``colabs/rvm_evaluation_demo.ipynb``, ``label_propagation``):
the first frame's labels (one-hot masks, keypoint heatmaps) are given at feature resolution;
every later frame takes, for each of its tokens, the labels of its ``topk`` most similar context
tokens (cosine similarity of L2-normalised features / ``temperature``, softmax over the top k),
where the context is the first frame plus the ``context`` most recent frames, with their
*predicted* labels, and the recent frames' tokens count only within ``radius`` tokens (Euclidean)
of the target token. Nothing is trained; the readout has no parameters.

Our features are tubelet chunks, [B, T', h·w, C] (T' = 8 chunks of 2 frames for a 16-frame clip),
so one propagation step is one chunk: chunk 0 holds the first frame's labels, each later chunk
is predicted from chunk 0 plus the ``context`` chunks before it, and the task spreads a chunk's
labels over its frames and pixels.

Defaults (``PropagationReadout.from_task``) are those of the RVM evaluation (DAVIS-2017 and
JHMDB; VIP uses topk = 10): ``context`` 20, ``topk`` 7, ``radius`` 20 tokens, ``temperature`` 0.7.
DINO uses 7 / 5 / 12 (a square window) / 0.1 and CRW 20 / 10 / 12 / 0.05 (its README's DAVIS
command); as in CRW and RVM the radius restricts the recent frames only, never the first.
The radius was set on RVM's DAVIS grid of ``reference_grid`` = 30 tokens (480-px frames, 16-px
patches); we scale it by h / reference_grid so it covers the same fraction of the frame on our
grid (20 · 8 / 30 ≈ 5.3 tokens on the 8×8 grid of a 64×64 clip); ``reference_grid: null`` takes
``radius`` as a literal token count.
As in CRW and RVM, the recent-context slots start as copies of the first chunk (``context_chunks``),
so identical features copy labels exactly whatever k; DINO, which restricts the first frame too
and starts with an empty queue, differs there.
"""
from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.models.vit import grid_coords
from bench.readouts import Readout
from bench.registry import READOUTS
from bench.schema import integer, number
from bench.task import FeatureSpec, Task


class PropagationTask(Task):
    """A task scored by label propagation: it gives the first frame's labels at feature
    resolution (``seed_labels``) and turns propagated labels back into predictions (``decode``).
    It trains nothing, so it refuses trained readouts and has no queries or loss."""

    query_conditioned = True

    def __init__(self, spec: FeatureSpec, readout: str = "propagation", **cfg: Any):
        if READOUTS.get(readout).trained:
            raise ConfigError(f"task {self.name!r} is training-free label propagation: use readout=propagation, "
                              f"not readout={readout}")
        super().__init__(spec, readout, **cfg)
        self.chunk_len = self.frames_per_chunk()

    def seed_labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The first frame's labels at feature resolution: [B, h·w, K] floats."""
        raise NotImplementedError

    def queries(self, dim: int) -> nn.Module:
        raise ConfigError(f"task {self.name!r} has no readout queries: use readout=propagation")

    @property
    def output_dim(self) -> int:
        raise ConfigError(f"task {self.name!r} has no fixed output size: use readout=propagation")

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise ConfigError(f"task {self.name!r} trains nothing: use readout=propagation")

    def frames(self, chunks: torch.Tensor) -> torch.Tensor:
        """Per-chunk values [B, T', ...] -> per-frame values [B, T, ...] (each frame takes its chunk's)."""
        return chunks.repeat_interleave(self.chunk_len, dim=1)


def radius_mask(grid: tuple[int, int], radius: float) -> torch.Tensor:
    """[h·w (target), h·w (source)] bool: source tokens closer than ``radius`` tokens (Euclidean,
    strict, as CRW's ``MaskedAttention`` and RVM's ``D < radius``)."""
    yx = grid_coords(grid).float()
    return torch.cdist(yx, yx) < radius


def context_chunks(t: int, context: int) -> list[int]:
    """Chunks whose labels chunk ``t`` reads: the first, then the ``context`` chunks before ``t``,
    where chunks before the clip's start are the first chunk again (CRW and RVM fill their queue
    of recent frames with copies of the first frame; the copies are radius-restricted)."""
    return [0] + [max(0, c) for c in range(t - context, t)]


@READOUTS.register()
class PropagationReadout(Readout):
    """Label propagation over features [B, T', h·w, C] (see the module docstring). Output:
    labels of every chunk [B, T'·h·w, K], chunk 0 being the task's ``seed_labels``."""

    name = "propagation"
    trained = False
    recipe = {"batch_size": 16}  # clips propagated at once

    def __init__(self, feature_dim: int, task: Task, context: int, topk: int, radius: float | None,
                 reference_grid: int | None, temperature: float):
        super().__init__()
        if not isinstance(task, PropagationTask):
            raise ConfigError(f"readout=propagation needs a label-propagation task (mask_propagation, "
                              f"keypoint_propagation), not {task.name!r}")
        if context < 0 or topk < 1 or temperature <= 0 or (radius is not None and radius <= 0):
            raise ConfigError(f"readout=propagation: need context >= 0, topk >= 1, temperature > 0 and radius > 0 "
                              f"or null (got {context}, {topk}, {temperature}, {radius})")
        self.task, self.context, self.topk, self.temperature = task, int(context), int(topk), float(temperature)
        h, w = task.spec.grid[1:]
        self.radius = None if radius is None else float(radius) * (h / reference_grid if reference_grid else 1.0)
        near = radius_mask((h, w), self.radius) if self.radius is not None else torch.ones(h * w, h * w, dtype=bool)
        self.register_buffer("near", near, persistent=False)

    @classmethod
    def from_task(cls, task: Task, feature_dim: int, context: Annotated[int, integer(0)] = 20,
                  topk: Annotated[int, integer(1)] = 7, radius: Annotated[float | None, number()] = 20.0,
                  reference_grid: Annotated[int | None, integer(1)] = 30,
                  temperature: Annotated[float, number()] = 0.7) -> Readout:
        """The propagation of ``task``'s labels: the first chunk plus the ``context`` chunks before
        each, their ``topk`` most similar tokens within ``radius`` tokens (scaled by h /
        ``reference_grid``; null: no restriction) mixed by a softmax at ``temperature``."""
        return cls(feature_dim, task, context, topk, radius, reference_grid, temperature)

    def forward(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = F.normalize(features.float(), dim=-1)
        labels = [self.task.seed_labels(batch).to(feats)]
        for t in range(1, feats.shape[1]):
            ctx = context_chunks(t, self.context)
            chunks = sorted(set(ctx))  # chunk 0 first; its copies are counted, not repeated
            counts = torch.tensor([ctx[1:].count(c) for c in chunks], device=feats.device)
            labels.append(self.step(feats[:, t], feats[:, chunks], torch.stack([labels[c] for c in chunks], 1), counts))
        return torch.cat(labels, 1)

    def step(self, target: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor,
             counts: torch.Tensor) -> torch.Tensor:
        """Labels [B, N, K] of a target chunk [B, N, C] from distinct context chunks [B, S, N, C]
        with labels [B, S, N, K], the first being chunk 0: softmax over the top-k affinities /
        temperature of the context as ``context_chunks`` lists it, where chunk s appears once
        unrestricted if it is the first and ``counts[s]`` times within the radius. A token seen
        m times fills up to m of the k slots (as its m copies would), at 1/S-th of the cost."""
        aff = torch.einsum("bqc,bsnc->bqsn", target, keys) / self.temperature
        mult = counts.to(aff)[None, :, None] * self.near[:, None].to(aff)  # [N, S, N]
        mult[:, 0] += 1
        aff = aff.masked_fill(mult == 0, float("-inf")).flatten(2)  # [B, N, S·N]
        values, index = aff.topk(min(self.topk, aff.shape[-1]), dim=-1)
        seen = torch.gather(mult.flatten(1).expand(aff.shape[0], -1, -1), 2, index)  # multiplicities
        slots = torch.minimum(seen, (self.topk - (seen.cumsum(-1) - seen)).clamp_min(0))  # copies among the top k
        weights = (values + slots.log()).softmax(-1)  # the first chunk is never masked: a finite entry per row
        flat = key_labels.flatten(1, 2)  # [B, S·N, K]
        picked = torch.gather(flat, 1, index.flatten(1)[..., None].expand(-1, -1, flat.shape[-1]))
        return torch.einsum("bqk,bqkl->bql", weights, picked.view(*index.shape, -1))


def area_downsample(maps: np.ndarray | torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Per-pixel maps [B, H, W, K] -> their mean over each token's pixels [B, h·w, K] (H, W multiples
    of h, w). Upstream resizes with bilinear (RVM) or nearest (DINO) interpolation; the area mean
    keeps each label's share of a token, which the coarse grids of CPU runs need."""
    maps = torch.as_tensor(np.asarray(maps) if isinstance(maps, np.ndarray) else maps).float()
    b, hh, ww, k = maps.shape
    h, w = grid
    if hh % h or ww % w:
        raise ConfigError(f"a {hh}×{ww} label map does not split into a {h}×{w} token grid")
    return maps.view(b, h, hh // h, w, ww // w, k).mean((2, 4)).reshape(b, h * w, k)
