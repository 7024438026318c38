"""Readouts trained on frozen features: the 4DS AttentiveReadout and a LinearReadout, and what
every readout declares (``Readout``).

Both map features [B, T', h*w, C] and a batch (for task-supplied queries) to [B, Q, out].

The attentive readout has two protocols (``readout.protocol``):
- ``frozen4d`` (default): tokens get their spatio-temporal position from the readout — the 4DS
  learned temporal embedding plus a fixed sin-cos code of (y, x) — because a harness that
  compares RoPE, untrained and pixel encoders cannot count on features carrying absolute position;
  and queries that have a place (a depth patch, a query point, a box: ``Task.query_positions``)
  attend with a Gaussian locality bias around it, −½·γ_h·‖Δ‖² in token units with a learned
  width per head (initial σ from half a token to the whole grid), so a few hundred steps suffice
  to route each query to its tokens instead of learning the routing from N(0, 0.02) queries;
  and queries that follow something (a query point: ``Task.query_appearance``) also get its
  features — the token under the point in the time chunk of its query frame — through a learned
  projection, so attention can look for it (TAP-Net / TAPIR start from the features at the query
  point; a position-only query cannot know what it tracks);
- ``4ds``: exactly the released 4DS readout — features resized in time to the clip's frame
  count by cubic interpolation (``cubic_time_resize``), a learned temporal embedding per frame,
  no spatial position (4DS encoders carry learned absolute positions).
"""
from __future__ import annotations

import math
import typing
from typing import Annotated, Any, ClassVar, Literal, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from hydra.core.config_store import ConfigStore
from timm.layers import Mlp
from torch import nn

from bench.errors import ConfigError
from bench.fit import Recipe
from bench.models.positions import spatial_code
from bench.models.vit import grid_coords
from bench.registry import READOUTS
from bench.schema import integer, options, signature_node

Protocol = Literal["frozen4d", "4ds"]
PROTOCOLS = typing.get_args(Protocol)


class Readout(nn.Module):
    """What a readout declares, once: its ``name``; whether it is ``trained``; whether dense tasks lay
    its outputs one per feature token (``token_outputs``); its fitting ``recipe`` (keys of
    :class:`bench.fit.Recipe` with this readout's defaults); and its options, the keywords of its
    ``from_task``. Registering it (``@READOUTS.register()``) stores the typed hydra node
    ``readout/<name>`` of all of them (``register_readout_config``)."""

    name: ClassVar[str]
    trained: ClassVar[bool] = True
    token_outputs: ClassVar[bool] = False
    recipe: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_task(cls, task: Any, feature_dim: int, **options: Any) -> Readout:
        raise NotImplementedError


def readout_options(cls: type[Readout]) -> dict[str, tuple[Any, Any]]:
    """{option: (type hint, default)}: the keywords of ``cls.from_task`` after the task and width."""
    return options(cls.from_task, skip=("task", "feature_dim"))


def readout_fields(cls: type[Readout]) -> dict[str, tuple[Any, Any]]:
    """Every ``readout.*`` key of ``cls`` but ``kind``: its options, then its recipe."""
    hints = typing.get_type_hints(Recipe, include_extras=True)
    return {**readout_options(cls), **{key: (hints[key], value) for key, value in cls.recipe.items()}}


def readout_recipe(cls: type[Readout], config: Mapping[str, Any]) -> Recipe:
    """The fitting recipe a readout config holds (keys ``cls`` does not declare keep their defaults)."""
    return Recipe(**{key: config[key] for key in cls.recipe})


def register_readout_config(cls: type[Readout]) -> type[Readout]:
    """Store the typed hydra node ``readout/<cls.name>``: ``kind`` and every ``readout_fields`` key."""
    node = signature_node(f"{cls.__name__}Config", readout_fields(cls), kind=cls.name)
    ConfigStore.instance().store(group="readout", name=cls.name, node=node)
    return cls


