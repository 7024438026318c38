"""Frozen feature extraction with an on-disk cache.

Features are computed once per (weights, data, readout depth, transforms) under
``torch.inference_mode`` and stored as memory-mapped fp16 ``.npy`` files. An entry is written
into a temp directory and renamed into place when complete, so an interrupted extraction
leaves nothing a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm import tqdm

from bench.errors import UserError
from bench.models.vit import VideoViT, normalize_video
from bench.staging import staged_directory


class FeatureError(UserError, ValueError):
    """Features that cannot be trusted (NaN / Inf) or a cache entry that is malformed."""


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
def extract(model: VideoViT, videos: np.ndarray, out: np.ndarray, batch_size: int = 8,
            device: str = "cpu", desc: str = "features") -> None:
    """Encode uint8 clips [N,T,H,W,3] into ``out`` [N,T',h*w,C] batch by batch."""
    model.eval().to(device)
    for start in tqdm(range(0, len(videos), batch_size), desc=desc, unit="batch", leave=False):
        clip = torch.from_numpy(np.array(videos[start:start + batch_size])).to(device)  # a writable copy
        feats = model(normalize_video(clip))
        out[start:start + len(clip)] = feats.to("cpu", torch.float16).numpy()


def cached_features(model: VideoViT, weights_sha: str, dataset: Any, cache_root: str | Path,
                    transforms: dict[str, Any] | None = None, batch_size: int = 8,
                    device: str = "cpu") -> np.ndarray:
    """Features of every clip of ``dataset`` as a read-only fp16 memmap, computed on a miss."""
    key = cache_key(weights_sha, dataset.fingerprint, model, transforms or {})
    entry = Path(cache_root) / "features" / key
    if not (entry / "features.npy").exists():
        _write_entry(model, dataset, entry, key, batch_size, device)
    return np.load(entry / "features.npy", mmap_mode="r")


def _write_entry(model: VideoViT, dataset: Any, entry: Path, key: str, batch_size: int, device: str) -> None:
    videos = dataset.arrays(["video"])["video"]
    _, frames, height, width, _ = videos.shape
    grid = model.grid_for(frames, height, width)
    with staged_directory(entry, marker="features.npy") as tmp:
        out = open_memmap(tmp / "features.npy", mode="w+", dtype=np.float16,
                          shape=(len(videos), grid[0], grid[1] * grid[2], model.cfg.embed_dim))
        extract(model, videos, out, batch_size, device, desc=f"features {dataset.fingerprint[:8]}")
        out.flush()
        del out
        (tmp / "meta.json").write_text(json.dumps({"key": key, "clips": len(videos), "grid": grid}))
