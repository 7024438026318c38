"""A probe grid trained together: readout heads of (seed × feature layer × learning rate × weight
decay), or × L2 weight for closed-form probes, each exactly as ``bench.fit.fit`` trains it alone,
and the head chosen on train clips held out from its training (``held_out``, ``choose``).

Head h starts from the initialisation of its seed (its readout is built right after
``torch.manual_seed(h.seed)``, so heads of one seed differ only in what the grid varies), takes
its seed's batch order and training views (``bench.fit.training_batches``; heads of one seed and
layer share each batch, read once) and keeps its own AdamW state under the shared warmup/cosine
schedule. Heads of one (learning rate, weight decay) live stacked, one [K, ...] tensor per
parameter, as one AdamW parameter group (elementwise, so each slice follows its own head's
update); head k's forward is its own readout run on the k-th slices
(``torch.func.functional_call``), with the same kernels on the same shapes as alone. Forward and
backward run per head on purpose: under ``torch.vmap`` the CPU flash attention has no batching
rule and falls back to a per-sample loop, slower than the K steps it replaces; and folding the
heads into the batch axis saves almost nothing on CPU, because a step is compute-bound and every
head reads its clips through its own weights (``benchmarks/multiseed.py``, docs/performance.md).
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from bench.errors import ConfigError
from bench.fit import Recipe, check_not_diverged, fit_closed_form, optimizer, total_steps, training_batches
from bench.task import Task

VAL_SEED = 0  # the held-out clips are the same for every model and seed, so that their scores pair


# the hyperparameters of a head that each solver uses
SOLVER_KEYS: dict[str, tuple[str, ...]] = {"sgd": ("lr", "weight_decay"), "closed_form": ("alpha",)}


@dataclass(frozen=True)
class Head:
    """One readout of a grid: its seed, the feature layer it reads (the input of block ``layer``)
    and the hyperparameters of its fit (``alpha``: the closed-form probe's L2 weight)."""
    seed: int
    layer: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    alpha: float = 1.0

    def describe(self) -> str:
        return f"seed {self.seed} (layer {self.layer}, lr {self.lr:g}, weight decay {self.weight_decay:g})"

    def settings(self, solver: str | None) -> dict[str, float]:
        """What a record keeps of the head: its layer and the hyperparameters its ``solver`` uses
        (None: a training-free readout)."""
        kept = SOLVER_KEYS.get(solver, ())
        return {"layer": self.layer, **{k: v for k, v in asdict(self).items() if k in kept}}


def grid_heads(seeds: Sequence[int], layers: Sequence[int], lrs: Sequence[float] = (1e-3,),
               weight_decays: Sequence[float] = (0.0,), alphas: Sequence[float] = (1.0,)) -> list[Head]:
    """Every head of the grid, seed-major: seed, then layer, learning rate, weight decay, alpha."""
    return [Head(*values) for values in itertools.product(seeds, layers, lrs, weight_decays, alphas)]


def held_out(clips: int, fraction: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(train rows, held-out rows) of a train split of ``clips`` clips: ``fraction`` of them, at
    least one, drawn by ``default_rng(VAL_SEED)``, both sorted; (None, None) for ``fraction`` 0."""
    if fraction <= 0:
        return None, None
    count = min(clips - 1, max(1, round(fraction * clips)))
    if count < 1:
        raise ConfigError(f"select.val_fraction={fraction}: a train split of {clips} clip(s) has none to hold out")
    order = np.random.default_rng(VAL_SEED).permutation(clips)
    return np.sort(order[count:]), np.sort(order[:count])


def choose(scores: Sequence[float], higher_is_better: bool) -> int:
    """The index of the best score (the first of equals: the grid's order breaks ties)."""
    values = np.asarray(scores, dtype=np.float64)
    return int(np.argmax(values) if higher_is_better else np.argmin(values))


def seeded_readouts(seeds: Sequence[int], build: Callable[[], nn.Module]) -> list[nn.Module]:
    """One readout per entry of ``seeds``, each ``build()`` right after ``torch.manual_seed(seed)``,
    as ``bench.run.read_out`` builds the readout of a one-head run."""
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


def grid_step(stacks: Sequence[SeedStack], task: Task, opt: torch.optim.Optimizer,
              sched: torch.optim.lr_scheduler.LRScheduler,
              groups: Sequence[Sequence[dict[str, torch.Tensor]]]) -> torch.Tensor:
    """One update of every head, head k of ``stacks[s]`` on ``groups[s][k]``; returns the detached
    losses in that order (no host sync). Each head's backward fills only its slice of the
    gradients, so its graph is freed before the next is built (the memory of one head's step)."""
    opt.zero_grad(set_to_none=True)
    losses = []
    for stack, group in zip(stacks, groups):
        for k, batch in enumerate(group):
            loss = task.loss(stack(k, batch["features"], batch), batch)
            loss.backward()
            losses.append(loss.detach())
    opt.step()
    sched.step()
    return torch.stack(losses)


def seeds_step(stack: SeedStack, task: Task, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
               group: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """``grid_step`` of one stack: every seed of one readout, seed k on ``group[k]``."""
    return grid_step([stack], task, opt, sched, [group])


def fit_grid(readouts: Sequence[nn.Module], heads: Sequence[Head], task: Task, features: Mapping[int, np.ndarray],
             targets: dict[str, np.ndarray], epochs: int, batch_size: int, rows: np.ndarray | None = None,
             warmup_frac: float = 0.1, device: str = "cpu") -> list[list[float]]:
    """Train ``readouts[k]`` as ``fit`` would train it alone with ``heads[k]``'s seed, learning rate
    and weight decay on ``features[heads[k].layer]`` (the clips ``rows``, default all), every head
    in one loop; return each head's loss history. Equal to the one-head fits up to float rounding
    for a training step that draws no random numbers (the built-in readouts and tasks draw none)."""
    if len(readouts) != len(heads) or not heads:
        raise ValueError(f"fit_grid: {len(readouts)} readouts for {len(heads)} heads")
    members: dict[tuple[float, float], list[int]] = {}
    for k, head in enumerate(heads):
        members.setdefault((head.lr, head.weight_decay), []).append(k)
    stacks = [SeedStack([readouts[k].to(device).train() for k in ks]) for ks in members.values()]
    params = [{"params": list(s.parameters()), "lr": lr, "weight_decay": wd} for s, (lr, wd) in zip(stacks, members)]
    total = total_steps(len(features[heads[0].layer]) if rows is None else len(rows), epochs, batch_size)
    opt, sched = optimizer(params, heads[0].lr, heads[0].weight_decay, total, warmup_frac)
    sources = list(dict.fromkeys((h.seed, h.layer) for h in heads))
    streams = [training_batches(task, features[layer], targets, epochs, batch_size, seed, device, rows)
               for seed, layer in sources]
    losses: list[torch.Tensor] = []
    with tqdm(total=total, desc=f"readout {task.name}, {len(heads)} head(s)", unit="step", leave=False) as bar:
        for step in zip(*streams):
            batch = dict(zip(sources, step))
            groups = [[batch[heads[k].seed, heads[k].layer] for k in ks] for ks in members.values()]
            losses.append(grid_step(stacks, task, opt, sched, groups))
            bar.update()
    for stack in stacks:
        stack.write_back()
    order = [k for ks in members.values() for k in ks]  # the heads in the order of the losses
    by_step = torch.stack(losses).T.tolist() if losses else [[] for _ in heads]
    history = dict(zip(order, by_step))
    return [check_not_diverged(history[k], f"readout {task.name} {h.describe()}") for k, h in enumerate(heads)]


def fit_readouts(readouts: Sequence[nn.Module], heads: Sequence[Head], task: Task, features: Mapping[int, np.ndarray],
                 targets: dict[str, np.ndarray], recipe: Recipe = Recipe(), rows: np.ndarray | None = None,
                 device: str = "cpu") -> list[list[float]]:
    """Fit every head's readout by the recipe's solver on the clips ``rows`` (default all) and
    return each head's loss history: nothing for a training-free readout (propagation),
    scikit-learn's closed form for ``'closed_form'`` (one solution per layer and L2 weight, the
    same for every seed), AdamW over the heads together (``fit_grid``) for ``'sgd'``."""
    if not any(p.requires_grad for p in readouts[0].parameters()):
        return [[] for _ in heads]
    if recipe.solver == "closed_form":
        for readout, head in zip(readouts, heads):
            fit_closed_form(readout, task, features[head.layer], targets, alpha=head.alpha, rows=rows)
        return [[] for _ in heads]
    if recipe.solver == "sgd":
        return fit_grid(readouts, heads, task, features, targets, recipe.epochs, recipe.batch_size, rows, device=device)
    raise ConfigError(f"readout.solver={recipe.solver!r}: expected 'sgd' or 'closed_form'")
