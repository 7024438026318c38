"""Frozen feature extraction with an on-disk cache.

Features are computed once per (weights, data, layer, transforms) under ``torch.inference_mode``
and stored as one fp16 ``features.npy`` per entry, memory-mapped on reuse; the layers a probe
grid reads (``feature_layers``) come from one encoder pass, one entry each.
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
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from bench.errors import UserError
from bench.models.vit import VideoViT, normalize_video
from bench.staging import EntryWriter, NpyWriter, cached_entries, first_open, open_entry

META, FEATURES = "meta.json", "features.npy"


class FeatureError(UserError, ValueError):
    """Features that cannot be trusted (NaN / Inf) or a cache entry that cannot be written."""


def cache_key(weights_sha: str, data_fingerprint: str, model: VideoViT, transforms: dict[str, Any],
              layer: int | None = None) -> str:
    """sha256 over everything that changes the features: weights, data, layer (default the
    model's ``readout_index``), transforms."""
    payload = {"weights": weights_sha, "data": data_fingerprint,
               "readout_index": model.readout_index if layer is None else layer,
               "arch": model.cfg.to_dict(), "transforms": transforms, "version": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def feature_layers(model: VideoViT, fractions: Sequence[float] | None = None) -> list[int]:
    """The layers a probe grid reads, sorted: the model's own (``readout_index``, the 4DS rule) and,
    for each fraction f of its L blocks, the input of block round(f·L) (L: the last block's
    output; at least 1, the tokens before any block are no layer). Parameter-free encoders have one."""
    depth = getattr(model.cfg, "depth", 0)
    return sorted({model.readout_index, *(min(depth, max(1, round(f * depth))) for f in (fractions or ()) if depth)})


def check_finite(features: np.ndarray, what: str, chunk: int = 64) -> None:
    """Fail before any readout training if features hold NaN or Inf."""
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start:start + chunk], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block).reshape(len(block), -1).all(1))[0, 0])
            raise FeatureError(f"{what}: features of clip {bad} contain NaN or Inf (encoder diverged or bad input)")


@torch.inference_mode()
def extract(model: VideoViT, videos: np.ndarray, outs: Sequence[np.ndarray | NpyWriter],
            layers: Sequence[int] | None = None, batch_size: int = 8, device: str = "cpu", desc: str = "features",
            first: int = 0) -> None:
    """Encode uint8 clips [N,T,H,W,3] from clip ``first`` on into ``outs[i]`` [N,T',h*w,C] (arrays
    or NpyWriters), the features of ``layers[i]`` (default the model's readout layer), batch by
    batch in clip order, one encoder pass for every layer."""
    model.eval().to(device)
    layers = [model.readout_index] if layers is None else list(layers)
    for start in tqdm(range(first, len(videos), batch_size), desc=desc, unit="batch", leave=False):
        clip = torch.from_numpy(np.array(videos[start:start + batch_size])).to(device)  # a writable copy
        for out, feats in zip(outs, model.forward_layers(normalize_video(clip), layers)):
            out[start:start + len(clip)] = feats.to("cpu", torch.float16).numpy()


def cached_features(model: VideoViT, weights_sha: str, dataset: Any, cache_root: str | Path,
                    transforms: dict[str, Any] | None = None, batch_size: int = 8,
                    device: str = "cpu") -> np.ndarray:
    """Features of every clip of ``dataset`` at the model's readout layer as a read-only fp16
    memmap, computed on a miss (or when the cached entry fails its checks)."""
    return cached_layers(model, weights_sha, dataset, cache_root, [model.readout_index], transforms,
                         batch_size, device)[0]


def cached_layers(model: VideoViT, weights_sha: str, dataset: Any, cache_root: str | Path, layers: Sequence[int],
                  transforms: dict[str, Any] | None = None, batch_size: int = 8,
                  device: str = "cpu") -> list[np.ndarray]:
    """Features of every clip of ``dataset`` at each of ``layers``, one read-only fp16 memmap each;
    the layers missing from the cache come from one encoder pass."""
    root, transforms = Path(cache_root) / "features", transforms or {}
    keys = [cache_key(weights_sha, dataset.fingerprint, model, transforms, layer) for layer in layers]
    smaller = partial(smaller_entries, root, weights_sha, dataset, model, transforms)
    build = partial(_build, model, dataset, dict(zip(keys, layers)), batch_size, device, smaller)
    return [arrays[FEATURES] for _, arrays in cached_entries([root / k for k in keys], META, len(dataset), build,
                                                           FeatureError)]


def smaller_entries(root: Path, weights_sha: str, dataset: Any, model: VideoViT,
                    transforms: dict[str, Any], layer: int) -> list[Path]:
    """The feature cache entries at ``layer`` of the dataset's smaller cached splits
    (``smaller_splits``, the synthetic world's: their clips are its first ones), largest first."""
    return [root / cache_key(weights_sha, directory.name, model, transforms, layer)
            for _, directory in getattr(dataset, "smaller_splits", list)()]


def _build(model: VideoViT, dataset: Any, layers: dict[str, int], batch_size: int, device: str,
           smaller: Callable[[int], list[Path]], entries: Sequence[tuple[Path, EntryWriter]]) -> list[dict]:
    """Extract the layers of the missing ``entries`` (``layers``: entry name -> layer) in one pass,
    copying the clips that smaller splits' entries hold; return the rest of their metadata."""
    videos = dataset.arrays(["video"])["video"]
    _, frames, height, width, _ = videos.shape
    grid = model.grid_for(frames, height, width)
    wanted = [layers[directory.name] for directory, _ in entries]
    outs = [entry.array(FEATURES, (len(videos), grid[0], grid[1] * grid[2], model.cfg.embed_dim), np.float16)
            for _, entry in entries]
    cached = [first_open(smaller(layer), lambda e: open_entry(e, META)[1][FEATURES]) for layer in wanted]
    first = 0 if any(c is None for c in cached) else min(len(videos), *(len(c) for c in cached))
    for out, done in zip(outs, cached):
        for start in range(0, first, 256):
            out[start:min(first, start + 256)] = done[start:min(first, start + 256)]
    extract(model, videos, outs, wanted, batch_size, device, desc=f"features {dataset.fingerprint[:8]}", first=first)
    return [{"key": directory.name, "clips": len(videos), "grid": grid, "layer": layer}
            for (directory, _), layer in zip(entries, wanted)]
