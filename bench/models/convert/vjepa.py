"""V-JEPA encoder checkpoints -> frozen4d ``VideoViT``.

Source layout (facebookresearch/jepa ``src/models/vision_transformer.py`` and
``src/models/utils/{patch_embed,modules}.py``): ``patch_embed.proj`` Conv3d [C, 3, 2, 16, 16];
``pos_embed`` [1, N, C], a fixed 3D sin-cos table kept as a non-trainable parameter (so it is
in the state dict; ``uniform_power`` changes its channel split, which is why it is read, not
regenerated); ``blocks.N.{norm1, attn.qkv (biased), attn.proj, norm2, mlp.fc1, mlp.fc2}``;
a final ``norm``. Training checkpoints are dicts with ``encoder`` / ``target_encoder`` /
``predictor`` / ``opt`` ...; the encoders were saved from DDP around ``MultiMaskWrapper``, so
their keys start with ``module.backbone.``.

Like the V-JEPA evaluation code, the converter reads ``target_encoder`` (the EMA encoder)
unless ``--checkpoint-key encoder`` is given, and strips any prefix in front of
``patch_embed``. V-JEPA's blocks are frozen4d's blocks (pre-LN, eps 1e-6, exact GELU, SDPA with
the default 1/√d scale), its input is ImageNet-normalised like frozen4d's, and V-JEPA
interpolates its table trilinearly (align_corners=False) for other clip sizes exactly as
``VideoViT`` does, so the conversion is exact at every size.

``--num-frames`` (default 16) and ``--img-size`` (default: inferred) describe the clip the table
was built for, to unflatten it into [1, T', h, w, C]. The final ``norm`` is DROPPED (see
``bench.models.convert.videomae`` for why); the dropped names are listed in the sidecar.

V-JEPA 2 (facebookresearch/vjepa2, kind ``vjepa2``) saves the same parameter set under the same
names (``blocks.N.attn.qkv`` ..., ``encoder`` / ``target_encoder`` entries with ``module.backbone.``
prefixes) but positions tokens with 3D RoPE (``src/models/utils/modules.py``, ``RoPEAttention``):
the ``pos_embed`` its files still carry is unused there and DROPPED here. Its RoPE, which
:data:`V2_ROPE` reproduces: each of t, h, w rotates 2·⌊⌊d/3⌋/2⌋ channels of a head of d channels
(in that order, the rest unrotated), frequencies 10000^(-k/(n/2)) for k < n/2 on an axis block of
n channels, and the frequency vector tiled ([f0 … f(n/2-1), f0 … f(n/2-1)]) while pairs (2i, 2i+1)
rotate together. Positions are each token's (t, h, w) on the clip's own grid, as in frozen4d.
V-JEPA 2 ViT-g has 22 heads of 64 channels (``vit_giant_xformers``), the default for width 1408 here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.models.convert.common import (ConversionError, Params, block_tensors, build, clip_grid, factor_grid,
                                         read_torch, select_prefix, torch_vit_layout)
from bench.models.vit import ViTConfig, VideoViT

KIND = "vjepa"
KIND_V2 = "vjepa2"
V2_ROPE: dict[str, Any] = {"pos_embed": "rope", "rope_split": (1 / 3, 1 / 3, 1 / 3), "rope_theta": 10000.0,
                           "rope_freqs": "tile"}
V2_HEADS = {1408: 22}  # ViT-g is vit_giant_xformers: 22 heads of 64 channels (HEADS_BY_WIDTH says 16)
HINT = " (an image V-JEPA/I-JEPA encoder is not a video encoder)"


def encoder_state(path: Path, obj: Any, checkpoint_key: str | None) -> tuple[dict[str, Any], str]:
    """The encoder's state dict from a V-JEPA file and the key it came from."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a dict, found {type(obj).__name__}")
    keys = [checkpoint_key] if checkpoint_key else ["target_encoder", "encoder"]
    for key in keys:
        if isinstance(obj.get(key), dict):
            return obj[key], key
    if checkpoint_key:
        raise ConversionError(f"{path}: no '{checkpoint_key}' entry; top-level keys: {', '.join(map(str, obj))[:200]}")
    return obj, ""  # a bare encoder state dict


