"""Train a readout over cached frozen features, then predict a split with it.

Batches are assembled from memory-mapped arrays (features and the task's clip keys) in a
seeded order, so the same seed gives the same readout and the same metrics on CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Iterator, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bench.errors import UserError
from bench.schema import integer, number
from bench.task import Task


class ReadoutDiverged(UserError, FloatingPointError):
    """A readout fit whose loss or outputs are no longer finite: its learning rate is too high."""


@dataclass(frozen=True)
class Recipe:
    """How a readout is fitted: the ``readout.*`` keys a readout's ``recipe`` declares, typed and
    ranged here once (a readout that declares none of a key is fitted with this default)."""

    epochs: Annotated[int, integer(1)] = 1
    batch_size: Annotated[int, integer(1)] = 16
    lr: Annotated[float, number()] = 1e-3  # AdamW peak learning rate (solver sgd)
    weight_decay: Annotated[float, number(strict=False)] = 0.0
    solver: Literal["sgd", "closed_form"] = "sgd"  # closed_form: scikit-learn ridge / logistic (clip-level tasks)
    alpha: Annotated[float, number()] = 1.0  # closed_form: L2 weight (ridge alpha; logistic C = 1/alpha)


def flush_denormals() -> None:
    """Flush subnormal floats to zero on this process's CPU (FTZ/DAZ). The readouts' sharp attention
    (the locality bias) underflows into subnormals, on which x86 is far slower (docs/performance.md
    has the readout steps with and without); values below 1e-38 do not change any metric."""
    torch.set_flush_denormal(True)


def batches(features: np.ndarray, targets: dict[str, np.ndarray], batch_size: int,
            order: np.ndarray | None = None, device: str = "cpu") -> Iterator[dict[str, torch.Tensor]]:
    """Yield {'features': float32 [B,T',N,C], key: tensor} over ``order`` (default: sequential)."""
    order = np.arange(len(features)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = np.sort(order[start:start + batch_size])  # sorted reads are kinder to memmaps
        batch = {"features": torch.from_numpy(np.asarray(features[idx], dtype=np.float32))}
        batch.update({k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in targets.items()})
        yield {k: v.to(device) for k, v in batch.items()}


def training_batches(task: Task, features: np.ndarray, targets: dict[str, np.ndarray], epochs: int,
                     batch_size: int, seed: int, device: str = "cpu",
                     rows: np.ndarray | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Every training batch of seed ``seed`` over the clips ``rows`` (default: all): each epoch
    those clips in a fresh order drawn from ``default_rng(seed)``, each batch as
    ``task.train_view`` trains on it (its draws from a second generator, ``default_rng([seed, 1])``,
    so they never change the clip order)."""
    order_rng, view_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    rows = np.arange(len(features)) if rows is None else np.asarray(rows)
    for _ in range(epochs):
        for batch in batches(features, targets, batch_size, rows[order_rng.permutation(len(rows))], device):
            yield task.train_view(batch, view_rng)


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at update ``step`` (0-based): linear warmup over
    ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``. The readouts' schedule and
    pretraining's (``pretrain.layerlock.Schedule.lr_at``)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer(readout: nn.Module | list[dict[str, Any]], lr: float, weight_decay: float, total_steps: int,
              warmup_frac: float = 0.1) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with linear warmup over ``warmup_frac`` of ``total_steps``, then cosine decay; over a
    module's parameters, or over parameter groups whose own ``lr`` / ``weight_decay`` override
    these (a probe grid, ``bench.grid``)."""
    params = readout.parameters() if isinstance(readout, nn.Module) else readout
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, int(warmup_frac * total_steps))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total_steps, warmup))


def train_step(readout: nn.Module, task: Task, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LRScheduler, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One readout update on ``batch``; returns the detached loss (no host sync)."""
    loss = task.loss(readout(batch["features"], batch), batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach()


def fit(readout: nn.Module, task: Task, features: np.ndarray, targets: dict[str, np.ndarray],
        epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
        warmup_frac: float = 0.1, device: str = "cpu") -> list[float]:
    """Train ``readout`` with AdamW + warmup/cosine; return the loss of every step."""
    torch.manual_seed(seed)
    readout.to(device).train()
    total = total_steps(len(features), epochs, batch_size)
    opt, sched = optimizer(readout, lr, weight_decay, total, warmup_frac)
    losses: list[torch.Tensor] = []
    bar = tqdm(total=total, desc=f"readout {task.name}", unit="step", leave=False)
    for batch in training_batches(task, features, targets, epochs, batch_size, seed, device):
        loss = train_step(readout, task, opt, sched, batch)
        losses.append(loss)
        bar.update()
        if bar.n % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return check_not_diverged(torch.stack(losses).tolist() if losses else [], f"readout {task.name}")


def total_steps(clips: int, epochs: int, batch_size: int) -> int:
    """Optimiser steps of a run: ``epochs`` passes over ``clips`` in batches (the last may be short)."""
    return epochs * math.ceil(clips / batch_size)


def check_not_diverged(history: list[float], what: str) -> list[float]:
    """``history`` as is, or ReadoutDiverged if its last loss is not finite (the fit diverged)."""
    if history and not math.isfinite(history[-1]):
        raise ReadoutDiverged(f"{what}: training loss became {history[-1]} (lower readout.lr)")
    return history


STILL_FALLING = 0.02  # relative drop of the loss between the last two tenths of the run
TRAIN_TEST_GAP = 0.25  # train-split primary metric better than the test split's by this fraction


def loss_tail(history: list[float], parts: int = 10) -> list[float]:
    """The training loss averaged over each of ``parts`` equal stretches of the run (fewer when the
    run has fewer steps): what a record keeps of the loss curve."""
    if not history:
        return []
    return [float(np.mean(chunk)) for chunk in np.array_split(np.asarray(history), min(parts, len(history)))]


def fit_flags(tail: list[float], train_primary: float, test_primary: float, higher_is_better: bool) -> list[str]:
    """Warnings about a fit: 'loss_still_falling' (the last tenth's loss is more than
    ``STILL_FALLING`` below the one before: a longer budget would change the number) and
    'train_test_gap' (the train split scores better than the test split by more than
    ``TRAIN_TEST_GAP`` of the test value: the readout memorises)."""
    flags = []
    if len(tail) >= 2 and tail[-1] < tail[-2] - STILL_FALLING * abs(tail[-2]):
        flags.append("loss_still_falling")
    better = train_primary - test_primary if higher_is_better else test_primary - train_primary
    if better > TRAIN_TEST_GAP * max(abs(test_primary), 1e-12):
        flags.append("train_test_gap")
    return flags


@torch.inference_mode()
def predict(readout: nn.Module, task: Task, features: np.ndarray, targets: dict[str, np.ndarray],
            batch_size: int, device: str = "cpu", rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Decoded predictions for the clips ``rows`` (sorted; default every clip), concatenated on axis 0."""
    readout.to(device).eval()
    parts: dict[str, list[Any]] = {}
    for batch in batches(features, targets, batch_size, rows, device=device):
        out = readout(batch["features"], batch)
        if not torch.isfinite(out).all():  # a fit that diverged without a non-finite loss
            raise ReadoutDiverged(f"readout {task.name}: its outputs are not finite (the fit diverged; lower readout.lr)")
        for k, v in task.decode(out, batch).items():
            parts.setdefault(k, []).append(v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


@torch.inference_mode()
def fit_closed_form(readout: nn.Module, task: Task, features: np.ndarray, targets: dict[str, np.ndarray],
                    alpha: float = 1.0, batch_size: int = 64, max_iter: int = 1000,
                    rows: np.ndarray | None = None) -> None:
    """Fit a mean-pooled LinearReadout in closed form on the clips ``rows`` (sorted; default all)
    with scikit-learn and write the solution
    into ``readout.head``, so ``predict`` runs unchanged: ridge regression (``alpha`` = L2 weight)
    for tasks with ``closed_form == 'ridge'``, multinomial logistic regression (C = 1/alpha)
    for ``'logistic'``. Classes absent from the training split get weight 0 and bias -1e4."""
    from bench.readouts import LinearReadout

    if task.closed_form not in ("ridge", "logistic"):
        raise ValueError(f"task {task.name!r} has no closed-form linear fit (use readout.solver=sgd)")
    if not isinstance(readout, LinearReadout) or not readout.pool or readout.queries is not None:
        raise ValueError("the closed-form fit needs a mean-pooled LinearReadout without queries (readout=linear)")
    readout.cpu().eval()
    rows = np.arange(len(features)) if rows is None else np.asarray(rows)
    x = np.concatenate([readout.norm(torch.from_numpy(np.asarray(features[rows[i:i + batch_size]], dtype=np.float32)))
                        .mean(dim=(1, 2)).double().numpy() for i in range(0, len(rows), batch_size)])
    y = task.closed_form_targets({k: np.asarray(v)[rows] for k, v in targets.items()})
    out_dim, dim = readout.head.weight.shape
    if task.closed_form == "ridge":
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=alpha).fit(x, np.asarray(y, dtype=np.float64).reshape(len(x), out_dim))
        weight, bias = model.coef_.reshape(out_dim, dim), np.asarray(model.intercept_).reshape(out_dim)
    else:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y).astype(np.int64).reshape(-1)
        weight, bias = np.zeros((out_dim, dim)), np.full(out_dim, -1e4)
        classes = np.unique(y)
        if len(classes) == 1:  # one class seen: predict it everywhere
            bias[classes[0]] = 0.0
        else:
            model = LogisticRegression(C=1.0 / alpha, max_iter=max_iter).fit(x, y)
            if len(classes) == 2:  # sklearn keeps one row: logit of the second class vs the first
                weight[classes[1]], bias[classes[1]], bias[classes[0]] = model.coef_[0], model.intercept_[0], 0.0
            else:
                weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
    readout.head.weight.copy_(torch.from_numpy(weight).float())
    readout.head.bias.copy_(torch.from_numpy(bias).float())
