"""Fixed sin-cos position codes (the MAE / ViT recipe), for readout tokens and pixel features.

Each axis of a coordinate gets an equal share of the channels: half sines, half cosines of the
coordinate times frequencies ``1 / 10000^(k / (d/2))`` (Vaswani et al. 2017; MAE's
``get_2d_sincos_pos_embed`` uses the same table with the axes concatenated).
"""
from __future__ import annotations

import torch

from bench.models.vit import grid_coords


def sincos_code(coords: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """coords [N, D] (grid units) -> [N, dim]; ``dim`` must be divisible by 2·D."""
    n_axes = coords.shape[-1]
    if dim % (2 * n_axes):
        raise ValueError(f"sin-cos code of {dim} channels does not split over {n_axes} axes (need a multiple of {2 * n_axes})")
    half = dim // (2 * n_axes)
    omega = 1.0 / temperature ** (torch.arange(half, dtype=torch.float32) / half)
    angles = coords.float()[..., None] * omega  # [N, D, half]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def spatial_code(h: int, w: int, dim: int) -> torch.Tensor:
    """Sin-cos code of every token of an h×w grid, row-major: [h*w, dim]."""
    return sincos_code(grid_coords((h, w)), dim)
