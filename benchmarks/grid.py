"""A probe grid's cost per head: K heads trained together (``bench.grid.fit_grid``) against one.

    python -m benchmarks.grid            # the board study's attentive grid: 4 layers x 2 learning rates
    python -m benchmarks.grid --quick

Sides, timed interleaved on random features in the grid and width of the ``t`` encoders on the
16×64×64 world (targets from a small world split), subnormals flushed, one seed:
- ``one``: ``fit_grid`` of one head (the fixed probe), an epoch of the clips;
- ``grid``: ``fit_grid`` of the K heads of ``--layers`` × ``--lrs`` over the same clips (heads of
  one layer share each batch, read once; every head runs its own forward and backward).
The figure is the cost of a head in the grid over a head alone, ``grid / (K · one)``: below 1 by
what the heads share, 1 when they share nothing.
Goal: a head in the grid costs no more than a head alone (ratio <= 1.05).
"""
from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from bench.grid import fit_grid, grid_heads, seeded_readouts
from bench.readouts import build_readout
from bench.task import FeatureSpec
from benchmarks.common import interleave, median, paired_ratio, parser, report, table, world
from benchmarks.readout_mfu import TASK_NAMES, readout_task, t_features

NAME = "grid"
GOAL = 1.05


def sides(task_name: str, layers: int, lrs: int, clips: Any, batch: int, spec: FeatureSpec, width: int) -> dict:
    """The timed fits (module docstring) of ``task_name``'s attentive readout, ``width`` wide."""
    task, targets = readout_task(task_name, clips, spec)
    rng = np.random.default_rng(0)
    feats = {layer: rng.standard_normal((len(clips), spec.grid[0], spec.grid[1] * spec.grid[2], spec.dim),
                                        dtype=np.float32) for layer in range(layers)}
    build = lambda: build_readout("attentive", task, spec.dim, num_heads=max(1, width // 16), dim=width)  # noqa: E731
    heads = grid_heads([0], list(feats), [1e-3 * 3 ** i for i in range(lrs)], [0.05])

    def fit(chosen: list) -> None:
        fit_grid(seeded_readouts([h.seed for h in chosen], build), chosen, task, feats, targets, epochs=1,
                 batch_size=batch)
    return {"one": lambda: fit(heads[:1]), "grid": lambda: fit(heads)}, len(heads)


def measure(task_name: str, layers: int, lrs: int, clips: Any, batch: int, spec: FeatureSpec, width: int,
            repeats: int, warmup: int) -> dict[str, Any]:
    """Seconds of each side and the cost of a head in the grid over a head alone."""
    steps, k = sides(task_name, layers, lrs, clips, batch, spec, width)
    times = interleave(steps, repeats, warmup, desc=task_name)
    return {"task": task_name, "heads": k, "s_one": median(times["one"]), "s_grid": median(times["grid"]),
            "per_head_over_one": paired_ratio(times["grid"], times["one"]) / k, "times_s": times}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--layers", type=int, default=4, help="layers of the grid (the board study's: 4)")
    p.add_argument("--lrs", type=int, default=2, help="learning rates of the grid (the board study's: 2)")
    p.add_argument("--clips", type=int, default=64, help="clips of the timed epoch")
    p.add_argument("--batch", type=int, default=16, help="readout batch (the study's)")
    args = p.parse_args(argv)
    frames, res, width, clips_n, repeats = ((4, 32, 32, 8, 1) if args.quick
                                            else (16, 64, 64, args.clips, args.repeats))
    spec = t_features(frames, res)
    with tempfile.TemporaryDirectory() as root:
        clips = world(root, clips_n, frames, res, workers=1)
        rows = [measure(t, args.layers, args.lrs, clips, args.batch, spec, width, repeats,
                        warmup=0 if args.quick else 1) for t in TASK_NAMES]
    text = table(f"Probe grid: seconds of an epoch of {clips_n} clips for one head and for the "
                 f"{args.layers} layers x {args.lrs} learning rates grid, attentive readout {width} wide, "
                 f"t features {spec.grid} x {spec.dim}, median of {repeats}",
                 ["task", "heads", "one head s", "grid s", "grid head / one head"],
                 [[r["task"], r["heads"], r["s_one"], r["s_grid"], r["per_head_over_one"]] for r in rows])
    goal = {"text": f"a head in the grid costs <= {GOAL}x a head alone, every task", "target": GOAL,
            "met": bool(rows) and all(r["per_head_over_one"] <= GOAL for r in rows)}
    config = {"frames": frames, "resolution": res, "width": width, "clips": clips_n, "batch": args.batch,
              "layers": args.layers, "lrs": args.lrs, "repeats": repeats, "quick": args.quick}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
