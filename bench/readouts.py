"""Readouts trained on frozen features: the 4DS AttentiveReadout and a LinearReadout.

Both map features [B, T', h*w, C] and a batch (for task-supplied queries) to [B, Q, out].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp
from torch import nn

from bench.registry import READOUTS


class LearnedQueries(nn.Module):
    """``num`` learned queries, N(0, 0.02) initialised as in 4DS, broadcast over the batch."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, num, dim) * 0.02)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.query.expand(batch["features"].shape[0], -1, -1)


def project_once(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``, computed once for inputs broadcast over the batch (learned queries)."""
    if x.shape[0] > 1 and x.stride(0) == 0:
        return linear(x[:1]).expand(x.shape[0], *x.shape[1:-1], linear.out_features)
    return linear(x)


@READOUTS.register("attentive")
class AttentiveReadout(nn.Module):
    """4DS attentive readout: LayerNorm'd features plus a learned temporal embedding are
    attended by queries through one multi-head cross-attention (queries do not attend to each
    other); token = query + Linear(attn); token += MLP(LayerNorm(token)); Linear to the output."""

    def __init__(self, feature_dim: int, num_frames: int, queries: nn.Module, output_dim: int,
                 dim: int | None = None, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        dim = dim or feature_dim
        if dim % num_heads:
            raise ValueError(f"readout dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.queries = queries
        self.norm = nn.LayerNorm(feature_dim)
        self.time_embed = nn.Parameter(torch.randn(1, num_frames, 1, feature_dim) * 0.02)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(feature_dim, 2 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.head = nn.Linear(dim, output_dim)

    def forward(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = rearrange(self.norm(features) + self.time_embed, "b t n c -> b (t n) c")
        query = self.queries(batch)
        q = rearrange(project_once(self.q, query), "b q (h d) -> b h q d", h=self.num_heads)
        k, v = rearrange(self.kv(tokens), "b n (two h d) -> two b h n d", two=2, h=self.num_heads)
        attn = rearrange(F.scaled_dot_product_attention(q, k, v), "b h q d -> b q (h d)")
        token = query + self.attn_out(attn)
        token = token + self.mlp(self.norm_mlp(token))
        return self.head(token)


@READOUTS.register("linear")
class LinearReadout(nn.Module):
    """Linear probe: per-token (dense tasks, Q = T'·h·w) or on mean-pooled features
    (clip-level tasks, Q = 1). Query-conditioned tasks add a linear map of their queries, and
    ``pool_fn(features, batch)`` (the task's ``linear_pool``) picks the features each query reads."""

    def __init__(self, feature_dim: int, output_dim: int, pool: bool, queries: nn.Module | None = None,
                 query_dim: int | None = None, pool_fn=None):
        super().__init__()
        self.pool = pool
        self.pool_fn = pool_fn
        self.norm = nn.LayerNorm(feature_dim, elementwise_affine=False)
        self.head = nn.Linear(feature_dim, output_dim)
        self.queries = queries
        self.query_head = nn.Linear(query_dim, output_dim) if queries is not None else None

    def forward(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.norm(features)
        if self.pool_fn is not None:
            x = self.pool_fn(x, batch)
        else:
            x = x.mean(dim=(1, 2)).unsqueeze(1) if self.pool else rearrange(x, "b t n c -> b (t n) c")
        out = self.head(x)
        if self.queries is not None:
            out = out + self.query_head(self.queries(batch))
        return out


def build_readout(kind: str, task, feature_dim: int, num_heads: int = 8, dim: int | None = None) -> nn.Module:
    """The readout ``kind`` ('attentive' | 'linear') wired to a task's queries and output size."""
    cls = READOUTS.get(kind)
    spec = task.spec
    if cls is AttentiveReadout:
        dim = dim or feature_dim
        readout = AttentiveReadout(feature_dim, spec.grid[0], task.queries(dim), task.output_dim, dim, num_heads)
    elif cls is LinearReadout:
        queries = task.queries(feature_dim) if task.query_conditioned else None
        readout = LinearReadout(feature_dim, task.output_dim, pool=task.clip_level, queries=queries,
                                query_dim=feature_dim, pool_fn=task.linear_pool if task.query_conditioned else None)
    else:
        return cls(feature_dim=feature_dim, task=task)
    if getattr(task, "zero_init_head", False):  # residual outputs: start from the task's "no change" prediction
        for head in (readout.head, getattr(readout, "query_head", None)):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
    return readout
