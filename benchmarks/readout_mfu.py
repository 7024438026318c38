"""Readout training cost as model FLOP utilisation: one attentive-readout step (forward + backward +
AdamW) per task and readout width, its FLOP/s over this machine's matmul peak, and its cost per
clip-epoch.

    python -m benchmarks.readout_mfu            # every built-in task, widths 64 and 192, t features,
                                                # and point tracking on the demo's 32 of 64 tracks a step
    python -m benchmarks.readout_mfu --quick

The readout, not the encoder, dominates an evaluation over cached features (docs/design.md §11), so
this is where the demo's minutes go. FLOPs of a step are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls), plus scaled-dot-product attention forward
and backward, which the counter does not see on CPU. The features are random (a readout's cost
does not depend on their values) in the grid and width of the ``t`` encoders on the 16×64×64
world; the targets come from a small world split. The peak is a square fp32 ``torch.mm`` timed
interleaved with each step, so both see the same load.
Goal (issue "Readouts at the machine's limit"): depth and point-tracking readout steps reach
>= 50% of the matmul peak.
"""
from __future__ import annotations

import tempfile
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from bench.fit import batches, flush_denormals, optimizer, train_step
from bench.readouts import build_readout
from bench.registry import TASKS
from bench.task import FeatureSpec, Task
from benchmarks.common import interleave, median, parser, report, table, world
from benchmarks.mfu import matmul

NAME = "readout_mfu"
GOAL = 0.5
GOAL_TASKS = ("depth", "point_tracking")
TASK_NAMES = ("depth", "point_tracking", "box_tracking", "camera_pose", "action")
CASES = [*((t, {}) for t in TASK_NAMES), ("point_tracking", {"train_tracks": 32})]  # (task, its options)


def _sdpa_fwd(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_bwd(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
              **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def step_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step`` (a readout update), SDPA on CPU included."""
    aten = torch.ops.aten
    counter = FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_fwd,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_bwd})
    with counter:
        step()
    return counter.get_total_flops()


def t_features(frames: int, resolution: int) -> FeatureSpec:
    """The feature grid and width of the ``t`` encoders (2×8×8 tubelets, 192 wide) on square clips."""
    return FeatureSpec(grid=(frames // 2, resolution // 8, resolution // 8), dim=192,
                       clip=(frames, resolution, resolution))


OPTIM = {"lr": 1e-4, "weight_decay": 0.05, "total_steps": 10_000}  # a long schedule: timed steps stay in warmup


def readout_task(task_name: str, clips: Any, spec: FeatureSpec, **options: Any) -> tuple[Task, dict[str, np.ndarray]]:
    """The attentive-readout task (with ``options``) on ``clips`` and their targets, prepared on
    them, with subnormals flushed as ``bench.run.evaluate`` runs a readout."""
    flush_denormals()
    task = TASKS.get(task_name)(spec, readout="attentive", meta=clips.meta, **options)
    targets = clips.arrays([k for k in task.requires if k != "video"])
    task.prepare(targets)
    return task, targets


def step_batch(targets: dict[str, np.ndarray], batch: int, spec: FeatureSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A training batch: random features of ``spec`` (``seed``) with the first ``batch`` clips' targets."""
    features = np.random.default_rng(seed).standard_normal((batch, spec.grid[0], spec.grid[1] * spec.grid[2],
                                                             spec.dim)).astype(np.float32)
    return next(batches(features, {k: np.asarray(v[:batch]) for k, v in targets.items()}, batch))


def readout_step(task_name: str, width: int, heads: int, clips: Any, batch: int,
                 spec: FeatureSpec, **options: Any) -> Callable[[], Any]:
    """One update of ``task_name``'s attentive readout (``width`` wide) on a fixed batch, as the
    task trains on it (``Task.train_view``)."""
    task, targets = readout_task(task_name, clips, spec, **options)
    torch.manual_seed(0)
    readout = build_readout("attentive", task, spec.dim, num_heads=heads, dim=width)
    opt, sched = optimizer(readout, **OPTIM)
    data = task.train_view(step_batch(targets, batch, spec), np.random.default_rng(0))
    return lambda: train_step(readout, task, opt, sched, data)


def measure(task_name: str, width: int, clips: Any, batch: int, spec: FeatureSpec, mm_n: int,
            repeats: int, warmup: int, options: dict[str, Any]) -> dict[str, Any]:
    """Achieved FLOP/s of one readout step, the interleaved matmul peak, their ratio and the cost per clip."""
    step = readout_step(task_name, width, max(1, width // 16), clips, batch, spec, **options)
    flops = step_flops(step)
    peak_fn, peak_flops = matmul(mm_n, torch.float32, "cpu")
    times = interleave({"step": step, "peak": peak_fn}, repeats, warmup, desc=f"{task_name} {width}")
    seconds = median(times["step"])
    achieved, peak = flops / seconds, peak_flops / median(times["peak"])
    return {"task": task_name, "options": options, "width": width, "batch": batch, "gflop_per_step": flops / 1e9,
            "ms_per_clip_epoch": 1e3 * seconds / batch, "achieved_gflops": achieved / 1e9,
            "peak_gflops": peak / 1e9, "mfu": achieved / peak, "times_s": times}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=16, help="readout batch (the study's)")
    p.add_argument("--mm", type=int, default=2048, help="side of the square peak matmul")
    args = p.parse_args(argv)
    frames, res, widths, repeats, mm_n = ((4, 32, (32,), 1, 256) if args.quick
                                          else (16, 64, (64, 192), args.repeats, args.mm))
    spec = t_features(frames, res)
    with tempfile.TemporaryDirectory() as root:
        clips = world(root, args.batch, frames, res, workers=1)
        rows = [measure(t, w, clips, args.batch, spec, mm_n, repeats, 0 if args.quick else 1, options)
                for t, options in CASES for w in widths]
    text = table(f"Readout MFU: attentive readout step (fwd + bwd + AdamW) FLOP/s over the interleaved {mm_n}² "
                 f"matmul peak; t features {spec.grid} x {spec.dim}, batch {args.batch}, median of {repeats}",
                 ["task", "options", "width", "GFLOP/step", "ms/clip-epoch", "GFLOP/s", "peak GFLOP/s", "MFU"],
                 [[r["task"], " ".join(f"{k}={v}" for k, v in r["options"].items()), r["width"], r["gflop_per_step"],
                   r["ms_per_clip_epoch"], r["achieved_gflops"], r["peak_gflops"], r["mfu"]] for r in rows])
    goal_rows = [r for r in rows if r["task"] in GOAL_TASKS]
    goal = {"text": f"{' and '.join(GOAL_TASKS)} readout steps >= {GOAL:.0%} of the fp32 matmul peak",
            "target": GOAL, "met": bool(goal_rows) and all(r["mfu"] >= GOAL for r in goal_rows)}
    config = {"frames": frames, "resolution": res, "widths": list(widths), "batch": args.batch,
              "matmul_side": mm_n, "repeats": repeats, "quick": args.quick, "torch_threads": torch.get_num_threads()}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
