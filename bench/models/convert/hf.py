"""Reading Hugging Face ``save_pretrained`` folders without transformers.

A folder holds ``config.json`` (the architecture: ``model_type``, sizes, LayerNorm eps,
activation) and the weights: ``model.safetensors``, ``pytorch_model.bin`` (read with
``torch.load(weights_only=True)``), or shards listed in ``model.safetensors.index.json`` /
``pytorch_model.bin.index.json``. Converters rename the encoder's tensors to the names of the
original release's layout and reuse that converter (:meth:`Layout.convert`); everything else in
the folder (decoder, predictor, classifier head, final norm) stays under its own name and so is
listed as dropped in the sidecar.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench.models.checkpoint import brief, load_safetensors, readable_file
from bench.models.convert.common import ConversionError, Params, first_line, read_torch, select_prefix
from bench.models.vit import VideoViT

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# transformers' hidden_act names -> ViTConfig.mlp_act
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def is_count(value: Any) -> bool:
    """An integer >= 1, and not a bool (Python's True is an int; a config's true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def is_positive(value: Any) -> bool:
    """A finite number > 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


COUNT = (is_count, "an integer >= 1")
# every config.json field a converter reads: (test, what the field allows)
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "image_size": COUNT, "num_frames": COUNT, "crop_size": COUNT, "frames_per_clip": COUNT,
    "num_attention_heads": COUNT,
    "layer_norm_eps": (is_positive, "a finite number > 0"),
    "hidden_act": (lambda v: isinstance(v, str) and v in ACTIVATIONS,
                   f"one of {', '.join(map(json.dumps, ACTIVATIONS))} (the MLP activations frozen4d has)"),
    "architectures": (lambda v: v is None or isinstance(v, list) and all(isinstance(a, str) for a in v),
                      "a list of class names"),
}


@dataclass(frozen=True)
class Layout:
    """How a transformers model family is stored and converted: config ``model_type``, a tensor name
    that ends only in the encoder's prefix, renaming ``rules`` to the original release's names, the
    config class's defaults of the fields read (each with its rule in :data:`FIELDS`), the config
    keys of the clip's frame size and length, and the original layout's
    ``encoder(params, img_size, num_frames, num_heads, **arch)`` builder."""

    model_type: str
    marker: str
    rules: list[tuple[str, str]]
    defaults: dict[str, Any]
    clip_keys: tuple[str, str]
    encoder: Callable[..., tuple[VideoViT, dict[str, Any]]]

    def convert(self, src: Path, img_size: int | None = None, num_frames: int | None = None,
                num_heads: int | None = None, **_: Any) -> tuple[VideoViT, dict[str, Any]]:
        """(converted encoder, conversion notes) from a ``save_pretrained`` folder of this family:
        its encoder renamed and built as this layout says; sizes and heads default to the config's."""
        src = Path(src)
        config, state = read_folder(src, self.model_type)
        setting = checked_setting(src / "config.json", config, self.defaults)
        p, prefix = encoder_params(src, state, self.marker, self.rules)
        size, frames = (setting[k] for k in self.clip_keys)
        model, notes = self.encoder(p, size if img_size is None else img_size,
                                    frames if num_frames is None else num_frames,
                                    setting["num_attention_heads"] if num_heads is None else num_heads,
                                    **architecture(setting))
        return model, {"prefix": prefix, "architectures": config.get("architectures"), **notes}


def checked_setting(file: Path, config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``config`` over ``defaults`` once every field read from it (the keys of ``defaults``, and
    ``architectures``, which the sidecar records) has a value its rule in :data:`FIELDS` allows."""
    for key in (*defaults, "architectures"):
        ok, expected = FIELDS[key]
        if key in config and not ok(config[key]):
            raise ConversionError(f"{file}: field {key!r} is {brief(config[key])}; expected {expected}")
    return {**defaults, **config}


def read_folder(path: Path, model_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, state dict) of a ``save_pretrained`` folder whose config.json is for ``model_type``."""
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path}: not a folder; expected a Hugging Face save_pretrained folder "
                              f"(config.json + model.safetensors)")
    config = read_json(path / "config.json", f"{path}: no config.json (not a Hugging Face save_pretrained folder)")
    found = config.get("model_type")
    if found != model_type:
        raise ConversionError(f"{path}: config.json is for model_type {found!r}, this converter reads {model_type!r}")
    return config, read_weights(path)


