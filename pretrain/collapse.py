"""Collapse monitors on a fixed probe batch: feature standard deviation and effective rank.

Both are computed on the readout-depth features (what the benchmark's readouts see), with the
tokens of every probe clip as rows: ``feats`` [B, N, C] -> [B*N, C].

- feature std: per-channel standard deviation over tokens, averaged over channels; a
  collapsed encoder maps every token to (nearly) the same vector and this goes to 0.
- effective rank (Roy & Vetterli, 2007): ``exp(H(p))`` with ``p_k = s_k / sum(s)`` the
  normalised singular values of the (uncentred) feature matrix; between 1 and C.
"""
from __future__ import annotations

import torch

from bench.models.vit import VideoViT


def feature_std(feats: torch.Tensor) -> float:
    x = feats.reshape(-1, feats.shape[-1]).double()
    return float(x.std(dim=0).mean())


def effective_rank(feats: torch.Tensor, eps: float = 1e-12) -> float:
    x = feats.reshape(-1, feats.shape[-1]).double()
    s = torch.linalg.svdvals(x)
    p = s / (s.sum() + eps)
    entropy = -(p * torch.log(p + eps)).sum()
    return float(torch.exp(entropy))


@torch.no_grad()
def collapse_metrics(encoder: VideoViT, video: torch.Tensor) -> dict[str, float]:
    """{feat_std, eff_rank} of the encoder's readout-depth features on a normalised clip batch."""
    was_training = encoder.training
    encoder.eval()
    feats = encoder.forward_all(video, upto=encoder.readout_index)[-1].float()
    encoder.train(was_training)
    return {"feat_std": feature_std(feats), "eff_rank": effective_rank(feats)}
