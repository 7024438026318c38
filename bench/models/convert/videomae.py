"""VideoMAE / VideoMAE-v2 PyTorch checkpoints -> frozen4d ``VideoViT``.

Source layout (MCG-NJU/VideoMAE ``modeling_finetune.py`` / ``modeling_pretrain.py``, and the
same names in OpenGVLab/VideoMAEv2): ``patch_embed.proj`` Conv3d [C, 3, 2, 16, 16];
``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` with ``attn.qkv`` unbiased
and separate ``attn.q_bias`` / ``attn.v_bias`` (the key bias is zero: the source concatenates
``(q_bias, 0, v_bias)``); optional layer scale ``blocks.N.gamma_1`` / ``gamma_2``; a final
``norm`` (pretrain encoder, or finetune without mean pooling) or ``fc_norm`` + ``head``
(finetune with mean pooling). Pretrain checkpoints prefix the encoder with ``encoder.`` and
also hold the decoder (ignored); files may wrap the state dict in ``model`` / ``module``.

Conversion, all exact:
- qkv bias = cat(q_bias, zeros, v_bias) (zeros when the model was built without qkv bias);
- layer scale folded into the residual branch's last linear layer:
  gamma * (W x + b) = (gamma[:, None] * W) x + gamma * b;
- position table: VideoMAE's fixed 1D sinusoid table over the flattened (t, h, w) token index
  (``get_sinusoid_encoding_table``: angle = pos / 10000^(2⌊j/2⌋/C), sin on even channels,
  cos on odd), not stored: the converted model has ``pos_embed="sincos"`` and rebuilds the table
  for the grid of every clip it runs on, as upstream builds it for the size a model is created
  at (a resampled table is a different function: relative difference 0.60 at 224 → 64).
  ``--img-size`` / ``--num-frames`` only set the recorded architecture. A learnable
  ``pos_embed`` [1, N, C] in the file is used as is (and resampled trilinearly at other sizes);
- input normalisation: VideoMAE uses ImageNet mean/std, as frozen4d does: nothing to fold.

The final ``norm`` / ``fc_norm`` (and ``head``) are DROPPED, not folded: frozen4d's ViT has no
final norm by design (docs/design.md §4), readout features come from 95 % depth (before the last
block), which a final norm never touches, and every frozen4d readout LayerNorms its input.
A LayerNorm cannot be folded into the blocks before it. The dropped names are listed in the
sidecar (``conversion.dropped``). Cosine attention (VideoMAE-v2's ``cos_attn``, a learned
``attn.scale``) has no frozen4d equivalent and is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.models.convert.common import (ConversionError, Params, block_tensors, build, factor_grid, read_torch,
                                         select_prefix, torch_vit_layout)
from bench.models.vit import ViTConfig, VideoViT

KIND = "videomae"


def state_dict_of(path: Path, obj: Any) -> dict[str, Any]:
    for key in ("model", "module", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def convert(src: Path, img_size: int | None = None, num_frames: int | None = None,
            num_heads: int | None = None, **_: Any) -> tuple[VideoViT, dict[str, Any]]:
    """(converted encoder, conversion notes) from a VideoMAE checkpoint file."""
    src = Path(src)
    state, prefix = select_prefix(src, state_dict_of(src, read_torch(src)), "patch_embed.proj.weight")
    p = Params(src, state)
    img_size = 224 if img_size is None and "pos_embed" not in p else img_size
    model, notes = encoder_from(p, img_size, 16 if num_frames is None else num_frames, num_heads)
    return model, {"prefix": prefix, **notes}


def encoder_from(p: Params, img_size: int | None, num_frames: int, num_heads: int | None,
                 **arch: Any) -> tuple[VideoViT, dict[str, Any]]:
    """(encoder, notes) from VideoMAE-named parameters, its position table for an ``img_size`` ×
    ``num_frames`` clip; ``arch`` sets further :class:`ViTConfig` fields (LayerNorm eps, activation).
    Shared with the Hugging Face converter, which renames its parameters to these names."""
    w, dim, patch, depth, heads, mlp_dim = torch_vit_layout(p, num_heads)
    if any(f"blocks.{i}.attn.scale" in p for i in range(depth)):
        raise ConversionError(f"{p.path}: cosine attention (attn.scale, VideoMAE-v2 cos_attn) is not supported")
    table, grid, position = position_table(p, patch, dim, img_size, num_frames)
    out: dict[str, torch.Tensor] = {"patch_embed.weight": w, "patch_embed.bias": p.get("patch_embed.proj.bias", (dim,)),
                                    **({"pos_embed": table} if table is not None else {})}
    for i in range(depth):
        out.update(block_tensors(p, f"blocks.{i}.", dim, mlp_dim))
    cfg = ViTConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp_dim, patch_size=patch,
                    img_size=grid[1] * patch[1], num_frames=grid[0] * patch[0],
                    pos_embed="learned" if table is not None else "sincos", **arch)
    model = build(p.path, cfg, out)
    return model, {"position": position, "layer_scale_folded": "blocks.0.gamma_1" in p, "dropped": p.unused()}


def position_table(p: Params, patch: tuple[int, int, int], dim: int, img_size: int | None,
                   num_frames: int) -> tuple[torch.Tensor | None, tuple[int, int, int], str]:
    """(table [1, T', h, w, C], grid, how it was obtained): the file's learnable ``pos_embed``; else
    None — VideoMAE's fixed sinusoid table, which ``VideoViT`` (``pos_embed="sincos"``) rebuilds for
    whatever grid it runs on, as upstream builds it for the model's size."""
    if "pos_embed" in p:  # use_learnable_pos_emb=True
        table = p.get("pos_embed")
        if table.dim() != 3 or table.shape[0] != 1 or table.shape[2] != dim:
            raise ConversionError(f"{p.path}: pos_embed has shape {list(table.shape)}, expected [1, N, {dim}]")
        grid = factor_grid(p.path, int(table.shape[1]), patch, img_size, num_frames)
        return table.reshape(1, *grid, dim), grid, "learned pos_embed from the file"
    if img_size % patch[1] or num_frames % patch[0]:
        raise ConversionError(f"{p.path}: a {num_frames}×{img_size}² clip is not divisible by the tubelet {patch}")
    grid = (num_frames // patch[0], img_size // patch[1], img_size // patch[2])
    return None, grid, "VideoMAE sinusoid table, rebuilt for the grid of every run (pos_embed=sincos)"
