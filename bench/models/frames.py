"""Image encoders applied frame by frame: any timm ViT (DINOv2, DINOv3, SigLIP, ...) as a frozen4d
encoder, the comparison video models are held to (as in representations4d's RVM evaluation).

Each frame goes through the image model on its own (tubelet 1: the time grid is the frame count).
Features are the patch tokens at frozen4d's readout depth, taken with timm's own
``forward_intermediates`` (no final norm); class and register tokens (timm's
``num_prefix_tokens``) are dropped, so a clip gives [B, T, h*w, C] like every frozen4d encoder.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import timm
import torch
import torch.nn.functional as F
from einops import rearrange
from timm.data import resolve_model_data_config
from timm.layers import resample_abs_pos_embed
from torch import nn

from bench.errors import CheckpointError, ConfigError
from bench.files import sha256_file
from bench.models.checkpoint import load_safetensors, load_torch_state_dict
from bench.models.family import Model, ModelFamily
from bench.models.vit import IMAGENET_MEAN, IMAGENET_STD
from bench.registry import MODELS

PREFIX = "timm/"
# timm architectures with a ``model=timm/<arch>`` node: DINOv2 (with and without registers), DINOv3,
# SigLIP and the plain ViTs; ``model.name=timm/<arch>`` works for every other timm ViT.
TIMM_CONFIGS = ("vit_*_dinov2", "vit_*dinov3*", "vit_*_siglip_*", "vit_*_patch16_224")


@dataclass
class FrameConfig:
    """What a :class:`FrameEncoder` built (read from the timm model); part of the feature-cache key."""

    arch: str
    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    embed_dim: int
    depth: int
    num_prefix_tokens: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dynamic_img_size: bool  # timm resizes the position table per input; without it only img_size runs
    readout_depth: float = 0.95
    table_resize: str | None = None  # how a weights file's position table is resized at load (None: no file)

    def to_dict(self) -> dict:
        return {"kind": "timm", **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                                   if v is not None}}


def readout_block(depth: int, readout_depth: float = 0.95) -> int:
    """The block whose output frozen4d reads, by the 4DS rule of ``VideoViT.readout_index``: entry
    ``int((L+1)·readout_depth) − 1`` of [tokens, input of block 0, …, input of block L−1] is the
    output of block entry − 2 (block 9 of a 12-block ViT at 0.95)."""
    block = int((depth + 1) * readout_depth + 1e-6) - 3
    if block < 0:
        raise ConfigError(f"a {depth}-block ViT at readout_depth={readout_depth}: the 4DS rule picks the patch "
                          f"embeddings, which timm's forward_intermediates does not return")
    return block


def token_px(side: int, patch: int, fixed: int | None = None) -> int:
    """Clip pixels per token along a side: ``fixed`` (``features.token_px``), else the divisor of
    ``side`` closest to ``patch`` (the smaller on a tie), so tokens tile the clip exactly and frames
    are resized by the factor nearest 1."""
    if fixed is not None:
        if fixed < 1 or side % fixed:
            raise ConfigError(f"features.token_px={fixed}: must divide the clip side {side} (tokens tile the clip)")
        return fixed
    return min((d for d in range(1, side + 1) if side % d == 0), key=lambda d: (abs(d - patch), d))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weights file as a state dict: ``.safetensors`` through safetensors, ``.pth``/``.pt``/``.bin``
    through a weights-only ``torch.load`` (nothing is unpickled)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise CheckpointError(f"{path}: expected a .safetensors, .pth, .pt or .bin weights file")
    state = load_torch_state_dict(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def load_problem(exc: Exception) -> str:
    """The first line of a timm / torch load failure after torch's header, with a count of the rest."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Error(s) in loading")]
    first = lines[0] if lines else type(exc).__name__
    first = first if len(first) <= 200 else first[:200] + "…"
    return first + (f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else "")


def probe(arch: str, overrides: dict[str, Any]) -> nn.Module:
    """The timm model on the meta device (no memory, no init): its patch size before the real build.
    ``overrides``: timm keyword arguments of a converted checkpoint's architecture (width, depth, ...)."""
    if not timm.is_model(arch):
        raise ConfigError(f"model 'timm/{arch}': timm has no architecture {arch!r} (timm.list_models() lists them)")
    try:
        model = timm.create_model(arch, pretrained=False, device="meta", **overrides)
    except TypeError as exc:
        raise ConfigError(f"model 'timm/{arch}' is not a ViT frozen4d can run frame by frame ({exc})") from exc
    if not all(hasattr(model, a) for a in ("blocks", "patch_embed", "num_prefix_tokens", "forward_intermediates")):
        raise ConfigError(f"model 'timm/{arch}' is not a ViT with patch tokens (blocks, patch_embed, "
                          f"num_prefix_tokens): frozen4d runs timm ViTs frame by frame")
    return model


