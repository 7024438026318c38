"""Typed configuration of pretraining (``python -m pretrain.run``), checked when hydra composes it.

``PretrainSchema`` is the node ``schema/pretrain`` that ``configs/pretrain.yaml`` extends.
Its ``train`` keys are derived from ``pretrain.recipes.Recipe`` (every field, ``None`` = the
recipe's value), so the command line and the recipe cannot disagree: ``train.steps=abc`` and
``train.stepz=5`` are refused when the config is composed, naming the key.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from bench.config import register_schemas
from bench.schema import node_type
from pretrain.recipes import Recipe


@dataclass
class PretrainPaths:
    cache: str = "cache"
    checkpoints: str = "checkpoints"  # the encoder lands in <checkpoints>/<model.name>.safetensors (+ sidecar)
    runs: str = "outputs/pretrain"


@dataclass
class ArchOverrides:
    """Architecture keys on top of the zoo's architecture of ``model.name``; None = the zoo's value.
    ``img_size`` and ``num_frames`` always come from the data."""
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_dim: Optional[int] = None
    patch_size: Optional[List[int]] = None  # e.g. [2, 8, 8]
    pos_embed: Optional[str] = None  # learned | rope | sincos (layerlock_* default to rope)


@dataclass
class DDPOptions:
    backend: Optional[str] = None  # None = nccl on GPU, gloo on CPU
    find_unused_parameters: bool = False  # not needed: the trainable set is rebuilt at each freeze


def recipe_overrides() -> type:
    """A dataclass with every ``Recipe`` field as an optional key defaulting to None."""
    hints = typing.get_type_hints(Recipe)
    spec = [(f.name, Optional[node_type(hints[f.name])], field(default=None)) for f in dataclasses.fields(Recipe)]
    return dataclasses.make_dataclass("RecipeOverrides", spec)


RecipeOverrides = recipe_overrides()


@dataclass
class PretrainSchema:
    """Top-level keys of ``python -m pretrain.run``."""
    model: Any = MISSING
    data: Any = MISSING
    seed: int = 0
    device: str = "auto"  # auto = cuda if available, else cpu
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16 (CUDA only)
    threads: Optional[int] = None  # torch.set_num_threads; None = torch's default
    resume: bool = True  # pick up ${run_dir}/state.pt when it exists
    run_dir: str = "${paths.runs}/${model.name}"
    paths: PretrainPaths = field(default_factory=PretrainPaths)
    arch: ArchOverrides = field(default_factory=ArchOverrides)
    ddp: DDPOptions = field(default_factory=DDPOptions)
    train: RecipeOverrides = field(default_factory=RecipeOverrides)  # see pretrain/recipes.py:Recipe


def register_pretrain_schemas() -> None:
    """Store ``schema/pretrain`` and the data schemas the pretrain config's ``data`` group extends."""
    register_schemas()
    ConfigStore.instance().store(group="schema", name="pretrain", node=PretrainSchema)
