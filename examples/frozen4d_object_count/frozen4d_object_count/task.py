"""Object count: how many objects does the clip show? A clip-level classification read out of
frozen features by one learned query (4DS readout), or by a mean-pooled linear probe.

The label is computed from a key the dataset already provides, ``box_valid`` [M, T] (object m
is visible in frame t; rows past the clip's objects are all False): the number of objects seen
in at least one frame, a class in 0..M. The number of classes, M + 1, comes from the dataset's
metadata (``max_objects``; the synthetic world provides it) or, failing that, from the task
config (``task.max_objects=...``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.readouts import LearnedQueries
from bench.registry import TASKS
from bench.task import FeatureSpec, Task


def object_counts(box_valid):
    """Objects visible in at least one frame: box_valid [B, M, T] -> [B] (numpy or torch)."""
    if isinstance(box_valid, torch.Tensor):
        return box_valid.bool().any(-1).sum(-1).long()
    return np.asarray(box_valid, bool).any(-1).sum(-1).astype(np.int64)


def count_metrics(logits: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """Exact-count accuracy (argmax) and mean absolute count error over the clips."""
    counts = np.asarray(counts).reshape(-1)
    if len(counts) == 0:
        raise ValueError("object_count: no clip to evaluate")
    pred = np.asarray(logits).argmax(-1)
    return {"accuracy": float(np.mean(pred == counts)), "count_mae": float(np.mean(np.abs(pred - counts)))}


@TASKS.register()
class ObjectCount(Task):
    name = "object_count"
    requires = ("video", "box_valid")  # the runner checks the dataset provides these
    metric_directions = {"accuracy": True, "count_mae": False}
    clip_level = True  # one output per clip: LinearReadout mean-pools the tokens
    closed_form = "logistic"  # readout=linear readout.solver=closed_form fits it with scikit-learn

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", max_objects: int | None = None, **cfg: Any):
        super().__init__(spec, readout, **cfg)  # cfg carries meta (the dataset's metadata)
        m = self.meta.get("max_objects", max_objects)
        if m is None:
            raise ConfigError("object_count: the dataset gives no 'max_objects' in its metadata; set task.max_objects")
        self.num_classes = int(m) + 1

    def queries(self, dim: int) -> nn.Module:
        return LearnedQueries(1, dim)

    @property
    def output_dim(self) -> int:
        return self.num_classes

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(out[:, 0], object_counts(batch["box_valid"]))

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": out[:, 0], "count": out[:, 0].argmax(-1)}

    def closed_form_targets(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        return object_counts(targets["box_valid"])

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        return count_metrics(pred["logits"], object_counts(target["box_valid"]))