def keys_cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = −0.5 at distances |x| (jax.image's 'cubic')."""
    x = x.abs()
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return torch.where(x >= 2.0, torch.zeros_like(x), torch.where(x >= 1.0, far, near))


def cubic_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """[out, in] weights of ``jax.image.resize(..., method='cubic')`` along one axis (half-pixel
    centres, weights renormalised over the input samples, antialiased when shrinking), as
    jax/_src/image/scale.py ``compute_weight_mat`` builds them; 4DS resizes features with it."""
    inv_scale = in_size / out_size
    kernel_scale = max(inv_scale, 1.0)
    sample = (torch.arange(out_size, dtype=torch.float64) + 0.5) * inv_scale - 0.5
    weights = keys_cubic((sample[:, None] - torch.arange(in_size, dtype=torch.float64)) / kernel_scale)
    total = weights.sum(1, keepdim=True)
    weights = torch.where(total.abs() > 1000 * torch.finfo(torch.float32).eps, weights / total, 0.0)
    inside = (sample >= -0.5) & (sample <= in_size - 0.5)
    return (weights * inside[:, None]).float()


def cubic_time_resize(features: torch.Tensor, frames: int) -> torch.Tensor:
    """Features [B, T', N, C] -> [B, frames, N, C] by jax-exact cubic interpolation in time."""
    if features.shape[1] == frames:
        return features
    weights = cubic_resize_matrix(features.shape[1], frames).to(features)
    return torch.einsum("st,btnc->bsnc", weights, features)


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


@READOUTS.register()
class AttentiveReadout(Readout):
    """4DS attentive readout: LayerNorm'd features plus position (see the module docstring for the
    two protocols) are attended by queries through one multi-head cross-attention (queries do not
    attend to each other); token = query + Linear(attn); token += MLP(LayerNorm(token)); Linear
    to the output. ``grid`` is the feature grid (T', h, w), ``frames`` the clip's frame count."""

    def __init__(self, feature_dim: int, grid: tuple[int, int, int], queries: nn.Module, output_dim: int,
                 dim: int | None = None, num_heads: int = 8, mlp_ratio: float = 4.0,
                 protocol: str = "frozen4d", frames: int | None = None, query_positions=None,
                 query_appearance=None):
        super().__init__()
        dim = dim or feature_dim
        if dim % num_heads:
            raise ConfigError(f"readout dim {dim} is not divisible by num_heads={num_heads}")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"readout.protocol={protocol!r}: expected one of {list(PROTOCOLS)}")
        self.num_heads = num_heads
        self.queries = queries
        self.norm = nn.LayerNorm(feature_dim)
        self.frames = (frames or grid[0]) if protocol == "4ds" else None  # time resize target (4DS only)
        self.time_embed = nn.Parameter(torch.randn(1, self.frames or grid[0], 1, feature_dim) * 0.02)
        space = spatial_code(grid[1], grid[2], feature_dim)[None, None] if protocol == "frozen4d" else None
        self.register_buffer("space_code", space, persistent=False)
        self.query_positions = query_positions if protocol == "frozen4d" else None
        if self.query_positions is not None:
            sigma = torch.logspace(math.log10(0.5), math.log10(2 * max(grid)), num_heads)  # token units, per head
            gamma = 1.0 / sigma ** 2
            self.locality = nn.Parameter(gamma + torch.log(-torch.expm1(-gamma)))  # softplus⁻¹(γ)
            self.register_buffer("token_pos", token_positions(grid), persistent=False)
            self.register_buffer("grid_scale", torch.tensor(grid, dtype=torch.float32), persistent=False)
        self.query_appearance = query_appearance if protocol == "frozen4d" else None
        self.appearance = nn.Linear(feature_dim, dim) if self.query_appearance is not None else None
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(feature_dim, 2 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.head = nn.Linear(dim, output_dim)

    name = "attentive"
    recipe = {"epochs": 20, "batch_size": 16, "lr": 1.0e-3, "weight_decay": 0.05}

    @classmethod
    def from_task(cls, task, feature_dim: int, num_heads: Annotated[int, integer(1)] = 8,
                  dim: Annotated[int | None, integer(1)] = None, protocol: Protocol = "frozen4d") -> Readout:
        """The readout of ``task`` on features ``feature_dim`` wide (``dim``: the readout's width,
        None for the features'): its queries, output size, grid, frame count and (frozen4d
        protocol) the places its queries attend around; ``protocol="4ds"`` is the released 4DS
        readout exactly."""
        spec = task.spec
        return cls(feature_dim, spec.grid, task.queries(dim or feature_dim), task.output_dim, dim or feature_dim,
                   num_heads, protocol=protocol, frames=spec.clip[0],
                   query_positions=task.query_positions if task.has_query_positions else None,
                   query_appearance=task.query_appearance if task.has_query_appearance else None)

    def forward(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.frames is not None:
            features = cubic_time_resize(features, self.frames)
        tokens = self.norm(features) + self.time_embed
        if self.space_code is not None:
            tokens = tokens + self.space_code
        tokens = rearrange(tokens, "b t n c -> b (t n) c")
        query = self.queries(batch)
        if self.appearance is not None:  # sampled from the frozen features, then normalised: no gradient to sample
            query = query + self.appearance(self.norm(self.query_appearance(features, batch)))
        q = rearrange(project_once(self.q, query), "b q (h d) -> b h q d", h=self.num_heads)
        k, v = rearrange(self.kv(tokens), "b n (two h d) -> two b h n d", two=2, h=self.num_heads)
        attn = self.attend(q, k, v, batch)
        attn = rearrange(attn, "b h q d -> b q (h d)")
        token = query + self.attn_out(attn)
        token = token + self.mlp(self.norm_mlp(token))
        return self.head(token)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Multi-head cross-attention [B, H, Q, d], with the locality bias −½·γ_h·‖p_q − p_n‖² (token
        units) when queries are placed. The bias enters as 4 extra channels of q and k —
        (γ_h·√d·p_q, −½γ_h·√d)·(p_n, ‖p_n‖²) = √d·(γ_h p_q·p_n − ½γ_h‖p_n‖²), which differs from the
        bias by a per-query constant that softmax ignores — so SDPA keeps its fused kernel (an
        additive mask sends it to the 2.4× slower unfused path)."""
        if self.query_positions is None:
            return F.scaled_dot_product_attention(q, k, v)
        d = q.shape[-1]
        p_q = self.query_positions(batch) * self.grid_scale  # [B|1, Q, 3] token units
        p_n = self.token_pos * self.grid_scale  # [N, 3]
        g = (F.softplus(self.locality) * math.sqrt(d))[:, None, None]  # [H, 1, 1]
        q_pos = torch.cat([g * p_q[:, None], (-0.5 * g).expand(*p_q.shape[:1], -1, p_q.shape[1], 1)], -1)
        k_pos = torch.cat([p_n, p_n.square().sum(-1, keepdim=True)], -1)
        q = torch.cat([q, q_pos.expand(q.shape[0], -1, -1, -1)], -1)
        k = torch.cat([k, k_pos.expand(*k.shape[:3], 4)], -1)
        v = F.pad(v, (0, 4))
        return F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(d))[..., :d]


def token_positions(grid: tuple[int, int, int]) -> torch.Tensor:
    """Normalised (t, y, x) centres in [0, 1] of every token of a T'×h×w grid, raster order: [N, 3]."""
    return (grid_coords(grid).float() + 0.5) / torch.tensor(grid, dtype=torch.float32)


@READOUTS.register()
class LinearReadout(Readout):
    """Linear probe: per-token (dense tasks, Q = T'·h·w) or on mean-pooled features
    (clip-level tasks, Q = 1). Query-conditioned tasks add a linear map of their queries, and
    ``pool_fn(features, batch)`` (the task's ``linear_pool``) picks the features each query reads.
    Clip-level tasks can fit it in closed form (``solver: closed_form``)."""

    name = "linear"
    token_outputs = True
    recipe = {"epochs": 20, "batch_size": 16, "lr": 3.0e-3, "weight_decay": 0.0, "solver": "sgd", "alpha": 1.0}

    def __init__(self, feature_dim: int, output_dim: int, pool: bool, queries: nn.Module | None = None,
                 query_dim: int | None = None, pool_fn=None):
        super().__init__()
        self.pool = pool
        self.pool_fn = pool_fn
        self.norm = nn.LayerNorm(feature_dim, elementwise_affine=False)
        self.head = nn.Linear(feature_dim, output_dim)
        self.queries = queries
        self.query_head = nn.Linear(query_dim, output_dim) if queries is not None else None

    @classmethod
    def from_task(cls, task, feature_dim: int) -> Readout:
        """The probe of ``task``: per token or pooled (``clip_level``), query-conditioned through
        the task's ``linear_pool`` when its queries carry inputs."""
        conditioned = task.query_conditioned
        return cls(feature_dim, task.output_dim, pool=task.clip_level,
                   queries=task.queries(feature_dim) if conditioned else None, query_dim=feature_dim,
                   pool_fn=task.linear_pool if conditioned else None)

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


def build_readout(kind: str, task, feature_dim: int, **options) -> nn.Module:
    """The registered readout ``kind`` built for ``task`` by its ``from_task``, from the ``options``
    it declares (others, e.g. an attentive readout's ``num_heads`` given to a linear probe, do not
    apply to it and are dropped). Tasks with ``zero_init_head`` start from a zero output: their
    "no change" prediction."""
    cls = READOUTS.get(kind)
    readout = cls.from_task(task, feature_dim, **{k: v for k, v in options.items() if k in readout_options(cls)})
    if getattr(task, "zero_init_head", False):  # residual outputs: start from the task's "no change" prediction
        for head in (getattr(readout, "head", None), getattr(readout, "query_head", None)):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
    return readout
