"""Dense correspondence from the world's tracks: what the supervised control learns for the
label-propagation tasks (``mask_propagation``, ``keypoint_propagation``), which train no readout
and so give it no head.

Propagation carries a label from a token to the tokens of later chunks whose L2-normalised
features are most similar; this objective trains exactly that affinity on ground truth. For every
track, the feature sampled at its position in the first chunk where it is visible must pick,
among all tokens of each other chunk where it is visible, the tokens around its true position
there: cross-entropy of a softmax over cosine similarity / ``temperature`` against the bilinear
weights of the true position. It is the contrastive affinity of CRW (Jabri et al., NeurIPS 2020,
ajabri/videowalk) with the world's correspondences in place of a random walk's cycle.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 0.1  # CRW's DAVIS test temperature is 0.05 and DINO's 0.1; training uses the latter


def chunk_tracks(points: torch.Tensor, occluded: torch.Tensor, chunk_len: int,
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracks [B, P, T, 2] (x, y px) and occlusion [B, P, T] -> each chunk's position (that of its
    first frame) [B, P, T', 2] and visibility [B, P, T'] (unoccluded and inside the (H, W) image)."""
    xy, occ = points[:, :, ::chunk_len].float(), occluded[:, :, ::chunk_len].bool()
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < size[1]) & (xy[..., 1] >= 0) & (xy[..., 1] < size[0])
    return torch.nan_to_num(xy), ~occ & inside


def bilinear_targets(xy: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Pixel positions [..., 2] -> their bilinear weights on the token centres of an (h, w) grid
    over (H, W) pixels: [..., h·w], summing to 1 (positions past the outer centres clamp to them)."""
    h, w = grid
    gx = (xy[..., 0] * w / size[1] - 0.5).clamp(0, w - 1)
    gy = (xy[..., 1] * h / size[0] - 0.5).clamp(0, h - 1)
    x0, y0 = gx.floor().clamp(max=w - 2 if w > 1 else 0), gy.floor().clamp(max=h - 2 if h > 1 else 0)
    fx, fy = gx - x0, gy - y0
    out = xy.new_zeros(*xy.shape[:-1], h * w)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            index = ((y0 + dy).clamp(max=h - 1) * w + (x0 + dx).clamp(max=w - 1)).long()
            out.scatter_add_(-1, index[..., None], (wy * wx)[..., None])
    return out


def sample_tokens(features: torch.Tensor, xy: torch.Tensor, grid: tuple[int, int],
                  size: tuple[int, int]) -> torch.Tensor:
    """Features [B, T', h·w, C] sampled bilinearly at pixel positions [B, P, T', 2] (each chunk's
    own): [B, P, T', C]."""
    b, chunks, _, c = features.shape
    maps = features.transpose(2, 3).reshape(b * chunks, c, *grid)
    norm = xy / xy.new_tensor([size[1], size[0]]) * 2 - 1  # align_corners=False: -1, 1 are the image edges
    norm = norm.permute(0, 2, 1, 3).reshape(b * chunks, -1, 1, 2)
    out = F.grid_sample(maps, norm, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(b, chunks, c, -1).permute(0, 3, 1, 2)


def correspondence_loss(features: torch.Tensor, points: torch.Tensor, occluded: torch.Tensor,
                        grid: tuple[int, int], clip: tuple[int, int, int],
                        temperature: float = TEMPERATURE) -> torch.Tensor:
    """The objective of the module docstring on features [B, T', h·w, C] (an (h, w) ``grid``) of
    clips of ``clip`` = (T, H, W) frames and pixels, with tracks [B, P, T, 2] and occlusion
    [B, P, T]; mean over every (track, other visible chunk) pair (0 when there is none)."""
    chunks, size = features.shape[1], clip[1:]
    xy, visible = chunk_tracks(points, occluded, clip[0] // chunks, size)
    source = visible.float().argmax(-1)  # [B, P]: the first chunk where the track is visible
    sampled = sample_tokens(features, xy, grid, size)  # [B, P, T', C]
    query = torch.gather(sampled, 2, source[..., None, None].expand(-1, -1, 1, sampled.shape[-1]))[:, :, 0]
    logits = torch.einsum("bpc,btnc->bptn", F.normalize(query, dim=-1), F.normalize(features, dim=-1)) / temperature
    pairs = visible & (torch.arange(chunks, device=source.device) != source[..., None])
    if not pairs.any():
        return logits.sum() * 0.0
    nll = -(bilinear_targets(xy, grid, size) * logits.log_softmax(-1)).sum(-1)
    return nll[pairs].mean()
