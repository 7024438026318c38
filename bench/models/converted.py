"""Models known by their checkpoint file: any other name whose ``<name>.safetensors`` lies in
``paths.checkpoints`` (converted public models, :mod:`bench.models.convert`; a ``timm/1`` sidecar
makes it a timm image ViT run frame by frame, :mod:`bench.models.frames`), and
``random_<checkpoint name>``, that checkpoint's architecture with seeded weights: its random twin,
the lower bound a converted model is tested against. ``EXTERNAL`` models (fetched by
``make weights``) and their twins are external reference rows of a leaderboard.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from torch import nn

from bench.models.checkpoint import TIMM_FORMAT, checkpoint_path, load_checkpoint, named_sidecar, timm_architecture
from bench.models.external import EXTERNAL
from bench.models.family import Model, ModelFamily
from bench.models.frames import build_frame_encoder
from bench.models.vit import ViTConfig
from bench.models.zoo import random_encoder
from bench.registry import MODELS

TWIN = "random_"


def twin_name(name: str) -> str:
    """The random twin's row of checkpoint ``name``."""
    return TWIN + name


def sidecar(name: str, checkpoints: Path) -> dict[str, Any]:
    how = ("`make weights` fetches the external models" if name in EXTERNAL
           else "convert one with `python -m bench.models.convert` or pass paths.checkpoints=DIR")
    return named_sidecar(name, checkpoints, how)


class Stored(ModelFamily):
    """A name read from checkpoint ``model.base``: with its weights or (``seeded``) its architecture seeded."""

    seeded = False

    def build(self, model: Model, checkpoints: Path, seed: int, weights: str | None,
              overrides: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        meta, path = sidecar(model.base, checkpoints), checkpoint_path(model.base, checkpoints)
        token_px = overrides.pop("token_px", None)
        if meta["format"] == TIMM_FORMAT:
            arch, kwargs = timm_architecture(path, meta)
            return build_frame_encoder(arch, overrides.get("img_size") or 64, seed, None if self.seeded else path,
                                       token_px, kwargs, sha256=meta["sha256"])  # timm_architecture checked it
        if self.seeded:
            given = {k: v for k, v in overrides.items() if v is not None}
            return random_encoder(ViTConfig(**{**meta["architecture"], **given}), seed)
        encoder, meta = load_checkpoint(path)
        return encoder, {**meta, "source": str(path)}

    def tubelet(self, model: Model, checkpoints: Path) -> tuple[int, int, int] | None:
        meta = sidecar(model.base, checkpoints)
        return None if meta["format"] == TIMM_FORMAT else ViTConfig(**meta["architecture"]).patch_size

    def reference(self, model: Model) -> str | None:
        return "external" if model.base in EXTERNAL else None

    def untrained(self, model: Model) -> bool:
        return self.seeded


@MODELS.register()
class Twin(Stored):
    """``random_<checkpoint name>`` (zoo names such as ``random_t`` are claimed first)."""

    name = "twin"
    order = 30
    seeded = True

    def parse(self, name: str) -> Model | None:
        return Model(name, self, base=name.removeprefix(TWIN)) if name.startswith(TWIN) else None

    def config_nodes(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for name in EXTERNAL:
            yield "model", twin_name(name), {"name": twin_name(name)}


@MODELS.register()
class Checkpoint(Stored):
    """Every name no other family claims: its checkpoint must lie in ``paths.checkpoints``."""

    name = "checkpoint"
    order = 90

    def parse(self, name: str) -> Model:
        return Model(name, self, base=name)

    def random_row(self, model: Model) -> str:
        return twin_name(model.name)

    def config_nodes(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for name in EXTERNAL:
            yield "model", name, {"name": name}
