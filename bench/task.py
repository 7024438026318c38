"""The task interface: what a readout must predict, from which clip keys, scored how.

A task is the only task-specific code in an evaluation (the 4DS design: one readout class
serves every task). It supplies the readout's queries, the per-query output size, the loss
and the published metrics; the harness does feature extraction, training and bookkeeping.
Register a subclass with ``@TASKS.register()`` (under its ``name``): that also stores its typed
config as the hydra ConfigStore node ``task/<name>`` (``register_task_config``).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from torch import nn

from bench.errors import ConfigError
from bench.schema import FLOAT32_TINY, literal_choices, options, signature_node

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class FeatureSpec:
    """Shape of the frozen features a readout sees: [B, T', h*w, C] from a clip [T, H, W]."""

    grid: tuple[int, int, int]
    dim: int
    clip: tuple[int, int, int]


class Task(ABC):
    """Base class of every task; subclasses set the class attributes and implement the hooks."""

    name: ClassVar[str]
    # bump when a change alters what the task's metrics mean (data, targets, metric definition):
    # records carry it, and the leaderboard never pools records of two versions
    version: ClassVar[int] = 1
    requires: ClassVar[tuple[str, ...]]  # clip keys the task reads
    # every metric's direction (True: higher is better), in report order; the first is the primary
    # metric, the one the leaderboard ranks by (``primary_metric`` and ``higher_is_better`` are
    # derived from it when the class is defined)
    metric_directions: ClassVar[dict[str, bool]]
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool]
    clip_level: ClassVar[bool] = False  # True: one output per clip (LinearReadout mean-pools)
    query_conditioned: ClassVar[bool] = False  # True: queries carry inputs (points, boxes)
    # closed-form LinearReadout fit this task supports (bench.fit.fit_closed_form):
    # 'ridge' (regression) | 'logistic' (classification) | None
    closed_form: ClassVar[str | None] = None
    # True: the readout's output layers start at zero (tasks whose outputs are residuals, so
    # training starts from a sensible prediction: a static track, the identity pose)
    zero_init_head: ClassVar[bool] = False
    # True: ``query_positions`` places each query, and the frozen4d attentive readout attends
    # around that place first (a locality bias; see bench.readouts)
    has_query_positions: ClassVar[bool] = False
    # True: ``query_appearance`` gives each query the features of what it follows (point tracking:
    # the token under the query point), which the frozen4d attentive readout adds to the query
    has_query_appearance: ClassVar[bool] = False
    # float options that scale or bound a computation (a Huber delta, a heatmap sigma, a boundary
    # radius): 0, or a value that is 0 in float32, is refused, not only negatives
    positive_options: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "metric_directions" in vars(cls):
            cls.primary_metric, cls.higher_is_better = next(iter(cls.metric_directions.items()))
        elif "primary_metric" in vars(cls):  # a task that declares only its primary metric
            cls.metric_directions = {cls.primary_metric: cls.higher_is_better}

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", meta: dict[str, Any] | None = None,
                 **cfg: Any):
        self.spec = spec
        self.readout = readout  # dense tasks lay out their outputs per token under a readout with token_outputs
        self.meta = dict(meta or {})  # the dataset's metadata (e.g. 'label_names'), from the runner
        self.cfg = cfg

    def frames_per_chunk(self) -> int:
        """Frames of the clip per feature time chunk (T / T'), for tasks that predict per frame from
        per-chunk features; a ConfigError when the chunks do not split the clip."""
        t, chunks = self.spec.clip[0], self.spec.grid[0]
        if t % chunks:
            raise ConfigError(f"{self.name}: {t} frames do not split into {chunks} feature time chunks")
        return t // chunks

    @abstractmethod
    def queries(self, dim: int) -> nn.Module:
        """Module mapping a batch dict to readout queries [B, Q, dim] (learned or from the batch)."""

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Size of the readout output per query."""

    @abstractmethod
    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss from readout output [B, Q, output_dim] and the batch targets."""

    @abstractmethod
    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Readout output -> predictions in data units (e.g. a depth map), batched."""

    @abstractmethod
    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        """Published metrics over a whole split (predictions and targets concatenated on axis 0)."""

    def query_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Where each readout query looks first: normalised (t, y, x) in [0, 1], [B or 1, Q, 3]
        in the queries' order (tasks with ``has_query_positions``)."""
        raise NotImplementedError(f"task {self.name!r} does not place its queries")

    def query_appearance(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What each query follows, as features: [B, Q, C] in the queries' order, from features
        [B, T', h*w, C] (tasks with ``has_query_appearance``)."""
        raise NotImplementedError(f"task {self.name!r} gives its queries no appearance")

    def linear_pool(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """LinearReadout input of query-conditioned tasks: the features each query reads, [B, Q, C]
        (or [B, 1, C], broadcast), from LayerNorm'd features [B, T', h*w, C]. Override to read where
        the query points (e.g. the token under a query point); the default mean-pools every token."""
        return features.mean(dim=(1, 2)).unsqueeze(1)

    def closed_form_targets(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        """Targets of the closed-form fit, in the readout output's units: [N, output_dim] floats for
        'ridge', [N] class indices for 'logistic' (see ``closed_form``)."""
        raise NotImplementedError(f"task {self.name!r} has no closed-form linear fit")

    def per_clip(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The primary metric per clip as (values [N], weights [N]) with Σ w·v / Σ w equal to
        ``metrics(...)[primary_metric]``: weights are a clip's share of a pooled metric (valid
        pixels, scored pairs), 1 for means over clips, 0 for a clip the metric leaves out. The
        leaderboard's bootstrap intervals and paired comparisons resample these clips.
        The default scores each clip alone with weight 1, right for metrics that are means over
        clips; tasks with pooled metrics override it (the runner checks the identity)."""
        size = len(next(iter(target.values())))
        values = [self.metrics({k: v[i:i + 1] for k, v in pred.items()}, {k: v[i:i + 1] for k, v in target.items()})
                  [self.primary_metric] for i in range(size)]
        return np.asarray(values, np.float64), np.ones(size)

    def train_view(self, batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """The part of a training batch a readout update trains on (point tracking: a random
        subset of each clip's tracks), drawn from ``rng``, the seed's own generator; evaluation
        always sees whole batches. Default: the whole batch, drawing nothing."""
        return batch

    def prepare(self, train: dict[str, np.ndarray]) -> None:
        """Fit what the task's outputs are relative to from the train split's targets (depth: the
        per-pixel train median), once, before a readout trains; the runner calls it. Default: nothing."""

    def blind(self, split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predictions for a split's clips that never look at a video (the input-blind reference
        row), after ``prepare``: by default the decoded zero readout output, which for
        ``zero_init_head`` tasks is their input-blind answer (the per-pixel train-median depth, a
        static track, the static box, the identity pose). Override for other blind answers."""
        if not self.zero_init_head:
            raise ConfigError(f"task {self.name!r} defines no input-blind answer (model=blind needs Task.blind)")
        batch = {k: torch.from_numpy(np.array(v)) for k, v in split.items()}  # a writable copy
        size = len(next(iter(split.values())))
        batch["features"] = torch.zeros(size, 0)  # learned queries take the batch size from here
        with torch.no_grad():
            out = torch.zeros(size, self.queries(8)(batch).shape[1], self.output_dim)
            return {k: v.numpy() for k, v in self.decode(out, batch).items()}

    @classmethod
    def check_options(cls, **values: Any) -> None:
        """A ConfigError naming ``task.<key>``, the value and what is allowed for any value outside its
        ``Literal[...]`` annotation in ``__init__``, an integer option below 1 or beyond int32, a
        float option that is not a finite number >= 0 (> 0 in float32 for ``positive_options``);
        the runner calls it before any work starts."""
        for key, (hint, _) in task_options(cls).items():
            value = values.get(key)
            if value is None or isinstance(value, bool):
                continue
            allowed = literal_choices(hint)
            if allowed is not None and value not in allowed:
                raise ConfigError(f"task.{key}={value!r}: expected one of {list(allowed)}")
            if isinstance(value, int) and not 1 <= value <= INT32_MAX:
                raise ConfigError(f"task.{key}={value!r}: expected an integer in [1, {INT32_MAX}]")
            if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"task.{key}={value!r}: expected a finite number >= 0")
            if isinstance(value, float) and key in cls.positive_options and not np.float32(value) >= FLOAT32_TINY:
                raise ConfigError(f"task.{key}={value!r}: expected a number > 0 that float32 holds (>= 1.2e-38)")

    def directions(self) -> dict[str, bool]:
        """{metric: higher_is_better} of every metric, primary first (``metric_directions``)."""
        return dict(self.metric_directions)

    def visualize(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], out_dir: Any) -> list[str]:
        """Write a few qualitative PNG/GIF files for a run; return their paths."""
        return []


def register_task_config(cls: type[Task]) -> type[Task]:
    """Store the typed hydra node ``task/<cls.name>``, derived from the keyword options of
    ``cls.__init__`` (types and defaults written once, there; plugins need no YAML)."""
    node = signature_node(f"{cls.__name__}Config", task_options(cls), name=cls.name)
    ConfigStore.instance().store(group="task", name=cls.name, node=node)
    return cls


def task_options(cls: type[Task]) -> dict[str, tuple[Any, Any]]:
    """{option: (type hint, default)} of a task: its ``__init__`` keywords after spec and readout."""
    return options(cls.__init__, skip=("spec", "readout", "meta"))