def resized_table(state: dict[str, torch.Tensor], grid: tuple[int, int], prefix: int) -> dict[str, torch.Tensor]:
    """``state`` with a square learned position table (``pos_embed``, ``prefix`` class/register rows
    first) resized to ``grid`` bicubically without antialiasing, as DINOv2's and transformers' own
    forwards resize it (timm's load filter antialiases, which moves every token a little)."""
    table = state.get("pos_embed")
    if table is None or table.dim() != 3 or table.shape[1] == prefix + grid[0] * grid[1]:
        return state
    side = math.isqrt(table.shape[1] - prefix)
    if side * side != table.shape[1] - prefix:
        return state  # not a square table: timm's filter decides
    return {**state, "pos_embed": resample_abs_pos_embed(table, list(grid), (side, side), prefix, antialias=False)}


def create(arch: str, img_size: tuple[int, int], weights: Path | None, dynamic: bool,
           meta: nn.Module, overrides: dict[str, Any]) -> nn.Module:
    """The timm model built for ``img_size``: random, or with a weights file loaded by timm's own
    pretrained path (its checkpoint filters convert known layouts) after its learned position table
    is resized to the frame grid (:func:`resized_table`); taking other frame sizes too where timm
    offers ``dynamic_img_size`` (non-square clips)."""
    kwargs: dict[str, Any] = dict(overrides, img_size=img_size, **({"dynamic_img_size": True} if dynamic else {}))
    if weights is None:
        return timm.create_model(arch, pretrained=False, **kwargs)
    grid = tuple(s // p for s, p in zip(img_size, meta.patch_embed.patch_size))
    prefix = 0 if getattr(meta, "no_embed_class", False) else meta.num_prefix_tokens
    state = resized_table(read_state_dict(weights), grid, prefix)
    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs)
    except (RuntimeError, KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{weights}: weights do not fit timm/{arch}: {load_problem(exc)}") from exc


class FrameEncoder(nn.Module):
    """A timm image ViT applied to every frame: normalised clip [B,3,T,H,W] -> [B, T, h*w, C].

    Size rule: tasks map a token back to clip pixels as clip / grid, so every token must cover a
    whole s×s block of the clip; s is ``token_px`` (``features.token_px``), else the divisor of the
    side closest to the patch size (:func:`token_px`), and frames are resized bilinearly to
    grid × patch (64×64 with patch 14: 16-px tokens, frames resized to 56×56, a 4×4 grid; with
    ``token_px=8``: 112×112, the 8×8 grid of the zoo's 8-px tubelets; patch 16 or 224×224 with
    patch 14: no resize). timm fixes the position table at creation, so the model is built for
    that size. A weights file trained at another size gets its learned table resampled once at
    load, bicubically without antialiasing (:func:`resized_table`, as DINOv2 and transformers do);
    RoPE models (DINOv3) need none. frozen4d normalises clips with ImageNet mean/std; a model whose pretrained config
    uses others (SigLIP, timm's augreg ViTs: 0.5/0.5) gets its own re-applied here.
    """

    def __init__(self, arch: str, img_size: int = 64, weights: str | Path | None = None, readout_depth: float = 0.95,
                 token_px: int | None = None, overrides: dict[str, Any] | None = None):
        super().__init__()
        meta = probe(arch, overrides or {})
        patch, dynamic = tuple(meta.patch_embed.patch_size), hasattr(meta, "dynamic_img_size")
        self.token_px = token_px
        size = tuple(img_size // self.px(img_size, p) * p for p in patch)
        self.model = create(arch, size, Path(weights) if weights else None, dynamic, meta, overrides or {}).eval()
        data = resolve_model_data_config(self.model)
        self.cfg = FrameConfig(arch=arch, img_size=size, patch_size=patch, embed_dim=self.model.embed_dim,
                               depth=len(self.model.blocks), num_prefix_tokens=self.model.num_prefix_tokens,
                               mean=tuple(data["mean"]), std=tuple(data["std"]), dynamic_img_size=dynamic,
                               readout_depth=readout_depth, table_resize="bicubic" if weights else None)
        self.block = readout_block(self.cfg.depth, readout_depth)
        # ImageNet-normalised x -> (x·σ_in + μ_in − μ) / σ: the identity for ImageNet-normalised models
        mean_in, std_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean, std = torch.tensor(self.cfg.mean), torch.tensor(self.cfg.std)
        self.register_buffer("scale", (std_in / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_in - mean) / std).view(1, 3, 1, 1), persistent=False)

    def px(self, side: int, patch: int) -> int:
        """Clip pixels per token along a side of ``side`` pixels (:func:`token_px`)."""
        return token_px(side, patch, self.token_px)

    @property
    def readout_index(self) -> int:
        """As for a ``VideoViT``: features are the input of block ``readout_index`` (output of ``block``)."""
        return self.block + 1

    def grid_for(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(frames, h, w): one time step per frame, tokens of :func:`token_px` clip pixels."""
        ph, pw = self.cfg.patch_size
        h, w = height // self.px(height, ph), width // self.px(width, pw)
        if not self.cfg.dynamic_img_size and (h * ph, w * pw) != self.cfg.img_size:
            raise ConfigError(f"timm/{self.cfg.arch} runs {self.cfg.img_size[0]}×{self.cfg.img_size[1]} frames only "
                              f"(no dynamic_img_size in timm); a {height}×{width} clip needs {h * ph}×{w * pw}")
        return frames, h, w

    def forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Patch tokens of every frame at each of ``layers`` from one pass, [B, T, h*w, C] each:
        layer i is the output of block i − 1 (as for a ``VideoViT``; timm returns no layer 0)."""
        if min(layers) < 1 or max(layers) > self.cfg.depth:
            raise ConfigError(f"timm/{self.cfg.arch}: feature layers {list(layers)} outside 1..{self.cfg.depth}")
        _, h, w = self.grid_for(*x.shape[2:])
        frames = rearrange(x, "b c t h w -> (b t) c h w") * self.scale + self.shift
        size = (h * self.cfg.patch_size[0], w * self.cfg.patch_size[1])
        if tuple(frames.shape[-2:]) != size:
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
        blocks = sorted({i - 1 for i in layers})  # timm returns them in block order
        tokens = self.model.forward_intermediates(frames, indices=blocks, return_prefix_tokens=False, norm=False,
                                                  stop_early=True, output_fmt="NLC", intermediates_only=True)
        by_block = dict(zip(blocks, tokens))
        return [rearrange(by_block[i - 1], "(b t) n c -> b t n c", b=x.shape[0]) for i in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of every frame at the readout block: [B, T, h*w, C]."""
        return self.forward_layers(x, [self.readout_index])[0]


def build_frame_encoder(arch: str, img_size: int = 64, seed: int = 0, weights: str | Path | None = None,
                        token_px: int | None = None, overrides: dict[str, Any] | None = None,
                        sha256: str | None = None) -> tuple[FrameEncoder, dict[str, Any]]:
    """(encoder in eval mode, metadata with 'sha256' and 'source'): random weights from ``seed``, or
    a local weights file (its sha256, ``sha256`` when the caller has just checked it, keys the
    feature cache)."""
    torch.manual_seed(seed)
    model = FrameEncoder(arch, img_size, weights, token_px=token_px, overrides=overrides).eval()
    if not weights:
        return model, {"sha256": f"timm-random-seed{seed}-{arch}", "source": "random init (timm)"}
    return model, {"sha256": sha256 or sha256_file(Path(weights)), "source": str(weights)}


@MODELS.register()
class Timm(ModelFamily):
    """``timm/<arch>``: any timm image ViT run frame by frame, with seeded weights or ``model.weights``."""

    name = "timm"
    order = 10
    takes_weights = True

    def parse(self, name: str) -> Model | None:
        return Model(name, self, base=name.removeprefix(PREFIX)) if name.startswith(PREFIX) else None

    def build(self, model: Model, checkpoints: Path, seed: int, weights: str | None,
              overrides: dict[str, Any]) -> tuple[FrameEncoder, dict[str, Any]]:
        return build_frame_encoder(model.base, overrides.get("img_size") or 64, seed, weights,
                                   overrides.get("token_px"))

    def config_nodes(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for arch in timm.list_models(list(TIMM_CONFIGS)):
            yield "model/timm", arch, {"name": PREFIX + arch, "weights": None}
