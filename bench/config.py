"""Typed configuration of an evaluation, checked before any work starts.

Every key has a type that hydra checks when it composes (``readout.epochs=abc`` is refused, naming
the key): the top level is ``BenchSchema`` (node ``schema/bench``, extended by
``configs/bench.yaml``), each readout a node derived from its class
(``bench.readouts.register_readout_config``: its ``from_task`` keywords and its fitting recipe),
each dataset a node derived from its constructor's signature (``schema/data/<name>``; the
synthetic world's from ``WorldConfig``) and each task one derived from its ``__init__``
(``bench.task.register_task_config``). ``check_config`` then checks what types cannot say —
ranges, choices, the device, a clip the model's tubelets tile — so that a bad value ends in one line
naming the key, the value and what is allowed (``ConfigError``, exit 2) instead of a traceback
or, worse, a run that trains nothing and replaces a good record.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from bench.errors import ConfigError
from bench.readouts import readout_fields
from bench.registry import DATASETS, READOUTS, TASKS, resolve_model
from bench.schema import INT64_MAX, Rule, integer, number, options, rule_of, signature_node


@dataclass
class FeaturesSchema:
    batch_size: int = MISSING
    token_px: Optional[int] = MISSING  # frame models: clip pixels per token (null: nearest the patch)


@dataclass
class SelectSchema:
    """The probe grid and how its head is chosen (``bench.grid``): null lists mean the one value
    the readout or model already has."""
    layers: Optional[List[float]] = MISSING  # fractions of the encoder's depth, besides its own layer
    lr: Optional[List[float]] = MISSING
    weight_decay: Optional[List[float]] = MISSING
    alpha: Optional[List[float]] = MISSING  # closed-form probes' L2 weights
    val_fraction: float = MISSING  # train clips held out to choose among several heads


@dataclass
class PathsSchema:
    cache: str = MISSING
    checkpoints: str = MISSING
    results: str = MISSING


@dataclass
class BenchSchema:
    """Top-level keys of ``python -m bench.run``; the four groups are typed by their own nodes."""
    task: Any = MISSING
    model: Any = MISSING
    readout: Any = MISSING
    data: Any = MISSING
    seed: int = MISSING
    seeds: Optional[List[int]] = MISSING
    model_seed: int = MISSING
    device: str = MISSING
    splits: Dict[str, str] = MISSING
    features: FeaturesSchema = field(default_factory=FeaturesSchema)
    select: SelectSchema = field(default_factory=SelectSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    visualize: bool = MISSING


def dataset_options(cls: type) -> dict[str, tuple[Any, Any]]:
    """{key: (type hint, default)} a dataset takes: the fields of its ``config_class`` (the
    synthetic world's ``WorldConfig``), else the keywords of every ``__init__`` along its MRO
    (adapters forward ``**common`` to ``AdapterDataset``), the subclass's winning, and its ``layout``."""
    if hasattr(cls, "config_class"):
        hints = typing.get_type_hints(cls.config_class)
        return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls.config_class)}
    found: dict[str, tuple[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and klass.__module__.split(".")[0] not in ("builtins", "torch", "typing"):
            found.update(options(klass.__init__, skip=("split", "root")))
    layout = getattr(cls, "layout", {})  # an adapter's file-layout keys (DAVIS, VIP, ...)
    found.update({k: (Any if v is None else type(v), v) for k, v in layout.items()})
    return found


def register_schemas() -> None:
    """Store ``schema/bench`` and ``schema/data/<name>`` (every registered dataset) in hydra's
    ConfigStore, which the YAML files extend, and load the readouts (each stores ``readout/<kind>``)."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="bench", node=BenchSchema)
    READOUTS.names()
    for name in DATASETS.names():
        node = signature_node(f"{name}_data", dataset_options(DATASETS.get(name)), name=name)
        cs.store(group="schema/data", name=name, node=node)


# key (dotted, from the config root) -> rule; a key the config does not have, or holds null, is skipped
RULES: dict[str, Rule] = {
    "seed": integer(0), "model_seed": integer(0), "features.batch_size": integer(1),
    "features.token_px": integer(1),
    "select.val_fraction": (lambda v: number(strict=False)[0](v) and v <= 0.5, "a number in [0, 0.5]"),
}
# list key -> rule of each element; a list must be non-empty and hold distinct values
LIST_RULES: dict[str, Rule] = {
    "select.layers": (lambda v: number()[0](v) and v <= 1, "fractions of the encoder's depth in (0, 1]"),
    "select.lr": (number()[0], "finite numbers > 0 that float32 holds"),
    "select.weight_decay": (number(strict=False)[0], "finite numbers >= 0 that float32 holds"),
    "select.alpha": (number()[0], "finite numbers > 0 that float32 holds"),
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
    readout = {f"readout.{k}": rule for k, (hint, _) in readout_fields(READOUTS.get(cfg.readout.kind)).items()
               if (rule := rule_of(hint)) is not None}
    rules = {**RULES, **readout, **(WORLD_RULES if cfg.data.get("name") == "synthetic" else {})}
    for key, (ok, allowed) in rules.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={value!r}: expected {allowed}")
    check_device(cfg.device)
    ro = cfg.readout
    if ro.get("dim") and ro.get("num_heads") and ro.dim % ro.num_heads:
        raise ConfigError(f"readout.dim={ro.dim}: expected a multiple of readout.num_heads={ro.num_heads}")
    check_lists(cfg, {"seeds": (integer(0)[0], f"integers in [0, {INT64_MAX}]"), **LIST_RULES})
    check_grid(cfg)
    task_cls = TASKS.get(cfg.task.name)
    if ro.get("solver") == "closed_form" and not task_cls.closed_form:
        fitted = [n for n in TASKS.names() if TASKS.get(n).closed_form]
        raise ConfigError(f"readout.solver=closed_form: task {cfg.task.name!r} has no closed-form linear fit (those "
                          f"that do: {fitted}); use readout.solver=sgd")
    task_cls.check_options(**{k: v for k, v in cfg.task.items() if k != "name"})
    check_clip(cfg)


def check_lists(cfg: DictConfig, rules: dict[str, Rule]) -> None:
    """Each list key of ``rules``, unless null: non-empty, distinct values, each passing the rule."""
    for key, (ok, allowed) in rules.items():
        values = OmegaConf.select(cfg, key, default=None)
        if values is not None and (not values or not all(ok(v) for v in values) or len(set(values)) != len(values)):
            raise ConfigError(f"{key}={OmegaConf.to_container(values)}: expected a list of distinct {allowed}, "
                              f"or null")


def check_grid(cfg: DictConfig) -> None:
    """A probe grid (``select.layers``, or several values of another ``select`` list) needs held-out
    clips to choose its head: the test split never chooses."""
    sel = cfg.get("select")
    if sel is None or sel.get("val_fraction"):
        return
    varied = [k for k in ("layers", "lr", "weight_decay", "alpha") if len(sel.get(k) or []) > (0 if k == "layers" else 1)]
    if varied:
        raise ConfigError(f"select.val_fraction={sel.get('val_fraction')} with a grid over select.{varied[0]}: no "
                          f"held-out train clips to choose its head on (the test split never chooses)")


def check_clip(cfg: DictConfig) -> None:
    """The clip (``data.num_frames`` × ``data.resolution``) must be tiled by the model's tubelets;
    a zoo or checkpoint model's tubelet is known before any data is read (timm frame models resize)."""
    frames, res = cfg.data.get("num_frames"), cfg.data.get("resolution")
    model = resolve_model(cfg.model.name)
    if not model.has_encoder or not isinstance(frames, int):
        return
    tubelet = model.tubelet(cfg.paths.checkpoints)
    sides = [res] * 2 if isinstance(res, int) else list(res or [])
    token_px = cfg.features.get("token_px")
    if tubelet is None and token_px and len(sides) == 2 and (sides[0] % token_px or sides[1] % token_px):
        raise ConfigError(f"features.token_px={token_px}, data.resolution={res}: tokens of {token_px} pixels must "
                          f"tile the clip's sides")
    if tubelet is None or len(sides) != 2:
        return
    pt, ph, pw = tubelet
    if frames % pt or sides[0] % ph or sides[1] % pw:
        raise ConfigError(f"data.num_frames={frames}, data.resolution={res}: model {cfg.model.name!r} cuts clips "
                          f"into {pt}×{ph}×{pw} tubelets; use a frame count divisible by {pt} and sides by {ph}")
