"""Checkpoint IO: safetensors weights + a JSON sidecar (architecture, training config, sha256).

Writes are atomic (temp file, fsync, rename), so a crash never leaves a checkpoint that a
later run would trust. Nothing here unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from bench.models.vit import ViTConfig, VideoViT


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, or disagrees with its sidecar."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sidecar_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(model: VideoViT, path: Path, train_config: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> str:
    """Save encoder weights to ``path`` (.safetensors) and its sidecar; return the sha256."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = safetensors_bytes(state)
    atomic_write_bytes(path, data)
    digest = hashlib.sha256(data).hexdigest()
    sidecar = {"format": "frozen4d-vit/1", "architecture": model.cfg.to_dict(), "sha256": digest,
               "train_config": train_config or {}, **(extra or {})}
    atomic_write_bytes(sidecar_path(path), json.dumps(sidecar, indent=2, sort_keys=True).encode())
    return digest


def read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.exists():
        raise CheckpointError(f"{side}: sidecar JSON missing next to checkpoint {path}")
    try:
        meta = json.loads(side.read_text())
        ViTConfig(**meta["architecture"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{side}: malformed sidecar ({exc})") from exc
    return meta


def load_checkpoint(path: Path, verify: bool = True) -> tuple[VideoViT, dict[str, Any]]:
    """Build the encoder a checkpoint describes and load its weights; return (model, sidecar).

    The sha256 in the sidecar is checked against the file, and the state dict must match the
    sidecar's architecture exactly (no missing or unexpected tensors, same shapes).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    meta = read_sidecar(path)
    if verify and (digest := sha256_file(path)) != meta["sha256"]:
        raise CheckpointError(f"{path}: sha256 {digest[:12]}… does not match its sidecar ({meta['sha256'][:12]}…)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
    model = VideoViT(ViTConfig(**meta["architecture"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(f"{path}: weights do not match the sidecar architecture ({first})") from exc
    model.eval()
    return model, meta


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` state dict without executing code (``weights_only=True``)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads with non-tensor globals land here
        raise CheckpointError(f"{path}: refused to load ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    for key in ("model", "state_dict", "module", "encoder"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return obj
