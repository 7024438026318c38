"""Shared fixtures: a tiny in-memory dataset with the world's interface, for harness tests."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest


class TinyClips:
    """Random uint8 clips with a depth map that is a known function of brightness."""

    provides = ("video", "depth", "label")
    split = "train"

    def __init__(self, n: int = 6, frames: int = 4, size: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        video = rng.integers(0, 256, (n, frames, size, size, 3), dtype=np.uint8)
        self._arrays = {"video": video,
                        "depth": 1.0 + video.mean(-1).astype(np.float32) / 64.0,
                        "label": (np.arange(n) % 3).astype(np.int64)}
        self.fingerprint = hashlib.sha256(f"tiny-{n}-{frames}-{size}-{seed}".encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._arrays["video"])

    def arrays(self, keys):
        return {k: self._arrays[k] for k in keys}


@pytest.fixture
def tiny_clips() -> TinyClips:
    return TinyClips()


@pytest.fixture
def tiny_vit():
    from bench.models.vit import ViTConfig, VideoViT
    import torch

    torch.manual_seed(0)
    return VideoViT(ViTConfig(embed_dim=32, depth=4, num_heads=2, mlp_dim=64, patch_size=(2, 4, 4),
                              img_size=16, num_frames=4)).eval()
