"""4DS (google-deepmind/representations4d) flax parameters in an ``.npz`` -> frozen4d ``VideoViT``.

The release stores the flax parameter tree flattened with ``/`` (``utils/checkpoint_utils.py``:
``npload`` + ``recover_tree``). The demo builds ``nn.Sequential([encoder, encoder2readout,
readout])`` with ``encoder = Model(encoder=Tokenizer(patch_embedding=PatchEmbedding(...),
posenc=LearnedEmbedding()), processor=GeneralizedTransformer(layers=PreNormBlock × L))``, so the
names this converter reads are (``P`` = ``params/layers_0/`` in the released file; any prefix in
front of ``encoder/patch_embedding`` is accepted):

=====================================================================  ===================
``P encoder/patch_embedding/Conv_0/kernel``                            [t, h, w, 3, C]
``P encoder/patch_embedding/Conv_0/bias``                              [C]
``P encoder/posenc/embeddings`` (kauldron ``LearnedEmbedding``)        [T', h', w', C]
``P processor/layers_i/attention_norm/{scale,bias}``                   [C]
``P processor/layers_i/attention/{query,key,value}/kernel``            [C, H, C/H]
``P processor/layers_i/attention/{query,key,value}/bias``              [H, C/H]
``P processor/layers_i/attention/out/kernel``                          [H, C/H, C]
``P processor/layers_i/attention/out/bias``                            [C]
``P processor/layers_i/mlp_norm/{scale,bias}``                         [C]
``P processor/layers_i/mlp/dense_in/{kernel [C, M], bias [M]}``
``P processor/layers_i/mlp/dense_out/{kernel [M, C], bias [C]}``
=====================================================================  ===================

(kauldron ``PreNormBlock`` / ``ImprovedMultiHeadDotProductAttention`` / ``TransformerMLP``.)
Flax ``Dense`` kernels are [in, out] (transposed here), ``DenseGeneral`` kernels carry the
head axes (flattened as (head, channel), the order of frozen4d's qkv rows), the ``Conv``
kernel is [t, h, w, in, out] (-> torch [out, in, t, h, w]). Everything else of the file (the
readout head under ``params/layers_2``) is ignored and listed in the sidecar.

Exactness: 4DS feeds RGB in [0, 1] (the demo divides by 255); frozen4d feeds ImageNet-normalised
frames, so the normalisation is folded into the tubelet embedding (exact: the conv is linear
and unpadded). flax's ``nn.gelu`` is the tanh approximation: the converted model sets
``mlp_act="gelu_tanh"``. flax LayerNorm eps is 1e-6, as frozen4d's. Attention scales queries by
1/√(C/H), as SDPA does. No QK-norm (``query_norm`` / ``key_norm`` are refused), no final norm.

Readout depth: 4DS's ``EncoderToReadout`` indexes ``[tokens, input of block 0, ..., input of
block L-1]`` at ``int(0.95 (L+1)) - 1`` — the input to block 10 of a 12-block model — and so
does frozen4d's ``readout_depth`` (``VideoViT.readout_index``): converted features are 4DS's.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from bench.models.convert.common import (ConversionError, Params, block_count, build, clip_grid,
                                         fold_input_normalization, read_npz, resample_table)
from bench.models.vit import ViTConfig, VideoViT

KIND = "4ds"
MARKER = "encoder/patch_embedding/Conv_0/kernel"
SOURCE_MEAN, SOURCE_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # 4DS input: RGB / 255


def convert(src: Path, img_size: int | None = None, num_frames: int | None = None,
            num_heads: int | None = None, **_: Any) -> tuple[VideoViT, dict[str, Any]]:
    """(converted encoder, conversion notes) from a 4DS ``.npz`` parameter file."""
    src = Path(src)
    arrays = read_npz(src)
    hits = sorted(k[: -len(MARKER)] for k in arrays if k.endswith(MARKER))
    if len(hits) != 1:
        some = ", ".join(list(arrays)[:5]) or "(no arrays)"
        raise ConversionError(f"{src}: missing key '{MARKER}' (under any prefix); the file has: {some}, ..."
                              if not hits else f"{src}: several encoders hold '{MARKER}' (prefixes {hits})")
    prefix = hits[0]
    p = Params(src, arrays)
    enc, proc = prefix + "encoder/", prefix + "processor/"
    kernel = p.get(enc + "patch_embedding/Conv_0/kernel")
    if kernel.dim() != 5 or kernel.shape[3] != 3:
        raise ConversionError(f"{src}: {enc}patch_embedding/Conv_0/kernel has shape {list(kernel.shape)}, "
                              f"expected [t, h, w, 3, C]")
    patch, dim = tuple(int(s) for s in kernel.shape[:3]), int(kernel.shape[4])
    depth = block_count(p, re.escape(proc) + r"layers_(\d+)/")
    names = [f"{proc}layers_{i}/{n}" for i in range(depth) for n in (
        "attention_norm/scale", "attention_norm/bias", "attention/query/kernel", "attention/query/bias",
        "attention/key/kernel", "attention/key/bias", "attention/value/kernel", "attention/value/bias",
        "attention/out/kernel", "attention/out/bias", "mlp_norm/scale", "mlp_norm/bias",
        "mlp/dense_in/kernel", "mlp/dense_in/bias", "mlp/dense_out/kernel", "mlp/dense_out/bias")]
    p.require([enc + "patch_embedding/Conv_0/bias", enc + "posenc/embeddings", *names])
    if any(f"{proc}layers_{i}/attention/query_norm/scale" in p for i in range(depth)):
        raise ConversionError(f"{src}: QK-normalised attention (attention/query_norm) is not supported")
    q_shape = tuple(p.state[f"{proc}layers_0/attention/query/kernel"].shape)
    if len(q_shape) != 3 or q_shape[0] != dim or q_shape[1] * q_shape[2] != dim:
        raise ConversionError(f"{src}: {proc}layers_0/attention/query/kernel has shape {list(q_shape)}, "
                              f"expected [{dim}, heads, {dim}/heads]")
    heads, hd = q_shape[1], q_shape[2]
    if num_heads is not None and num_heads != heads:
        raise ConversionError(f"{src}: the attention kernels have {heads} heads, not --num-heads {num_heads}")
    mlp_dim = int(p.state[f"{proc}layers_0/mlp/dense_in/kernel"].shape[1])

    table = p.get(enc + "posenc/embeddings")
    if table.dim() == 5 and table.shape[0] == 1:
        table = table[0]
    if table.dim() != 4 or table.shape[3] != dim:
        raise ConversionError(f"{src}: {enc}posenc/embeddings has shape {list(table.shape)}, expected [T', h, w, {dim}]")
    native = tuple(int(s) for s in table.shape[:3])
    if native[1] * patch[1] != native[2] * patch[2]:
        raise ConversionError(f"{src}: the position table is for non-square frames {native}; frozen4d needs square")
    grid = tuple(n if g is None else g for n, g in zip(native, clip_grid(src, patch, img_size, num_frames)))
    weight, bias = fold_input_normalization(kernel.permute(4, 3, 0, 1, 2), p.get(enc + "patch_embedding/Conv_0/bias",
                                                                                 (dim,)), SOURCE_MEAN, SOURCE_STD)
    out: dict[str, torch.Tensor] = {"patch_embed.weight": weight, "patch_embed.bias": bias,
                                    "pos_embed": resample_table(table[None], grid)}
    for i in range(depth):
        s, b = f"{proc}layers_{i}/", f"blocks.{i}."
        qkv_w = torch.cat([p.get(s + f"attention/{n}/kernel", (dim, heads, hd)).reshape(dim, dim).T
                           for n in ("query", "key", "value")])
        qkv_b = torch.cat([p.get(s + f"attention/{n}/bias", (heads, hd)).reshape(dim) for n in ("query", "key", "value")])
        out.update({
            b + "norm1.weight": p.get(s + "attention_norm/scale", (dim,)), b + "norm1.bias": p.get(s + "attention_norm/bias", (dim,)),
            b + "attn.qkv.weight": qkv_w, b + "attn.qkv.bias": qkv_b,
            b + "attn.proj.weight": p.get(s + "attention/out/kernel", (heads, hd, dim)).reshape(dim, dim).T,
            b + "attn.proj.bias": p.get(s + "attention/out/bias", (dim,)),
            b + "norm2.weight": p.get(s + "mlp_norm/scale", (dim,)), b + "norm2.bias": p.get(s + "mlp_norm/bias", (dim,)),
            b + "mlp.fc1.weight": p.get(s + "mlp/dense_in/kernel", (dim, mlp_dim)).T,
            b + "mlp.fc1.bias": p.get(s + "mlp/dense_in/bias", (mlp_dim,)),
            b + "mlp.fc2.weight": p.get(s + "mlp/dense_out/kernel", (mlp_dim, dim)).T,
            b + "mlp.fc2.bias": p.get(s + "mlp/dense_out/bias", (dim,)),
        })
    out = {k: v.contiguous() for k, v in out.items()}
    cfg = ViTConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp_dim, patch_size=patch,
                    img_size=grid[1] * patch[1], num_frames=grid[0] * patch[0], pos_embed="learned",
                    mlp_act="gelu_tanh")
    model = build(src, cfg, out)
    unused = p.unused()
    notes = {"prefix": prefix, "position": f"learned posenc {list(native)}" +
             ("" if grid == native else f" resampled to {list(grid)}"),
             "input_normalization": "RGB/255 folded into patch_embed",
             "dropped": unused[:50] + ([f"... {len(unused) - 50} more"] if len(unused) > 50 else [])}
    return model, notes
