"""Several seeds of one readout trained together (``bench.grid``) against one seed alone.

    python -m benchmarks.multiseed            # every built-in task, 3 seeds, width 64 (the study's), t features
    python -m benchmarks.multiseed --quick

Sides, timed interleaved with the fp32 matmul peak, on random features in the grid and width of
the ``t`` encoders on the 16×64×64 world (targets from a small world split), subnormals flushed:
- ``single``: one seed's step (``bench.fit.train_step``);
- ``sequential``: K seeds' steps one after the other, each with its own readout and AdamW;
- ``batched``: the K seeds as one ``SeedStack`` step (``bench.grid.seeds_step``);
- ``vmap``: the same step with the forward ``torch.vmap``-ed over the seeds (the design
  ``bench.grid`` does not use: the CPU flash attention has no batching rule);
- ``folded``: one readout on the K seeds' batches concatenated, batch K·B: the FLOPs of a step
  that folds the seeds into the batch axis (per-seed weights would apply by bmm), i.e. the
  most such a rewrite of the readout could gain.
Goal (issue "Readouts at the machine's limit"): K = 3 batched seeds cost <= 1.5x one seed.
"""
from __future__ import annotations

import tempfile
import warnings
from typing import Any, Callable, Sequence

import torch
from torch.func import functional_call

from bench.fit import optimizer, train_step
from bench.grid import SeedStack, seeded_readouts, seeds_step
from bench.readouts import build_readout
from bench.task import FeatureSpec, Task
from benchmarks.common import interleave, median, paired_ratio, parser, report, table, world
from benchmarks.mfu import matmul
from benchmarks.readout_mfu import OPTIM, TASK_NAMES, readout_task, step_batch, step_flops, t_features

NAME = "multiseed"
GOAL = 1.5
SIDES = ("single", "sequential", "batched", "vmap", "folded")


def vmap_step(stack: SeedStack, task: Task, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
              group: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """``seeds_step`` with one forward vmapped over the seeds' stacked parameters and batches."""
    params = dict(zip(stack.names, stack.stacked))
    data = {k: torch.stack([batch[k] for batch in group]) for k in group[0]}
    run = lambda p, batch: functional_call(stack.readouts[0], p, (batch["features"], batch))  # noqa: E731
    with warnings.catch_warnings():  # "not yet implemented the batching rule": the point of this side
        warnings.simplefilter("ignore", UserWarning)
        out = torch.vmap(run)(params, data)
    losses = torch.stack([task.loss(out[k], batch) for k, batch in enumerate(group)])
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt.step()
    sched.step()
    return losses.detach()


def sides(task_name: str, width: int, seeds: int, clips: Any, batch: int, spec: FeatureSpec) -> dict[str, Callable]:
    """The timed steps (module docstring) of ``task_name``'s attentive readout, ``width`` wide."""
    task, targets = readout_task(task_name, clips, spec)
    build = lambda: build_readout("attentive", task, spec.dim, num_heads=max(1, width // 16), dim=width)  # noqa: E731
    group = [step_batch(targets, batch, spec, seed) for seed in range(seeds)]
    alone = [(r, *optimizer(r, **OPTIM)) for r in seeded_readouts(range(seeds), build)]
    first, first_opt, first_sched = alone[0]
    stack, vstack = (SeedStack(seeded_readouts(range(seeds), build)) for _ in range(2))
    stacked, vstacked = optimizer(stack, **OPTIM), optimizer(vstack, **OPTIM)
    folded = seeded_readouts([0], build)[0]
    folded_opt = optimizer(folded, **OPTIM)
    folded_batch = {k: torch.cat([b[k] for b in group]) for k in group[0]}
    return {"single": lambda: train_step(first, task, first_opt, first_sched, group[0]),
            "sequential": lambda: [train_step(r, task, opt, sched, b) for (r, opt, sched), b in zip(alone, group)],
            "batched": lambda: seeds_step(stack, task, *stacked, group),
            "vmap": lambda: vmap_step(vstack, task, *vstacked, group),
            "folded": lambda: train_step(folded, task, *folded_opt, folded_batch)}


def measure(task_name: str, width: int, seeds: int, clips: Any, batch: int, spec: FeatureSpec, mm_n: int,
            repeats: int, warmup: int) -> dict[str, Any]:
    """Milliseconds per step of every side, their ratios to one seed, and FLOP/s over the matmul peak."""
    steps = sides(task_name, width, seeds, clips, batch, spec)
    flops = {name: step_flops(steps[name]) for name in ("single", "batched")}
    peak_fn, peak_flops = matmul(mm_n, torch.float32, "cpu")
    times = interleave({**steps, "peak": peak_fn}, repeats, warmup, desc=f"{task_name} {width}")
    peak = peak_flops / median(times["peak"])
    return {"task": task_name, "width": width, "seeds": seeds, "batch": batch,
            **{f"ms_{name}": 1e3 * median(times[name]) for name in SIDES},
            **{f"{name}_over_single": paired_ratio(times[name], times["single"]) for name in SIDES[1:]},
            "gflop_single": flops["single"] / 1e9, "gflop_batched": flops["batched"] / 1e9, "peak_gflops": peak / 1e9,
            "mfu_single": flops["single"] / median(times["single"]) / peak,
            "mfu_batched": flops["batched"] / median(times["batched"]) / peak, "times_s": times}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=3, help="K, seeds trained together")
    p.add_argument("--batch", type=int, default=16, help="readout batch (the study's)")
    p.add_argument("--width", type=int, default=64, help="readout width (the study's; heads = width // 16)")
    p.add_argument("--mm", type=int, default=2048, help="side of the square peak matmul")
    args = p.parse_args(argv)
    frames, res, width, repeats, mm_n = ((4, 32, 32, 1, 256) if args.quick
                                         else (16, 64, args.width, args.repeats, args.mm))
    spec = t_features(frames, res)
    with tempfile.TemporaryDirectory() as root:
        clips = world(root, args.batch, frames, res, workers=1)
        rows = [measure(t, width, args.seeds, clips, args.batch, spec, mm_n, repeats, warmup=0 if args.quick else 1)
                for t in TASK_NAMES]
    k = args.seeds
    text = table(f"Multi-seed readout: ms per step of 1 seed, of {k} seeds sequential, batched (SeedStack), vmapped "
                 f"and folded into a batch of {k}x{args.batch}; attentive readout {width} wide, t features "
                 f"{spec.grid} x {spec.dim}, median of {repeats}; MFU: FLOP/s over the interleaved {mm_n}² "
                 "matmul peak",
                 ["task", "1 seed", f"{k} seq", f"{k} batched", f"{k} vmap", f"{k} folded", "batched/1", "seq/1",
                  "vmap/1", "folded/1", "MFU 1", f"MFU {k}"],
                 [[r["task"], *(r[f"ms_{n}"] for n in SIDES), r["batched_over_single"], r["sequential_over_single"],
                   r["vmap_over_single"], r["folded_over_single"], r["mfu_single"], r["mfu_batched"]] for r in rows])
    goal = {"text": f"{k} seeds batched <= {GOAL}x the step of one seed, every task",
            "target": GOAL, "met": bool(rows) and all(r["batched_over_single"] <= GOAL for r in rows)}
    config = {"frames": frames, "resolution": res, "width": width, "seeds": k, "batch": args.batch,
              "matmul_side": mm_n, "repeats": repeats, "quick": args.quick, "torch_threads": torch.get_num_threads()}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
