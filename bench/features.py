"""Frozen feature extraction with an on-disk cache.

Features are computed once per (weights, data, readout depth, transforms) under
``torch.inference_mode`` and stored as one fp16 ``features.npy`` per entry, memory-mapped on reuse.
Entries are ``bench.staging`` cache entries: written in a temp directory and renamed into place
when complete, checked against the shape, dtype, size and sha256 their ``meta.json`` records
before they are served (a damaged one is removed and recomputed), and a full disk is a
``FeatureError`` naming the entry. A dataset whose first clips are a smaller cached split
(``smaller_splits``: the synthetic world) copies those clips' cached features and encodes the rest.
"""
from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from bench.errors import UserError
from bench.models.vit import VideoViT, normalize_video
from bench.staging import EntryWriter, NpyWriter, cached_entry, first_open, open_entry

META, FEATURES = "meta.json", "features.npy"


class FeatureError(UserError, ValueError):
    """Features that cannot be trusted (NaN / Inf) or a cache entry that cannot be written."""


def cache_key(weights_sha: str, data_fingerprint: str, model: VideoViT, transforms: dict[str, Any]) -> str:
    """sha256 over everything that changes the features: weights, data, depth, transforms."""
    payload = {"weights": weights_sha, "data": data_fingerprint, "readout_index": model.readout_index,
               "arch": model.cfg.to_dict(), "transforms": transforms, "version": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_finite(features: np.ndarray, what: str, chunk: int = 64) -> None:
    """Fail before any readout training if features hold NaN or Inf."""
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start:start + chunk], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block).reshape(len(block), -1).all(1))[0, 0])
            raise FeatureError(f"{what}: features of clip {bad} contain NaN or Inf (encoder diverged or bad input)")


@torch.inference_mode()
def extract(model: VideoViT, videos: np.ndarray, out: np.ndarray | NpyWriter, batch_size: int = 8,
            device: str = "cpu", desc: str = "features", first: int = 0) -> None:
    """Encode uint8 clips [N,T,H,W,3] from clip ``first`` on into ``out`` [N,T',h*w,C] (an array
    or an NpyWriter), batch by batch in clip order."""
    model.eval().to(device)
    for start in tqdm(range(first, len(videos), batch_size), desc=desc, unit="batch", leave=False):
        clip = torch.from_numpy(np.array(videos[start:start + batch_size])).to(device)  # a writable copy
        feats = model(normalize_video(clip))
        out[start:start + len(clip)] = feats.to("cpu", torch.float16).numpy()


def cached_features(model: VideoViT, weights_sha: str, dataset: Any, cache_root: str | Path,
                    transforms: dict[str, Any] | None = None, batch_size: int = 8,
                    device: str = "cpu") -> np.ndarray:
    """Features of every clip of ``dataset`` as a read-only fp16 memmap, computed on a miss
    (or when the cached entry fails its checks)."""
    root, transforms = Path(cache_root) / "features", transforms or {}
    key = cache_key(weights_sha, dataset.fingerprint, model, transforms)
    smaller = partial(smaller_entries, root, weights_sha, dataset, model, transforms)
    build = partial(_build, model, dataset, key, batch_size, device, smaller)
    _, arrays = cached_entry(root / key, META, len(dataset), build, FeatureError)
    return arrays[FEATURES]


def smaller_entries(root: Path, weights_sha: str, dataset: Any, model: VideoViT,
                    transforms: dict[str, Any]) -> list[Path]:
    """The feature cache entries of the dataset's smaller cached splits (``smaller_splits``, the
    synthetic world's: their clips are its first ones), largest first."""
    return [root / cache_key(weights_sha, directory.name, model, transforms)
            for _, directory in getattr(dataset, "smaller_splits", list)()]


def _build(model: VideoViT, dataset: Any, key: str, batch_size: int, device: str,
           smaller: Callable[[], list[Path]], entry: EntryWriter) -> dict:
    """Extract into ``entry`` (copying the clips a smaller split's entry holds); return the rest of
    its metadata."""
    videos = dataset.arrays(["video"])["video"]
    _, frames, height, width, _ = videos.shape
    grid = model.grid_for(frames, height, width)
    out = entry.array(FEATURES, (len(videos), grid[0], grid[1] * grid[2], model.cfg.embed_dim), np.float16)
    cached = first_open(smaller(), lambda e: open_entry(e, META)[1][FEATURES])
    first = 0 if cached is None else min(len(cached), len(videos))
    for start in range(0, first, 256):
        out[start:min(first, start + 256)] = cached[start:min(first, start + 256)]
    extract(model, videos, out, batch_size, device, desc=f"features {dataset.fingerprint[:8]}", first=first)
    return {"key": key, "clips": len(videos), "grid": grid}
