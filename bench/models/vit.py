"""Video ViT following the released 4DS backbone (docs/design.md §4), in one readable file.

Conv3d tubelet embedding, learned 3D position embedding (trilinearly interpolated when the
token grid changes) or 3D RoPE, pre-LayerNorm blocks with biased qkv/out projections and a
GELU MLP, attention through ``scaled_dot_product_attention``, no CLS token, no final norm.
LayerNorm eps and the RoPE axis split, base and frequency layout are configurable so that
converted public encoders (V-JEPA 2's RoPE, Hugging Face VideoMAE's eps) run exactly.
Features for readouts follow 4DS's ``EncoderToReadout``: the list ``[tokens, input of block 0,
…, input of block L−1]`` (tokens twice, the last block's output never) is indexed at
``int((L+1) · readout_depth) − 1``; for a 12-block model at 0.95 that is the input of block 10
(0-indexed), i.e. the output of block 9.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp, trunc_normal_
from torch import nn

from bench.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ViTConfig:
    """Architecture of a :class:`VideoViT`; stored verbatim in checkpoint sidecars."""

    embed_dim: int = 192
    depth: int = 8
    num_heads: int = 3
    mlp_dim: int = 768
    patch_size: tuple[int, int, int] = (2, 8, 8)
    img_size: int = 64
    num_frames: int = 16
    in_chans: int = 3
    pos_embed: str = "learned"  # "learned" | "rope" | "sincos" (VideoMAE's fixed table, rebuilt per grid)
    readout_depth: float = 0.95
    rope_split: tuple[float, float, float] = field(default=(0.10, 0.25, 0.25))
    mlp_act: str = "gelu"  # "gelu" (exact, erf) | "gelu_tanh" (tanh approximation: flax's nn.gelu, 4DS)
    norm_eps: float = 1e-6  # LayerNorm eps (Hugging Face VideoMAE configs say 1e-12)
    rope_theta: float = 100.0  # RoPE frequency base (V-JEPA 2: 10000)
    rope_freqs: str = "interleave"  # "interleave" | "tile" (V-JEPA 2), see RoPE3D

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.rope_split = tuple(float(s) for s in self.rope_split)
        self.norm_eps, self.rope_theta = float(self.norm_eps), float(self.rope_theta)
        for name, allowed in (("pos_embed", ("learned", "rope", "sincos")), ("mlp_act", ("gelu", "gelu_tanh")),
                              ("rope_freqs", ROPE_FREQS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(map(repr, allowed))}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        # fields added after the first release are left out at their defaults: older sidecars, cache
        # keys and resume states stay valid
        return {k: v for k, v in d.items() if k not in OPTIONAL_FIELDS or v != OPTIONAL_FIELDS[k]}


ROPE_FREQS = ("interleave", "tile")
OPTIONAL_FIELDS = {"mlp_act": "gelu", "norm_eps": 1e-6, "rope_theta": 100.0, "rope_freqs": "interleave"}


def normalize_video(video: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0,255] float) video [B,T,H,W,3] -> ImageNet-normalised float32 [B,3,T,H,W],
    contiguous: one strided copy into the output layout, then (x/255 − mean)/std in place — the
    same roundings as three out-of-place ops, at half their cost, and a contiguous input that the
    tubelet convolution reads faster than a permuted view."""
    b, t, h, w, c = video.shape
    x = torch.empty((b, c, t, h, w), dtype=torch.float32, device=video.device)
    x.copy_(video.permute(0, 4, 1, 2, 3))
    mean = x.new_tensor(IMAGENET_MEAN).view(c, 1, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(c, 1, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)


def tubelet_grid(patch_size: tuple[int, int, int], frames: int, height: int, width: int) -> tuple[int, int, int]:
    """The token grid (T', h, w) of a clip cut into ``patch_size`` tubelets; an error if they do not tile it."""
    pt, ph, pw = patch_size
    if frames % pt or height % ph or width % pw:
        raise ConfigError(f"clip of {frames}x{height}x{width} is not divisible by the tubelet size {pt}x{ph}x{pw}")
    return frames // pt, height // ph, width // pw


def grid_coords(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """Integer coordinates of every token of a grid (T'×h×w, or any number of axes), raster order: [N, axes]."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))


class RoPE3D(nn.Module):
    """3D rotary position embedding: head channels split between time, height, width and an
    unrotated remainder (LayerLock: 10% / 25% / 25% / 40%; V-JEPA 2: a third each, rounded down
    to even counts). Channel pairs (2i, 2i+1) rotate together; ``freqs`` says which frequency each
    channel of an axis's block gets: "interleave" (standard RoPE: both channels of pair i use
    frequency i) or "tile" (V-JEPA 2: the frequency vector repeated end to end, so channel j uses
    frequency j mod d/2 and a pair mixes two frequencies). Frequencies: theta^(-2k/d), k < d/2."""

    def __init__(self, head_dim: int, split: tuple[float, float, float], theta: float = 100.0,
                 freqs: str = "interleave"):
        super().__init__()
        # channel counts per axis, rounded down to even numbers (rotation acts on pairs); the
        # rounding to 6 decimals keeps float noise (head_dim * (1/3)) from losing a pair
        self.dims = [2 * int(round(head_dim * s, 6) // 2) for s in split]
        self.tile = freqs == "tile"
        for i, d in enumerate(self.dims):
            inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / max(d, 1))
            self.register_buffer(f"freqs{i}", inv, persistent=False)

    def forward(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """coords [..., N, 3] -> (cos, sin) each [..., 1, N, rotated_dim] to broadcast over heads."""
        angles = [coords[..., i, None].float() * getattr(self, f"freqs{i}") for i in range(3)]
        spread = (lambda a: torch.cat((a, a), dim=-1)) if self.tile else (lambda a: a.repeat_interleave(2, dim=-1))
        angles = torch.cat([spread(a) for a in angles], dim=-1).unsqueeze(-3)
        return angles.cos(), angles.sin()

    @staticmethod
    def rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cos, sin = rope
        d = cos.shape[-1]
        rot, rest = x[..., :d], x[..., d:]
        pairs = rot.unflatten(-1, (-1, 2))
        rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((rot * cos + rotated_half * sin, rest), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with biased projections, optional RoPE, SDPA kernel."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        if rope is not None:
            q, k = RoPE3D.rotate(q, rope), RoPE3D.rotate(k, rope)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(x, "b h n d -> b n (h d)"))


@functools.lru_cache(maxsize=8)
def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed position table [n_position, dim] over the flattened (t, h, w) token index
    (``get_sinusoid_encoding_table``: angle = pos / 10000^(2⌊j/2⌋/dim), sin on even channels, cos
    on odd), computed in float64 as upstream (numpy) does, returned as float32."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angles = pos / torch.pow(10000.0, (2 * (j // 2) / dim).double())[None, :]
    return torch.where(j % 2 == 0, angles.sin(), angles.cos()).float()


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, mlp_act: str = "gelu", eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        act = nn.GELU if mlp_act == "gelu" else (lambda: nn.GELU(approximate="tanh"))
        self.mlp = Mlp(dim, hidden_features=mlp_dim, act_layer=act)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class VideoViT(nn.Module):
    """Video ViT encoder. ``forward`` maps a normalised clip [B,3,T,H,W] to features
    [B, T', h*w, C] taken at ``readout_depth``; ``forward_all`` returns every block's input."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.grid = self.grid_for(cfg.num_frames, cfg.img_size, cfg.img_size)
        self.pos_embed, self.rope = None, None
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid, cfg.embed_dim))
            trunc_normal_(self.pos_embed, std=0.02)
        elif cfg.pos_embed == "rope":
            self.rope = RoPE3D(cfg.embed_dim // cfg.num_heads, cfg.rope_split, cfg.rope_theta, cfg.rope_freqs)
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_dim, cfg.mlp_act, cfg.norm_eps)
                                    for _ in range(cfg.depth))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def readout_index(self) -> int:
        """Index into ``forward_all``'s list (entry i = the input of block i) of the features readouts
        use: 4DS's entry ``int((L+1)·readout_depth) − 1`` of ``[tokens, input 0, …, input L−1]``,
        whose entry e ≥ 1 is the input of block e − 1 (entries 0 and 1 are both the tokens)."""
        entry = int((self.cfg.depth + 1) * self.cfg.readout_depth + 1e-6) - 1
        return min(max(entry - 1, 0), self.cfg.depth - 1)

    def grid_for(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return tubelet_grid(self.cfg.patch_size, frames, height, width)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Tubelet-embed a normalised clip [B,3,T,H,W] -> tokens [B,N,C] (with absolute positions
        added: a learned table interpolated if the grid differs, or the sin-cos table built for
        the grid) and the token grid (T', h, w)."""
        x = self.patch_embed(x)
        grid = tuple(x.shape[2:])
        x = rearrange(x, "b c t h w -> b (t h w) c")
        if self.cfg.pos_embed != "rope":
            x = x + self.position_embedding(grid).to(x.dtype)
        return x, grid

    def position_embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """[1, N, C] absolute positions of a ``grid``: VideoMAE's sin-cos table regenerated for it
        (as upstream builds it for the model's size, never resampled), or the learned table,
        resampled trilinearly when the grid differs from the one it was trained on."""
        if self.pos_embed is None:
            return sinusoid_table(math.prod(grid), self.cfg.embed_dim).to(self.patch_embed.weight.device)[None]
        pos = self.pos_embed
        if tuple(grid) != tuple(pos.shape[1:4]):
            pos = F.interpolate(rearrange(pos, "1 t h w c -> 1 c t h w"), size=grid, mode="trilinear",
                                align_corners=False)
            pos = rearrange(pos, "1 c t h w -> 1 t h w c")
        return pos.reshape(1, -1, pos.shape[-1])

    def rope_for(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """RoPE tables for tokens at ``coords`` ([N,3] or [B,N,3]); None with learned positions."""
        if self.rope is None:
            return None
        cos, sin = self.rope(coords)
        if cos.dim() == 3:  # shared coords: add a batch axis
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
        return cos, sin

    def run_blocks(self, x: torch.Tensor, start: int, end: int,
                   rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        for blk in self.blocks[start:end]:
            x = blk(x, rope)
        return x

    def forward_all(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Inputs to blocks 0..upto-1 plus the output of block upto-1 (``upto+1`` tensors [B,N,C])."""
        upto = self.cfg.depth if upto is None else upto
        tokens, grid = self.embed(x)
        rope = self.rope_for(grid_coords(grid, x.device))
        outs = [tokens]
        for blk in self.blocks[:upto]:
            outs.append(blk(outs[-1], rope))
        return outs

    def forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Features of each of ``layers`` from one pass, [B, T', h*w, C] each: layer i is the input
        of block i (``forward_all``'s entry i; i = depth: the last block's output)."""
        t = x.shape[2] // self.cfg.patch_size[0]
        outs = self.forward_all(x, upto=max(layers))
        return [rearrange(outs[i], "b (t n) c -> b t n c", t=t) for i in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features at ``readout_depth``: [B, T', h*w, C]."""
        return self.forward_layers(x, [self.readout_index])[0]
