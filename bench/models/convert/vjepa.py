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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.models.convert.common import (ConversionError, Params, build, factor_grid, read_torch, select_prefix,
                                         torch_vit_layout)
from bench.models.vit import ViTConfig, VideoViT

KIND = "vjepa"


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


def convert(src: Path, img_size: int | None = None, num_frames: int | None = None,
            num_heads: int | None = None, checkpoint_key: str | None = None,
            **_: Any) -> tuple[VideoViT, dict[str, Any]]:
    """(converted encoder, conversion notes) from a V-JEPA checkpoint file."""
    src = Path(src)
    raw, key = encoder_state(src, read_torch(src), checkpoint_key)
    state, prefix = select_prefix(src, raw, "patch_embed.proj.weight")
    p = Params(src, state)
    w, dim, patch, depth, heads, mlp_dim = torch_vit_layout(
        p, num_heads, hint=" (an image V-JEPA/I-JEPA encoder is not a video encoder)")
    p.require(["pos_embed"])

    table = p.get("pos_embed")
    if table.dim() != 3 or table.shape[0] != 1 or table.shape[2] != dim:
        raise ConversionError(f"{src}: pos_embed has shape {list(table.shape)}, expected [1, N, {dim}]")
    grid = factor_grid(src, int(table.shape[1]), patch, img_size, 16 if num_frames is None else num_frames)
    out: dict[str, torch.Tensor] = {"patch_embed.weight": w, "patch_embed.bias": p.get("patch_embed.proj.bias", (dim,)),
                                    "pos_embed": table.reshape(1, *grid, dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        qkv_b = p.get(b + "attn.qkv.bias", (3 * dim,)) if (b + "attn.qkv.bias") in p else torch.zeros(3 * dim)
        out.update({
            b + "norm1.weight": p.get(b + "norm1.weight", (dim,)), b + "norm1.bias": p.get(b + "norm1.bias", (dim,)),
            b + "attn.qkv.weight": p.get(b + "attn.qkv.weight", (3 * dim, dim)), b + "attn.qkv.bias": qkv_b,
            b + "attn.proj.weight": p.get(b + "attn.proj.weight", (dim, dim)),
            b + "attn.proj.bias": p.get(b + "attn.proj.bias", (dim,)),
            b + "norm2.weight": p.get(b + "norm2.weight", (dim,)), b + "norm2.bias": p.get(b + "norm2.bias", (dim,)),
            b + "mlp.fc1.weight": p.get(b + "mlp.fc1.weight", (mlp_dim, dim)),
            b + "mlp.fc1.bias": p.get(b + "mlp.fc1.bias", (mlp_dim,)),
            b + "mlp.fc2.weight": p.get(b + "mlp.fc2.weight", (dim, mlp_dim)),
            b + "mlp.fc2.bias": p.get(b + "mlp.fc2.bias", (dim,)),
        })
    cfg = ViTConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp_dim, patch_size=patch,
                    img_size=grid[1] * patch[1], num_frames=grid[0] * patch[0], pos_embed="learned")
    model = build(src, cfg, out)
    notes = {"checkpoint_key": key, "prefix": prefix, "position": "3D sin-cos pos_embed from the file",
             "dropped": p.unused()}
    return model, notes
