"""The layer-convergence probe of the LayerLock paper (its Figure 1), in miniature.

Claim: during video-MAE training, ViT blocks converge in the order of their depth. Probe: train
an MAE baseline for ``S`` steps, keeping its full training state at a few steps ``T``; from each
such state, freeze blocks ``1..L`` (with the patch embedding) and continue training to ``S``
with the same pixel loss, data order, masks and learning-rate schedule; a block set has
converged at ``T`` if freezing it there barely raises the final loss. The table holds, for every
(L, T), ``final loss(L, T) - final loss(baseline)``, each final loss being the mean training
loss over the last ``tail`` of the run (paired: both runs see the same batches and masks there).

Every branch is an ordinary :class:`~pretrain.train.Trainer` whose recipe is the trainer's own
"progressive freezing with pixel loss" schedule reduced to one event (``freeze_target=pixel``,
``pixel_steps=T``, ``freeze_jump=L``, one interval spanning the run), restored from the
baseline's state at ``T``: freezing, leaving the optimizer and the LR schedule are exactly the
trainer's. ``L = 0`` is the baseline itself (increase 0 by definition).

The defaults are a CPU miniature (:data:`MINIATURE`: 300 steps at 32x32x8 on the in-memory
``patterns`` clips, 4 freeze steps x 5 block counts: 4,050 steps); every key is
overridable hydra-style, e.g. ``train.steps=1500 data.name=synthetic probe.at=[0,0.5]``.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from pretrain.metrics_log import write_table
from pretrain.run import load_config
from pretrain.train import Trainer

from bench.errors import ConfigError

# The miniature run (pretrain config overrides; the command line wins key by key). 32x32x8 clips
# give 64 tubelets, of which 95% masking would leave 3 visible: the miniature masks 75%.
MINIATURE = {"model": "mae_t", "data.name": "patterns", "data.resolution": "32", "data.num_frames": "8",
             "data.train_size": "256", "train.steps": "300", "train.warmup_steps": "15",
             "train.mask_ratio": "0.75"}


@dataclass
class ProbeConfig:
    """Knobs of the probe itself (``probe.<key>=...`` on the command line)."""

    at: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75])  # freeze steps T, fractions of the run
    blocks: list[int] | None = None   # block counts L to freeze; None = 1 .. encoder blocks - 1
    tail: float = 0.1                 # final loss = mean training loss over this last fraction of the run
    out: str = "outputs/analyze/convergence"


@dataclass
class ConvergenceResult:
    """What a probe measured (written as ``convergence.json``)."""

    model: str
    steps: int
    at_steps: list[int]               # T, in steps
    blocks: list[int]                 # L, the table's rows (0 = the baseline)
    increase: list[list[float]]       # [len(blocks)][len(at_steps)]: final-loss increase over the baseline
    baseline_final: float
    tail_steps: int
    baseline_losses: list[float]
    wall_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


def merge_overrides(defaults: dict[str, str], overrides: list[str]) -> list[str]:
    """``defaults`` as ``key=value`` overrides, replaced key by key by ``overrides``."""
    merged = dict(defaults)
    for o in overrides:
        key, _, value = o.partition("=")
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def branch_overrides(at_step: int, blocks: int, steps: int) -> list[str]:
    """The recipe of a branch: pixel loss, blocks ``1..blocks`` frozen from ``at_step`` to the end."""
    return ["train.objective=layerlock", "train.freeze_target=pixel", f"train.pixel_steps={at_step}",
            f"train.freeze_jump={blocks}", f"train.freeze_interval={steps}", "train.max_frozen=1.0"]


def make_trainer(overrides: list[str], run_dir: str) -> Trainer:
    """A fresh trainer whose run directory is scratch (nothing is saved or exported)."""
    return Trainer(load_config([*overrides, f"run_dir={run_dir}", "resume=false"]))


def train_baseline(trainer: Trainer, at_steps: list[int], bar: tqdm) -> tuple[list[float], dict[int, dict]]:
    """Train the MAE baseline to the end; returns its per-step losses and its full state at each
    of ``at_steps``."""
    losses, states = [], {}
    while trainer.step < trainer.recipe["steps"]:
        if trainer.step in at_steps:
            states[trainer.step] = copy.deepcopy(trainer.state_dict())
        losses.append(trainer.train_step()[0])
        bar.update(1)
    return losses, states


def continue_frozen(overrides: list[str], state: dict, blocks: int, run_dir: str,
                    bar: tqdm | None = None) -> tuple[list[float], Trainer]:
    """Restore the baseline ``state`` (at step T) into a branch that freezes blocks ``1..blocks``
    from T on, and train it to the end; returns its per-step losses (steps T..S-1) and the trainer.
    ``blocks=0`` continues the baseline unchanged (it must reproduce the baseline's losses)."""
    steps = int(state["recipe"]["steps"])
    trainer = make_trainer([*overrides, *branch_overrides(int(state["step"]), blocks, steps)], run_dir)
    trainer.load_state_dict(state)
    losses = []
    while trainer.step < steps:
        losses.append(trainer.train_step()[0])
        if bar is not None:
            bar.update(1)
    return losses, trainer


def resolve_probe(trainer: Trainer, probe: ProbeConfig) -> tuple[list[int], list[int], int]:
    """(T steps, L values, tail steps) of ``probe`` for the baseline ``trainer``, validated."""
    if trainer.recipe["objective"] != "mae":
        raise ConfigError(f"the convergence probe branches a pixel MAE run; {trainer.name} trains "
                          f"{trainer.recipe['objective']!r} (use model=mae_<size>)")
    steps, encoder_depth = trainer.recipe["steps"], trainer.model.encoder_depth
    at_steps = sorted({int(round(f * steps)) for f in probe.at})
    blocks = sorted(set(probe.blocks)) if probe.blocks is not None else list(range(1, encoder_depth))
    if not all(0 <= t < steps for t in at_steps):
        raise ConfigError(f"probe.at={probe.at}: freeze steps must be fractions in [0, 1) of the run")
    if not all(1 <= b < encoder_depth for b in blocks):
        raise ConfigError(f"probe.blocks={blocks}: at least one of the {encoder_depth} encoder blocks "
                          f"(before the decoder) must stay trainable: choose L in 1..{encoder_depth - 1}")
    tail = max(1, int(round(probe.tail * steps)))
    if tail > steps - max(at_steps):
        raise ConfigError(f"probe.tail={probe.tail} ({tail} steps) reaches before the last freeze step {max(at_steps)}")
    return at_steps, blocks, tail


def run_probe(overrides: list[str], probe: ProbeConfig) -> ConvergenceResult:
    """Baseline, then one branch per (T, L); the final-loss increase of every branch."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convergence-") as scratch:
        baseline = make_trainer(overrides, scratch)
        at_steps, blocks, tail = resolve_probe(baseline, probe)
        steps = baseline.recipe["steps"]
        total = steps + len(blocks) * sum(steps - t for t in at_steps)
        with tqdm(total=total, desc="convergence probe", dynamic_ncols=True, mininterval=1.0) as bar:
            base_losses, states = train_baseline(baseline, at_steps, bar)
            final = float(np.mean(base_losses[-tail:]))
            increase = [[0.0] * len(at_steps)]
            for b in blocks:
                row = []
                for t in at_steps:
                    bar.set_postfix(L=b, T=t, refresh=False)
                    losses, _ = continue_frozen(overrides, states[t], b, scratch, bar)
                    row.append(float(np.mean(losses[-tail:])) - final)
                increase.append(row)
    return ConvergenceResult(model=baseline.name, steps=steps, at_steps=at_steps, blocks=[0, *blocks],
                             increase=increase, baseline_final=final, tail_steps=tail, baseline_losses=base_losses,
                             wall_s=time.perf_counter() - start,
                             config={"overrides": overrides, "probe": asdict(probe)})


def plot_heatmap(result: ConvergenceResult, path: Path) -> None:
    """L x T heatmap of the final-loss increase, each cell annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.array(result.increase)
    fig, ax = plt.subplots(figsize=(1.4 * len(result.at_steps) + 2.5, 0.55 * len(result.blocks) + 1.8))
    image = ax.imshow(data, cmap="magma_r", aspect="auto")
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=8,
                color="white" if v > 0.6 * data.max() > 0 else "black")
    ax.set_xticks(range(len(result.at_steps)), [f"{t}\n({t / result.steps:.0%})" for t in result.at_steps])
    ax.set_yticks(range(len(result.blocks)), [f"{b}" + (" (baseline)" if b == 0 else "") for b in result.blocks])
    ax.set_xlabel("freeze step T")
    ax.set_ylabel("blocks 1..L frozen")
    fig.colorbar(image, ax=ax, label="final-loss increase")
    ax.set_title(f"{result.model}: layer convergence (baseline final loss {result.baseline_final:.4f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: ConvergenceResult, out: Path) -> str:
    """Heatmap PNG, table (CSV + Markdown) and the full result (JSON) in ``out``; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    plot_heatmap(result, out / "convergence.png")
    header = ["L \\ T", *[f"{t} ({t / result.steps:.0%})" for t in result.at_steps]]
    rows = [[b, *row] for b, row in zip(result.blocks, result.increase)]
    markdown = write_table(header, rows, out / "convergence")
    (out / "convergence.json").write_text(json.dumps(asdict(result), indent=1))
    return markdown


def parse_args(args: list[str]) -> tuple[list[str], ProbeConfig]:
    """Split ``probe.*`` knobs from pretrain-config overrides (the latter over :data:`MINIATURE`)."""
    probe_args = [a.removeprefix("probe.") for a in args if a.startswith("probe.")]
    probe = OmegaConf.merge(OmegaConf.structured(ProbeConfig), OmegaConf.from_dotlist(probe_args))
    overrides = merge_overrides(MINIATURE, [a for a in args if not a.startswith("probe.")])
    return overrides, ProbeConfig(**OmegaConf.to_container(probe))


def main(args: list[str]) -> None:
    overrides, probe = parse_args(args)
    result = run_probe(overrides, probe)
    out = Path(probe.out)
    markdown = write_report(result, out)
    print(f"{result.model}: final-loss increase over the MAE baseline (final loss {result.baseline_final:.4f}, "
          f"mean of the last {result.tail_steps} of {result.steps} steps) when blocks 1..L freeze at step T")
    print(markdown, end="")
    print(f"wrote {out}/convergence.png, .csv, .md, .json in {result.wall_s:.0f} s")
