"""Checkpoint IO: safetensors weights + a JSON sidecar (architecture, training config, sha256).

Writes are atomic (``bench.files``: weights and sidecar both reach disk before either is renamed),
so a crash or a full disk never leaves a checkpoint that a later run would trust, and a failed
write keeps the previous checkpoint. Nothing here unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from bench.errors import CheckpointError
from bench.files import atomic_write_files, sha256_file
from bench.models.vit import OPTIONAL_FIELDS, ViTConfig, VideoViT


def readable_file(path: Path, expected: str, error: type[CheckpointError] = CheckpointError) -> Path:
    """``path`` once it opens for reading; else one ``error`` line naming it: not found, a directory
    (``expected`` says what should be there), or no read permission (the file may be fine)."""
    try:
        with open(path, "rb"):
            return Path(path)
    except (FileNotFoundError, NotADirectoryError):
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory; expected {expected}") from None
    except PermissionError:
        raise error(f"{path}: cannot be read (permission denied)") from None


def sidecar_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def checkpoint_path(name: str, checkpoints: str | Path) -> Path:
    """Where model ``name``'s checkpoint lies in a checkpoint directory."""
    return Path(checkpoints) / f"{name}.safetensors"


def named_sidecar(name: str, checkpoints: str | Path, how: str) -> dict[str, Any]:
    """The sidecar of checkpoint ``name``; a missing checkpoint is an error naming the path and
    ``how`` to produce it."""
    path = checkpoint_path(name, checkpoints)
    if not path.exists():
        raise CheckpointError(f"model {name!r}: checkpoint {path} not found; {how}")
    return read_sidecar(path)


def save_checkpoint(model: VideoViT, path: Path, train_config: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> str:
    """Save encoder weights to ``path`` (.safetensors) and its sidecar; return the sha256.
    ``dtype`` (e.g. torch.float16 for checkpoints committed to git) casts every tensor; loading
    casts back to the model's fp32 parameters."""
    path = Path(path)
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    data = safetensors_bytes(state)
    digest = hashlib.sha256(data).hexdigest()
    sidecar = {"format": VIT_FORMAT, "architecture": model.cfg.to_dict(), "sha256": digest,
               "train_config": train_config or {}, **(extra or {})}
    atomic_write_files({path: data, sidecar_path(path): json.dumps(sidecar, indent=2, sort_keys=True).encode()})
    return digest


def save_timm_checkpoint(state: dict[str, torch.Tensor], arch: str, overrides: dict[str, Any], path: Path,
                         extra: dict[str, Any] | None = None) -> str:
    """Save a timm ViT state dict to ``path`` (.safetensors) with a ``timm/1`` sidecar naming the timm
    architecture and its keyword overrides; return the sha256. Such a checkpoint runs frame by frame
    (:mod:`bench.models.frames`) under its file stem, like any checkpoint in ``paths.checkpoints``."""
    path = Path(path)
    data = safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in state.items()})
    digest = hashlib.sha256(data).hexdigest()
    sidecar = {"format": TIMM_FORMAT, "architecture": {"timm": arch, **overrides}, "sha256": digest, **(extra or {})}
    atomic_write_files({path: data, sidecar_path(path): json.dumps(sidecar, indent=2, sort_keys=True).encode()})
    return digest


