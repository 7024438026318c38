"""Encoders: a model name resolves through :func:`bench.registry.resolve_model` to the family that
owns it (``bench/models/<family>.py``); :func:`build_encoder` is the one call that builds one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.registry import resolve_model


def build_encoder(name: str, checkpoints: str | Path = "checkpoints", seed: int = 0, weights: str | None = None,
                  **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """(encoder in eval mode, metadata with 'sha256' and 'source') of model ``name``, like
    ``timm.create_model``: ``random_<size>``, random twins and ``timm/<arch>`` are built from
    ``seed`` (``timm/<arch>`` from the ``weights`` file when given), every other name from its
    checkpoint in ``checkpoints``, a missing one an error naming the path and the command that
    produces it; ``overrides`` set e.g. img_size, num_frames, patch_size and ``token_px``."""
    return resolve_model(name).build(checkpoints, seed, weights, **overrides)
