"""The ``pixels`` reference encoder: each token is its tubelet's raw (ImageNet-normalised) pixels
plus a fixed sin-cos code of its (y, x) position. Its features hold everything a clip shows, at
no learned cost, so a readout on them is the benchmark's "features that contain the answer"
reference: a task on which ``pixels`` cannot beat the input-blind answer tests the readout, not
representations.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from einops import rearrange
from torch import nn

from bench.errors import ConfigError
from bench.models.family import Model, ModelFamily
from bench.models.positions import spatial_code
from bench.models.vit import tubelet_grid
from bench.registry import MODELS


@dataclass
class PixelConfig:
    """Tubelet size and position-code width of a :class:`PixelEncoder` (``embed_dim`` is derived)."""

    patch_size: tuple[int, int, int] = (2, 8, 8)
    in_chans: int = 3
    position_dim: int = 64

    @property
    def embed_dim(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw * self.in_chans + self.position_dim

    def to_dict(self) -> dict:
        return {"kind": "pixels", **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}


class PixelEncoder(nn.Module):
    """Normalised clip [B, 3, T, H, W] -> [B, T', h*w, pixels + position code]; no parameters."""

    readout_index = 0  # part of the feature-cache key, as for a VideoViT

    def __init__(self, cfg: PixelConfig | None = None):
        super().__init__()
        self.cfg = cfg or PixelConfig()

    def grid_for(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return tubelet_grid(self.cfg.patch_size, frames, height, width)

    def forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """``forward`` as the one layer (0) a parameter-free encoder has."""
        if set(layers) != {0}:
            raise ConfigError(f"the pixel encoder has one feature layer, 0, not {list(layers)}")
        return [self(x) for _ in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = self.grid_for(*x.shape[2:])
        pt, ph, pw = self.cfg.patch_size
        pixels = rearrange(x, "b c (t pt) (h ph) (w pw) -> b t (h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)
        code = spatial_code(h, w, self.cfg.position_dim).to(x)
        return torch.cat([pixels, code.expand(*pixels.shape[:2], -1, -1)], dim=-1)


@MODELS.register()
class Pixels(ModelFamily):
    """The ``pixels`` reference row (``model.patch_size`` sets its tubelet)."""

    name = "pixels"
    order = 0

    def parse(self, name: str) -> Model | None:
        return Model(name, self) if name == self.name else None

    def build(self, model: Model, checkpoints: Path, seed: int, weights: str | None,
              overrides: dict[str, Any]) -> tuple[PixelEncoder, dict[str, Any]]:
        patch = overrides.get("patch_size")
        encoder = PixelEncoder(PixelConfig(patch_size=tuple(patch)) if patch else None)
        return encoder, {"sha256": f"pixels-{encoder.cfg.to_dict()}", "source": "raw tubelet pixels + position code"}

    def tubelet(self, model: Model, checkpoints: Path) -> tuple[int, int, int]:
        return PixelConfig().patch_size

    def reference(self, model: Model) -> str:
        return "pixels"

    def config_nodes(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        yield "model", self.name, {"name": self.name}
