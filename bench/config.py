"""Typed configuration of an evaluation, checked before any work starts.

Each readout kind has a schema dataclass, stored as the hydra node ``schema/readout/<kind>`` that
``bench/configs/readout/<kind>.yaml`` extends, so hydra checks the type of every key when it composes
(``readout.epochs=abc`` is refused, naming the key). ``check_config`` then checks what types
cannot say — ranges, choices, the device — so that a bad value ends in one line naming the key,
the value and what is allowed (``ConfigError``, exit 2) instead of a traceback or, worse, a run
that trains nothing and replaces a good record.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from bench.errors import ConfigError
from bench.readouts import PROTOCOLS


@dataclass
class ReadoutSchema:
    """Keys every readout kind has. Schemas hold types only: the defaults live once, in the YAML."""
    kind: str = MISSING
    num_heads: Optional[int] = MISSING
    dim: Optional[int] = MISSING
    batch_size: int = MISSING


@dataclass
class AttentiveSchema(ReadoutSchema):
    protocol: str = MISSING
    epochs: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING


@dataclass
class LinearSchema(ReadoutSchema):
    epochs: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    solver: str = MISSING
    alpha: float = MISSING


@dataclass
class PropagationSchema(ReadoutSchema):
    context: int = MISSING
    topk: int = MISSING
    radius: Optional[float] = MISSING
    reference_grid: Optional[int] = MISSING
    temperature: float = MISSING


SCHEMAS = {"attentive": AttentiveSchema, "linear": LinearSchema, "propagation": PropagationSchema}
for _kind, _schema in SCHEMAS.items():
    ConfigStore.instance().store(group="schema/readout", name=_kind, node=_schema)

Rule = tuple[Callable[[Any], bool], str]


def integer(at_least: int) -> Rule:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= at_least, f"an integer >= {at_least}")


def number(above: float = 0.0, strict: bool = True) -> Rule:
    def ok(v: Any) -> bool:
        real = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return real and (v > above if strict else v >= above)
    return ok, f"a finite number {'>' if strict else '>='} {above:g}"


def choice(options: tuple[str, ...]) -> Rule:
    return (lambda v: v in options, f"one of {list(options)}")


# key (dotted, from the config root) -> rule; a key the config does not have, or holds null, is skipped
RULES: dict[str, Rule] = {
    "seed": integer(0), "model_seed": integer(0), "features.batch_size": integer(1),
    **{f"readout.{k}": integer(1) for k in ("epochs", "batch_size", "num_heads", "dim", "topk", "reference_grid")},
    "readout.context": integer(0), "readout.lr": number(), "readout.weight_decay": number(strict=False),
    "readout.alpha": number(), "readout.radius": number(), "readout.temperature": number(),
    "readout.protocol": choice(PROTOCOLS), "readout.solver": choice(("sgd", "closed_form")),
}
WORLD_RULES: dict[str, Rule] = {f"data.{k}": integer(1) for k in ("num_frames", "resolution", "num_points",
                                                                  "max_objects", "train_size", "test_size")}


def check_device(device: str) -> None:
    """``cpu``, or ``cuda`` / ``cuda:<i>`` when that GPU exists."""
    if str(device) == "cpu":
        return
    match = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if match is None:
        raise ConfigError(f"device={device!r}: expected 'cpu', 'cuda' or 'cuda:<index>'")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(match.group(1) or 0) >= count:
        raise ConfigError(f"device={device!r}: this machine has {count} CUDA device(s); use device=cpu")


def check_config(cfg: DictConfig) -> None:
    """Every range and choice of an evaluation's config, before any data, feature or record is touched."""
    rules = {**RULES, **(WORLD_RULES if cfg.data.get("name") == "synthetic" else {})}
    for key, (ok, allowed) in rules.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={value!r}: expected {allowed}")
    check_device(cfg.device)
    ro = cfg.readout
    if ro.get("dim") and ro.get("num_heads") and ro.dim % ro.num_heads:
        raise ConfigError(f"readout.dim={ro.dim}: expected a multiple of readout.num_heads={ro.num_heads}")
