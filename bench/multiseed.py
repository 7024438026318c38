"""Train the readouts of several seeds together, each exactly as ``bench.fit.fit`` trains it alone
(``fit_readouts`` picks the configured solver).

Seed k keeps its own initialisation (its readout is built right after ``torch.manual_seed(k)``),
its own batch order and training views (``bench.fit.training_batches``) and its own AdamW state
under the shared warmup/cosine schedule. The seeds' parameters live stacked, one [K, ...] tensor per parameter,
updated by one AdamW (elementwise, so each slice follows its own seed's update); seed k's forward
is its own readout run on the k-th slices (``torch.func.functional_call``), with the same kernels
on the same shapes as alone. Forward and backward run per seed on purpose: under ``torch.vmap``
the CPU flash attention has no batching rule and falls back to a per-sample loop, 1.1-1.8x slower
than the K steps it replaces; and folding the seeds into the batch axis saves almost nothing on
CPU (one readout on a batch of 3x16 clips costs 2.3-2.9x a batch of 16), because a step is
compute-bound and every seed reads other clips through other weights (``benchmarks/multiseed.py``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from bench.errors import ConfigError
from bench.fit import check_not_diverged, fit_closed_form, optimizer, total_steps, training_batches
from bench.task import Task


def seeded_readouts(seeds: Sequence[int], build: Callable[[], nn.Module]) -> list[nn.Module]:
    """One readout per seed, each ``build()`` right after ``torch.manual_seed(seed)``, as
    ``bench.run.read_out`` builds the readout of a one-seed run."""
    readouts = []
    for seed in seeds:
        torch.manual_seed(seed)
        readouts.append(build())
    return readouts


class SeedStack(nn.Module):
    """K readouts of one architecture as one module: its parameters are theirs stacked [K, ...];
    ``forward(k, ...)`` runs readout k on the k-th slices. Buffers and task hooks stay each
    readout's own. ``write_back`` copies the trained slices into the readouts."""

    def __init__(self, readouts: Sequence[nn.Module]):
        super().__init__()
        named = [dict(r.named_parameters()) for r in readouts]
        self.names = list(named[0])
        if any(list(n) != self.names or any(n[k].shape != named[0][k].shape for k in n) for n in named):
            raise ValueError("SeedStack: the readouts differ in their parameters (build them alike)")
        self.readouts = list(readouts)  # a plain list: their own tensors are not this module's parameters
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([n[name].detach() for n in named]), requires_grad=named[0][name].requires_grad)
            for name in self.names)

    def forward(self, k: int, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.readouts[k], {name: p[k] for name, p in zip(self.names, self.stacked)},
                               (features, batch))

    @torch.no_grad()
    def write_back(self) -> list[nn.Module]:
        """The readouts, each holding its trained slice of the stacked parameters."""
        for k, readout in enumerate(self.readouts):
            params = dict(readout.named_parameters())
            for name, p in zip(self.names, self.stacked):
                params[name].copy_(p[k])
        return self.readouts


def seeds_step(stack: SeedStack, task: Task, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
               group: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """One update of every seed, seed k on ``group[k]``; returns the detached losses [K] (no host
    sync). Seed k's backward fills only slice k of the gradients, so each seed's graph is freed
    before the next is built (the memory of one seed's step)."""
    opt.zero_grad(set_to_none=True)
    losses = []
    for k, batch in enumerate(group):
        loss = task.loss(stack(k, batch["features"], batch), batch)
        loss.backward()
        losses.append(loss.detach())
    opt.step()
    sched.step()
    return torch.stack(losses)


def fit_seeds(readouts: Sequence[nn.Module], task: Task, features: np.ndarray, targets: dict[str, np.ndarray],
              epochs: int, batch_size: int, lr: float, weight_decay: float, seeds: Sequence[int],
              warmup_frac: float = 0.1, device: str = "cpu") -> list[list[float]]:
    """Train ``readouts[k]`` as ``fit(readouts[k], ..., seeds[k])`` would, all seeds in one loop;
    return each seed's loss history. Equal to the one-seed fits up to float rounding for a training
    step that draws no random numbers (the built-in readouts and tasks draw none)."""
    if len(readouts) != len(seeds) or not seeds:
        raise ValueError(f"fit_seeds: {len(readouts)} readouts for seeds {list(seeds)}")
    stack = SeedStack([r.to(device).train() for r in readouts])
    total = total_steps(len(features), epochs, batch_size)
    opt, sched = optimizer(stack, lr, weight_decay, total, warmup_frac)
    losses: list[torch.Tensor] = []
    bar = tqdm(total=total, desc=f"readout {task.name} seeds {list(seeds)}", unit="step", leave=False)
    per_seed = [training_batches(task, features, targets, epochs, batch_size, seed, device) for seed in seeds]
    for group in zip(*per_seed):
        losses.append(seeds_step(stack, task, opt, sched, group))
        bar.update()
        if bar.n % 20 == 0:
            bar.set_postfix(loss=" ".join(f"{v:.4f}" for v in losses[-1].tolist()))
    bar.close()
    stack.write_back()
    history = torch.stack(losses).T.tolist() if losses else [[] for _ in seeds]
    return [check_not_diverged(h, f"readout {task.name} seed {seed}") for h, seed in zip(history, seeds)]


def fit_readouts(readouts: Sequence[nn.Module], task: Task, features: np.ndarray, targets: dict[str, np.ndarray],
                 seeds: Sequence[int], solver: str = "sgd", epochs: int = 1, batch_size: int = 16, lr: float = 1e-3,
                 weight_decay: float = 0.0, alpha: float = 1.0, device: str = "cpu") -> list[list[float]]:
    """Fit every seed's readout by ``solver`` and return each seed's loss history: nothing for a
    training-free readout (propagation), scikit-learn's closed form for ``'closed_form'`` (one
    solution, the same for every seed), AdamW over the seeds together (``fit_seeds``) for ``'sgd'``."""
    if not any(p.requires_grad for p in readouts[0].parameters()):
        return [[] for _ in seeds]
    if solver == "closed_form":
        for readout in readouts:
            fit_closed_form(readout, task, features, targets, alpha=alpha)
        return [[] for _ in seeds]
    if solver == "sgd":
        return fit_seeds(readouts, task, features, targets, epochs, batch_size, lr, weight_decay, seeds, device=device)
    raise ConfigError(f"readout.solver={solver!r}: expected 'sgd' or 'closed_form'")
