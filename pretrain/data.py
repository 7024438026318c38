"""Clips -> uint8 batches for pretraining, in a seeded, resumable, rank-sharded order.

All data access of the pretraining package goes through :func:`open_videos` (a uint8 array
[num_clips, T, H, W, 3], memory-mapped for the synthetic world) and :class:`BatchStream`.

Order: epoch ``e`` visits the clips in ``randperm(n)`` drawn from a generator seeded with
``(seed, e)``; a global batch is the next ``batch_size`` indices of that permutation (the last
incomplete batch of an epoch is dropped) and rank ``r`` of ``w`` takes rows ``r::w`` of it
(DistributedSampler-equivalent sharding of each global batch). The position ``(epoch, cursor)``
is the whole resumable state: the permutation is a pure function of it.

Datasets: ``data.name`` is looked up in ``bench.registry.DATASETS`` (the synthetic world
registers as ``synthetic``); ``patterns`` is a tiny built-in procedural dataset (moving
coloured squares over a gradient, generated in memory) for tests and smoke runs.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from bench.errors import ConfigError


class MovingPatterns:
    """Moving coloured squares over a drifting colour gradient: learnable structure in space and
    time, deterministic in (seed, split), generated in memory in a fraction of a second."""

    provides = ("video",)

    def __init__(self, split: str = "train", num_frames: int = 16, resolution: int = 64, train_size: int = 64,
                 test_size: int = 16, seed: int = 0, **_ignored: Any):
        self.split = split
        n = train_size if split == "train" else test_size
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        t = np.arange(num_frames, dtype=np.float32)[:, None, None]
        yy, xx = np.meshgrid(np.arange(resolution, dtype=np.float32), np.arange(resolution, dtype=np.float32),
                             indexing="ij")
        video = np.empty((n, num_frames, resolution, resolution, 3), dtype=np.uint8)
        for i in range(n):
            angle, drift = rng.uniform(0, 2 * np.pi), rng.uniform(-1, 1)
            ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[None] / resolution + drift * t / num_frames
            c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            frames = c0 + (c1 - c0) * (0.5 + 0.5 * np.sin(2 * np.pi * ramp))[..., None]
            for _ in range(2):
                size = rng.integers(resolution // 6, resolution // 3 + 1)
                pos, vel = rng.uniform(0, resolution - size, 2), rng.uniform(-2, 2, 2) * resolution / 32
                color = rng.uniform(0, 255, 3)
                for f in range(num_frames):
                    y0, x0 = (np.abs((pos + vel * f) % (2 * (resolution - size)) - (resolution - size))).astype(int)
                    frames[f, y0:y0 + size, x0:x0 + size] = color
            video[i] = np.clip(frames, 0, 255).astype(np.uint8)
        self._video = video

    def __len__(self) -> int:
        return len(self._video)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"video": self._video[i]}

    def arrays(self, keys) -> dict[str, np.ndarray]:
        return {k: self._video for k in keys if k == "video"}


def open_videos(data_cfg: Mapping[str, Any], root: str, split: str = "train") -> np.ndarray:
    """uint8 clips [num_clips, T, H, W, 3] of the configured dataset (memory-mapped if the
    dataset provides it)."""
    cfg = dict(data_cfg)
    name = cfg.pop("name")
    if name == "patterns":
        ds = MovingPatterns(split=split, **cfg)
    else:
        from bench.registry import DATASETS, UnknownNameError

        try:
            cls = DATASETS.get(name)
        except UnknownNameError as exc:
            raise ConfigError(f"{exc}; for a quick run without the synthetic world use data.name=patterns") from exc
        ds = cls(split=split, root=root, **cfg)
    return ds.arrays(["video"])["video"]


class BatchStream:
    """Global batches of clip indices in a seeded order; yields this rank's uint8 share."""

    def __init__(self, videos: np.ndarray, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} is not divisible by the {world_size} DDP ranks")
        if batch_size > len(videos):
            raise ConfigError(f"batch_size={batch_size} exceeds the {len(videos)} training clips")
        self.videos, self.batch_size, self.seed = videos, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.cursor = 0, 0
        self._perm_epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.videos), generator=g), epoch
        return self._perm

    def next_indices(self) -> np.ndarray:
        """Clip indices of this rank's share of the next global batch (advances the position)."""
        if self.cursor + self.batch_size > len(self.videos):
            self.epoch, self.cursor = self.epoch + 1, 0
        idx = self.permutation(self.epoch)[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx[self.rank::self.world_size].numpy()

    def next(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.videos[self.next_indices()]))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if (state["seed"], state["batch_size"]) != (self.seed, self.batch_size):
            raise ConfigError(f"data state was saved with seed/batch {state['seed']}/{state['batch_size']}, "
                              f"this run uses {self.seed}/{self.batch_size}")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