def read_json(file: Path, missing: str) -> dict[str, Any]:
    if not file.exists():
        raise ConversionError(missing)
    readable_file(file, "a JSON file", ConversionError)
    try:
        obj = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{file}: unreadable JSON ({first_line(exc)})") from exc
    if not isinstance(obj, dict):
        raise ConversionError(f"{file}: expected a JSON object, found {type(obj).__name__}")
    return obj


def read_weights(path: Path) -> dict[str, Any]:
    """The folder's tensors: a single weights file, else the shards of an index."""
    for name in WEIGHTS:
        if (path / name).is_file():
            return read_weight_file(path / name)
        index = path / f"{name}.index.json"
        if index.is_file():
            return read_shards(index)
    raise ConversionError(f"{path}: no weights next to config.json (looked for {', '.join(WEIGHTS)} "
                          f"and their .index.json shard lists)")


def read_weight_file(file: Path) -> dict[str, Any]:
    readable_file(file, "a weights file", ConversionError)
    if file.suffix != ".safetensors":
        state = read_torch(file)
        if not isinstance(state, dict):
            raise ConversionError(f"{file}: expected a state dict, found {type(state).__name__}")
        return state
    return load_safetensors(file, ConversionError)


def read_shards(index: Path) -> dict[str, Any]:
    weight_map = read_json(index, f"{index}: not found").get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConversionError(f"{index}: no 'weight_map' object")
    state: dict[str, Any] = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        if Path(shard).name != shard:  # shards live next to the index
            raise ConversionError(f"{index}: shard {shard!r} is not a file name in the folder")
        state.update(read_weight_file(index.parent / shard))
    return state


def fuse_qkv(path: Path, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """``X.query.P`` / ``X.key.P`` / ``X.value.P`` (P = weight or bias) concatenated into ``X.qkv.P``,
    the fused projection frozen4d (and the original releases) use; returns (state, the names each
    tensor came from)."""
    out: dict[str, Any] = {}
    origin: dict[str, list[str]] = {}
    for name, value in state.items():
        m = re.fullmatch(r"(.*)\.(query|key|value)\.(weight|bias)", name)
        if m is None:
            out[name], origin[name] = value, [name]
        elif m.group(2) == "query":
            parts = [f"{m.group(1)}.{n}.{m.group(3)}" for n in ("query", "key", "value")]
            missing = [n for n in parts if n not in state]
            if missing:
                raise ConversionError(f"{path}: {name} has no matching {', '.join(missing)}")
            fused = f"{m.group(1)}.qkv.{m.group(3)}"
            out[fused], origin[fused] = torch.cat([state[n] for n in parts]), parts
    return out, origin


def encoder_params(path: Path, state: dict[str, Any], marker: str, rules: list[tuple[str, str]]) -> tuple[Params, str]:
    """(Params, prefix): the encoder under the one prefix holding ``marker`` (``videomae.``,
    ``encoder.``, ...) stripped, q/k/v fused and renamed by ``rules`` (regex matched at the start
    of a name, replacement of the matched part, first match wins); every other tensor of the file
    keeps its full name, so :meth:`Params.unused` reports it under the file's own name."""
    inner, prefix = select_prefix(path, state, marker)
    fused, sources = fuse_qkv(path, inner)
    params = {name: value for name, value in state.items() if not name.startswith(prefix) and torch.is_tensor(value)}
    origin = {name: [name] for name in params}
    for name, value in fused.items():
        new = rename(name, rules) or prefix + name
        params[new], origin[new] = value, [prefix + n for n in sources[name]]
    return Params(path, params, origin), prefix


def rename(name: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        if m := re.match(pattern, name):
            return m.expand(replacement) + name[m.end():]
    return None


def architecture(setting: dict[str, Any]) -> dict[str, Any]:
    """ViTConfig fields read from a checked setting (config.json over the model's defaults): the
    LayerNorm eps and the MLP activation."""
    return {"mlp_act": ACTIVATIONS[setting["hidden_act"]], "norm_eps": float(setting["layer_norm_eps"])}
