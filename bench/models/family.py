"""What a model name means: a family (registered in ``bench.registry.MODELS``) reads the names it
owns into a :class:`Model`, which builds the encoder and tells the harness and the leaderboard what
they need to know about it (its tubelet, whether it is a reference row, its random twin).

A new family is one file holding a :class:`ModelFamily` subclass decorated with
``@MODELS.register()``: every module of ``bench.models`` is imported when a name is first resolved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from hydra.core.config_store import ConfigStore
from torch import nn

from bench.errors import ConfigError
from bench.registry import model_families

# The kinds of reference rows, in the order a leaderboard lists them: the task's input-blind answer,
# raw pixels with a position code, the untrained encoder, the encoder trained on the world's ground
# truth, and real encoders fetched by ``make weights`` (with their random twins).
REFERENCE_KINDS = ("blind", "pixels", "random", "supervised", "external")


@dataclass(frozen=True)
class Model:
    """A model name read by its family: ``objective`` and ``size`` for zoo names
    (``layerlock_l`` -> layerlock, l), ``base`` for a name made from another (a random twin's
    checkpoint, a timm architecture)."""

    name: str
    family: ModelFamily = field(repr=False)
    objective: str | None = None
    size: str | None = None
    base: str | None = None

    def build(self, checkpoints: str | Path = "checkpoints", seed: int = 0, weights: str | None = None,
              **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
        """(encoder in eval mode, metadata with 'sha256' and 'source'); ``overrides`` set e.g.
        img_size, num_frames, patch_size and frame models' ``token_px``."""
        if weights is not None and not self.family.takes_weights:
            raise ConfigError(f"model.weights is for timm/<arch> models; {self.name!r} reads its weights from "
                              f"paths.checkpoints")
        return self.family.build(self, Path(checkpoints), seed, weights, overrides)

    def tubelet(self, checkpoints: str | Path = "checkpoints") -> tuple[int, int, int] | None:
        """The tubelet (t, h, w) the encoder cuts clips into, known without building it; None for
        models that resize frames or have no encoder."""
        return self.family.tubelet(self, Path(checkpoints))

    def architecture(self, **overrides: Any) -> Any:
        """The ``ViTConfig`` a zoo name trains and builds (``overrides`` set e.g. img_size)."""
        return self.family.architecture(self, overrides)

    @property
    def has_encoder(self) -> bool:
        return self.family.has_encoder

    @property
    def reference(self) -> str | None:
        """The reference kind (one of ``REFERENCE_KINDS``) of a reference row, else None."""
        return self.family.reference(self)

    @property
    def untrained(self) -> bool:
        """Seeded random weights: the zoo's ``random_<size>`` and every random twin."""
        return self.family.untrained(self)

    @property
    def random_row(self) -> str | None:
        """The untrained row this model is tested against: its size's ``random_<size>`` or its own twin."""
        return self.family.random_row(self)


class ModelFamily:
    """The names a family owns and what they build. ``order`` ranks the families that claim a name
    (lower first); a family claims a name by returning a :class:`Model` from :meth:`parse`."""

    name: ClassVar[str]
    order: ClassVar[int] = 50
    has_encoder: ClassVar[bool] = True
    takes_weights: ClassVar[bool] = False  # reads ``model.weights`` (a weights file) instead of a checkpoint

    def parse(self, name: str) -> Model | None:
        raise NotImplementedError

    def build(self, model: Model, checkpoints: Path, seed: int, weights: str | None,
              overrides: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError

    def tubelet(self, model: Model, checkpoints: Path) -> tuple[int, int, int] | None:
        return None

    def architecture(self, model: Model, overrides: dict[str, Any]) -> Any:
        raise ConfigError(f"model {model.name!r} is not a zoo name <family>_<size>: it has no zoo architecture")

    def reference(self, model: Model) -> str | None:
        return None

    def untrained(self, model: Model) -> bool:
        return False

    def random_row(self, model: Model) -> str | None:
        return None

    def config_nodes(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(group, name, node) of each hydra ``model`` node the family offers."""
        return iter(())


def store_configs() -> None:
    """Store every family's hydra nodes (``model=<name>``, ``model=timm/<arch>``) in the ConfigStore."""
    store = ConfigStore.instance()
    for family in model_families():
        for group, name, node in family.config_nodes():
            store.store(group=group, name=name, node=node)
