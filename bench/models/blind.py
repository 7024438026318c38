"""The ``blind`` reference row: no encoder at all. Its predictions are the task's input-blind answer
(``Task.blind``: the train split's mean, majority class or static guess), computed by ``bench.run``;
a representation that cannot beat it has shown nothing about its input."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from bench.errors import ConfigError
from bench.models.family import Model, ModelFamily
from bench.registry import MODELS


@MODELS.register()
class Blind(ModelFamily):
    name = "blind"
    order = 0
    has_encoder = False

    def parse(self, name: str) -> Model | None:
        return Model(name, self) if name == self.name else None

    def build(self, model: Model, checkpoints: Path, seed: int, weights: str | None,
              overrides: dict[str, Any]) -> Any:
        raise ConfigError("model 'blind' has no encoder: it is the task's input-blind answer (bench.run computes it)")

    def reference(self, model: Model) -> str | None:
        return "blind"

    def config_nodes(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        yield "model", self.name, {"name": self.name}