def timm_architecture(path: Path, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(timm architecture, keyword overrides) of a ``timm/1`` checkpoint, after checking the file's
    sha256 against its sidecar."""
    readable_file(path, "a .safetensors checkpoint file")
    if (digest := sha256_file(path)) != meta["sha256"]:
        raise CheckpointError(f"{path}: sha256 {digest[:12]}… does not match its sidecar ({meta['sha256'][:12]}…)")
    overrides = dict(meta["architecture"])
    return overrides.pop("timm"), overrides


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of checkpoint ``path``, checked against the sidecar schema (``sidecar_problem``)."""
    side = sidecar_path(path)
    if not side.exists():
        raise CheckpointError(f"{side}: sidecar JSON missing next to checkpoint {path}")
    readable_file(side, "the checkpoint's JSON sidecar file")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{side}: not valid JSON ({exc})") from None
    if problem := sidecar_problem(meta):
        raise CheckpointError(f"{side}: {problem}")
    return meta


# ----------------------------------------------------------------------------------------------
# the sidecar schema

VIT_FORMAT, TIMM_FORMAT = "frozen4d-vit/1", "timm/1"  # a VideoViT; a timm image ViT run frame by frame
SIDECAR_FORMATS = (VIT_FORMAT, TIMM_FORMAT)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SIDECAR_KEYS = (  # key, test, what is wrong when the test fails, what is expected
    ("format", lambda v: v in SIDECAR_FORMATS, "is not a known format", " or ".join(map(json.dumps, SIDECAR_FORMATS))),
    ("sha256", lambda v: isinstance(v, str) and SHA256_HEX.fullmatch(v), "is not a sha256 digest",
     "64 lowercase hex digits"),
    ("architecture", lambda v: isinstance(v, dict), "is not an object",
     "an object of ViTConfig fields, or of timm keyword arguments"),
)
JSON_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
              dict: "an object", type(None): "not allowed"}


def sidecar_problem(meta: Any) -> str | None:
    """``'<key>: <what is wrong> (expected ...)'`` for the first way a sidecar breaks the schema, or
    None. Required: ``format`` (a known format), ``sha256`` (64 lowercase hex digits) and
    ``architecture`` (``architecture_problem``); other keys (training config, provenance) are free."""
    if not isinstance(meta, dict):
        return f"(top level): {brief(meta)} is not an object (expected a JSON object)"
    for key, ok, wrong, expected in SIDECAR_KEYS:
        if key not in meta:
            return f"{key}: missing (expected {expected})"
        if not ok(meta[key]):
            return f"{key}: {brief(meta[key])} {wrong} (expected {expected})"
    if meta["format"] == TIMM_FORMAT:
        return timm_architecture_problem(meta["architecture"])
    return architecture_problem(meta["architecture"])


def timm_architecture_problem(arch: dict[str, Any]) -> str | None:
    """The first way a ``timm/1`` architecture is wrong: ``timm`` must name an architecture and every
    other key be a positive finite number (width, depth, heads, patch, MLP ratio); None when fine."""
    if not isinstance(arch.get("timm"), str):
        return f"architecture.timm: {brief(arch.get('timm'))} is not a timm architecture name (expected a string)"
    for key, value in arch.items():
        if key != "timm" and not (conforms(value, float) and value > 0):
            return f"architecture.{key}: {brief(value)} is {json_kind(value)} (expected a positive number)"
    return None


def architecture_problem(arch: dict[str, Any]) -> str | None:
    """The first field of a sidecar's architecture that is unknown to ``ViTConfig``, missing (every
    field but those ``to_dict`` leaves out at their default), or not of its dataclass type; then
    ``ViTConfig``'s own checks. None when it builds a config."""
    hints = get_type_hints(ViTConfig)
    for key in arch:
        if key not in hints:
            return f"architecture.{key}: unknown field (expected one of {', '.join(sorted(hints))})"
    for f in fields(ViTConfig):
        hint = hints[f.name]
        if f.name not in arch and f.name not in OPTIONAL_FIELDS:
            return f"architecture.{f.name}: missing (expected {type_name(hint)})"
        if f.name in arch and not conforms(arch[f.name], hint):
            value = arch[f.name]
            return f"architecture.{f.name}: {brief(value)} is {json_kind(value)} (expected {type_name(hint)})"
    try:
        ViTConfig(**arch)
    except ValueError as exc:
        return f"architecture: {exc}"
    return None


def conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value has type ``hint``: ints are ints (not bools, floats or strings), floats
    are finite numbers, tuples are lists of their length, ``X | None`` takes null."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(conforms(value, a) for a in args)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
    if hint is type(None):
        return value is None
    if hint in (bool, str):
        return isinstance(value, hint)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    raise TypeError(f"sidecar schema: no rule for the type {hint!r} of a ViTConfig field")


def type_name(hint: Any) -> str:
    """``int``, ``float or null``, ``[int, int, int]``, ``[float, ...]``: a type as a sidecar spells it."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return f"[{type_name(args[0])}, ...]"
        return f"[{', '.join(type_name(a) for a in args)}]"
    return "null" if hint is type(None) else hint.__name__


def json_kind(value: Any) -> str:
    """'a string', 'an integer', 'a non-finite number', ...: the JSON type of a value, for messages."""
    if isinstance(value, float) and not math.isfinite(value):
        return "a non-finite number"
    return JSON_KINDS.get(type(value), type(value).__name__)


def brief(value: Any, limit: int = 80) -> str:
    """A JSON value as the file spells it, cut to ``limit`` characters."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_checkpoint(path: Path, verify: bool = True) -> tuple[VideoViT, dict[str, Any]]:
    """Build the encoder a checkpoint describes and load its weights; return (model, sidecar).

    The sha256 in the sidecar is checked against the file, and the state dict must match the
    sidecar's architecture exactly (no missing or unexpected tensors, same shapes).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    readable_file(path, "a .safetensors checkpoint file")
    meta = read_sidecar(path)
    if meta["format"] != VIT_FORMAT:
        raise CheckpointError(f"{path}: a {meta['format']} checkpoint, not a frozen4d VideoViT (run it by its name, "
                              f"model.name={path.stem})")
    if verify and (digest := sha256_file(path)) != meta["sha256"]:
        raise CheckpointError(f"{path}: sha256 {digest[:12]}… does not match its sidecar ({meta['sha256'][:12]}…)")
    state = load_safetensors(path)
    model = VideoViT(ViTConfig(**meta["architecture"]))
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{path}: weights do not match the sidecar architecture ({problem})")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], show: int = 3) -> str | None:
    """One line saying how a state dict differs from the one an architecture expects, or None.

    torch's own message lists every tensor on its own line; a checkpoint built for another
    depth would print dozens, so this counts them and names the first few.
    """
    def some(names: list[str]) -> str:
        return ", ".join(names[:show]) + (", ..." if len(names) > show else "")

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k].shape != found[k].shape)
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing from the file: {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s): {some(unexpected)}")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k} is {tuple(found[k].shape)} in the file, "
                     f"{tuple(expected[k].shape)} in the architecture")
    return "; ".join(parts) or None


def load_safetensors(path: Path, error: type[CheckpointError] = CheckpointError) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors; an unreadable file is one ``error`` line naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f"{path}: unreadable safetensors file ({str(exc).strip().splitlines()[0]})") from exc


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` state dict without executing code (``weights_only=True``)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads with non-tensor globals land here
        raise CheckpointError(f"{path}: refused to load: {torch_load_problem(exc)}") from exc
    for key in ("model", "state_dict", "module", "encoder"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return obj


def torch_load_problem(exc: Exception) -> str:
    """The informative part of a ``torch.load(weights_only=True)`` failure, on one line.

    torch's first line is boilerplate that suggests retrying with ``weights_only=False`` (the
    one thing never to do with an untrusted file); the global it refused is what matters.
    """
    text = str(exc)
    if found := re.search(r"GLOBAL (\S+)", text):
        return (f"the pickle references {found.group(1)}, which a weights-only load never runs (a state dict does not "
                f"need it: the file is corrupt or malicious)")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Weights only load failed" not in ln
             and "WeightsUnpickler" not in ln and not ln.startswith("Check the documentation")]
    return f"not a weights-only torch file ({type(exc).__name__}: {lines[0] if lines else 'no details'})"
