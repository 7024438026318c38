"""Action classification (4DS readout): one learned query predicts the clip's class logits.

The number of classes and their names come from the dataset metadata (``label_names``, passed
by the runner as ``meta``); ``num_classes`` in the task config is the fallback for datasets
without names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError, DatasetError
from bench.readouts import LearnedQueries
from bench.registry import TASKS
from bench.task import FeatureSpec, Task


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of clips whose true class is among the top ``k`` scores (k capped at the number
    of classes). Ties are resolved against the prediction (conservative): the true class is in
    the top k only if fewer than k *other* classes score at least as high as it. So a constant
    score vector is never top-1 correct (unless there is one class), and argmax order is irrelevant."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) == 0:
        raise DatasetError("action: no clip to evaluate")
    k = min(k, scores.shape[1])
    true = scores[np.arange(len(labels)), labels][:, None]
    others_at_least = (scores >= true).sum(1) - 1  # minus the true class itself
    return float(np.mean(others_at_least < k))


def action_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy (``topk_accuracy``) of class scores [B, K] against labels [B]."""
    return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5)}


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[K, K] counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels).astype(np.int64).reshape(-1), np.asarray(pred).astype(np.int64).reshape(-1)), 1)
    return cm


@TASKS.register()
class Action(Task):
    name = "action"
    requires = ("video", "label")
    metric_directions = {"top1": True, "top5": True}
    clip_level = True
    query_conditioned = False
    closed_form = "logistic"
    zero_init_head = True  # the readout starts from uniform class scores

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", num_classes: int | None = None, **cfg: Any):
        super().__init__(spec, readout, **cfg)
        names = self.meta.get("label_names")
        if names is not None:
            if num_classes is not None and num_classes != len(names):
                raise ConfigError(f"action: num_classes={num_classes} but the dataset has {len(names)} label names")
            self.label_names = [str(n) for n in names]
        elif num_classes is not None:
            self.label_names = [str(i) for i in range(num_classes)]
        else:
            raise ConfigError("action: the dataset gives no 'label_names' in its metadata; set task.num_classes")
        self.num_classes = len(self.label_names)

    def queries(self, dim: int) -> nn.Module:
        return LearnedQueries(1, dim)

    @property
    def output_dim(self) -> int:
        return self.num_classes

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(out[:, 0], batch["label"].long().reshape(-1))

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": out[:, 0], "label": out[:, 0].argmax(-1)}

    def closed_form_targets(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(targets["label"]).astype(np.int64).reshape(-1)

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        return action_metrics(pred["logits"], target["label"])

    def prepare(self, train: dict[str, np.ndarray]) -> None:
        """The train split's class frequencies, for the blind answer (majority class first)."""
        counts = np.bincount(np.asarray(train["label"]).astype(np.int64).reshape(-1), minlength=self.num_classes)
        self.class_prior = counts[:self.num_classes] / max(counts.sum(), 1)

    def blind(self, split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The train class frequencies as every clip's scores (ties broken towards the lower class)."""
        scores = self.class_prior + 1e-6 * np.arange(self.num_classes, 0, -1)
        size = len(np.asarray(split["label"]).reshape(-1))
        return {"logits": np.tile(scores.astype(np.float32), (size, 1)), "label": np.full(size, scores.argmax())}

    def visualize(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], out_dir: Path) -> list[str]:
        """Confusion matrix with the class names, and per-class accuracy (PNG + JSON)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = np.asarray(target["label"]).reshape(-1)
        cm = confusion_matrix(pred["label"], labels, self.num_classes)
        support = cm.sum(1)
        per_class = {name: (float(cm[i, i] / support[i]) if support[i] else None)
                     for i, name in enumerate(self.label_names)}
        k = self.num_classes
        fig, ax = plt.subplots(figsize=(2 + 0.45 * k, 1.5 + 0.45 * k))
        ax.imshow(cm / np.maximum(support[:, None], 1), cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(k), self.label_names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(k), [f"{n} ({'—' if a is None else f'{a:.0%}'})" for n, a in per_class.items()],
                     fontsize=7)
        ax.set_xlabel("predicted"), ax.set_ylabel("true (per-class accuracy)")
        ax.set_title(f"action: top-1 {topk_accuracy(pred['logits'], labels, 1):.1%}", fontsize=9)
        out_dir = Path(out_dir)
        path = out_dir / "action_confusion.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        table = out_dir / "action_per_class.json"
        table.write_text(json.dumps({"per_class_accuracy": per_class, "support": dict(zip(self.label_names,
                                     support.tolist())), "confusion": cm.tolist(),
                                     "label_names": self.label_names}, indent=1))
        return [str(path), str(table)]
