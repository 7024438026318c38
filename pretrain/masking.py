"""Per-sample random tubelet masking (SimpleMAE: 95%) and pixel patchification."""
from __future__ import annotations

import torch
from einops import rearrange


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    return max(1, int(round(num_tokens * (1.0 - mask_ratio))))


def random_masking(batch: int, num_tokens: int, mask_ratio: float,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random masks per sample: (ids_keep [B, n_vis], ids_mask [B, N - n_vis]).

    Drawn on the CPU from ``generator`` (part of the resumable state), so the masks of a run do
    not depend on the device.
    """
    noise = torch.rand(batch, num_tokens, generator=generator)
    order = noise.argsort(dim=1)
    n = num_visible(num_tokens, mask_ratio)
    return order[:, :n], order[:, n:]


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, N, C], ids [B, n] -> [B, n, C]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def patchify(video: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """Normalised clip [B, C, T, H, W] -> tubelet pixels [B, N, pt*ph*pw*C] in token order."""
    pt, ph, pw = patch
    return rearrange(video, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)