def read_encoder(src: Path, checkpoint_key: str | None) -> tuple[Params, dict[str, Any]]:
    """The encoder parameters of a V-JEPA (1 or 2) file, prefix stripped, and notes saying where they were."""
    raw, key = encoder_state(src, read_torch(src), checkpoint_key)
    state, prefix = select_prefix(src, raw, "patch_embed.proj.weight")
    return Params(src, state), {"checkpoint_key": key, "prefix": prefix}


def convert(src: Path, img_size: int | None = None, num_frames: int | None = None,
            num_heads: int | None = None, checkpoint_key: str | None = None,
            **_: Any) -> tuple[VideoViT, dict[str, Any]]:
    """(converted encoder, conversion notes) from a V-JEPA checkpoint file."""
    src = Path(src)
    p, notes = read_encoder(src, checkpoint_key)
    w, dim, patch, depth, heads, mlp_dim = torch_vit_layout(p, num_heads, hint=HINT)
    p.require(["pos_embed"])
    table = p.get("pos_embed")
    if table.dim() != 3 or table.shape[0] != 1 or table.shape[2] != dim:
        raise ConversionError(f"{src}: pos_embed has shape {list(table.shape)}, expected [1, N, {dim}]")
    grid = factor_grid(src, int(table.shape[1]), patch, img_size, 16 if num_frames is None else num_frames)
    out = {"patch_embed.weight": w, "patch_embed.bias": p.get("patch_embed.proj.bias", (dim,)),
           "pos_embed": table.reshape(1, *grid, dim)}
    for i in range(depth):
        out.update(block_tensors(p, f"blocks.{i}.", dim, mlp_dim))
    cfg = ViTConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp_dim, patch_size=patch,
                    img_size=grid[1] * patch[1], num_frames=grid[0] * patch[0], pos_embed="learned")
    model = build(src, cfg, out)
    return model, {**notes, "position": "3D sin-cos pos_embed from the file", "dropped": p.unused()}


def convert_v2(src: Path, img_size: int | None = None, num_frames: int | None = None,
               num_heads: int | None = None, checkpoint_key: str | None = None,
               **_: Any) -> tuple[VideoViT, dict[str, Any]]:
    """(converted encoder, conversion notes) from a V-JEPA 2 checkpoint file (facebookresearch/vjepa2)."""
    src = Path(src)
    p, notes = read_encoder(src, checkpoint_key)
    width = int(p.get("patch_embed.proj.weight").shape[0])
    model, more = rope_encoder(p, 256 if img_size is None else img_size, 64 if num_frames is None else num_frames,
                               num_heads or V2_HEADS.get(width))
    return model, {**notes, **more}


def rope_encoder(p: Params, img_size: int, num_frames: int, num_heads: int | None,
                 **arch: Any) -> tuple[VideoViT, dict[str, Any]]:
    """(encoder, notes) from V-JEPA-named parameters of a V-JEPA 2 encoder: blocks as V-JEPA's, positions
    by V-JEPA 2's RoPE. ``img_size`` / ``num_frames`` only name the nominal clip (RoPE has no table);
    ``arch`` sets further :class:`ViTConfig` fields. Shared with the Hugging Face converter."""
    w, dim, patch, depth, heads, mlp_dim = torch_vit_layout(p, num_heads, hint=HINT)
    clip_grid(p.path, patch, img_size, num_frames)
    if (dim // heads) // 3 < 2:
        raise ConversionError(f"{p.path}: heads of {dim // heads} channels are too narrow for 3D RoPE")
    out = {"patch_embed.weight": w, "patch_embed.bias": p.get("patch_embed.proj.bias", (dim,))}
    for i in range(depth):
        out.update(block_tensors(p, f"blocks.{i}.", dim, mlp_dim))
    cfg = ViTConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp_dim, patch_size=patch,
                    img_size=img_size, num_frames=num_frames, **V2_ROPE, **arch)
    model = build(p.path, cfg, out)
    return model, {"position": "V-JEPA 2 3D RoPE (a third of each head per axis, base 10000, tiled frequencies)",
                   "dropped": p.unused()}
