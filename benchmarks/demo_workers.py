"""Does ``make demo``'s worker pool pay? N single-thread processes vs one process with N threads.

    python -m benchmarks.demo_workers            # 4 jobs per side, median of 3 interleaved rounds
    python -m benchmarks.demo_workers --quick

The same batch of jobs runs on two warm process pools, interleaved: ``1 x N threads`` (one
worker, ``torch.set_num_threads(N)``, jobs one after another) and ``N x 1 thread`` (N workers,
one thread each: what ``leaderboard.demo`` does). A job is the demo's dominant work at CPU size:
training steps of a ViT-t (16x64x64 clips, batch 8, forward + backward) and of the attentive depth
readout over 512 tokens. Goal: the pool's throughput is at least the single process's.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import torch

from bench.fit import optimizer
from bench.models import build_encoder
from bench.readouts import build_readout
from bench.task import FeatureSpec
from benchmarks.common import interleave, median, parser, report, table
from tasks.depth import Depth

NAME = "demo_workers"


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def job(steps: int, frames: int, resolution: int) -> None:
    """``steps`` training steps of a ViT-t and of a depth readout on random data (one demo-like job)."""
    torch.manual_seed(0)
    encoder, _ = build_encoder("random_t", img_size=resolution, num_frames=frames)
    encoder.train()
    spec = FeatureSpec(grid=encoder.grid_for(frames, resolution, resolution), dim=encoder.cfg.embed_dim,
                       clip=(frames, resolution, resolution))
    task = Depth(spec)
    readout = build_readout("attentive", task, spec.dim, num_heads=4, dim=96)
    opts = [torch.optim.AdamW(encoder.parameters(), 1e-4), optimizer(readout, 1e-3, 0.05, steps)[0]]
    video = torch.randn(8, 3, frames, resolution, resolution)
    features = torch.randn(16, spec.grid[0], spec.grid[1] * spec.grid[2], spec.dim)
    batch = {"features": features, "depth": torch.rand(16, frames, resolution, resolution) + 1}
    for _ in range(steps):
        encoder(video).square().mean().backward()
        task.loss(readout(features, batch), batch).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad()


def side(pool: ProcessPoolExecutor, jobs: int, args: tuple[int, int, int]) -> Callable[[], None]:
    """Run ``jobs`` jobs on ``pool`` and wait for all of them."""
    def run() -> None:
        for future in [pool.submit(job, *args) for _ in range(jobs)]:
            future.result()
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N: pool size and thread count")
    args = p.parse_args(argv)
    n = max(1, args.workers)
    steps, frames, res, repeats = (1, 4, 32, 1) if args.quick else (4, 16, 64, args.repeats)
    jobs = 2 * n
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, ctx, _set_threads, (n,)) as single, \
            ProcessPoolExecutor(n, ctx, _set_threads, (1,)) as pooled:
        sides = {f"1 x {n} threads": side(single, jobs, (steps, frames, res)),
                 f"{n} x 1 thread": side(pooled, jobs, (steps, frames, res))}
        times = interleave(sides, repeats, warmup=1, desc="demo workers")
    rate = {k: jobs / median(v) for k, v in times.items()}
    base = rate[f"1 x {n} threads"]
    rows = [{"side": k, "jobs_s": v, "speedup": v / base, "times_s": times[k]} for k, v in rate.items()]
    text = table(f"Demo-like jobs ({steps} ViT-t + depth-readout steps each, {frames}x{res}x{res}), {jobs} per side, "
                 f"median of {repeats}", ["side", "jobs/s", "x single process"],
                 [[r["side"], r["jobs_s"], r["speedup"]] for r in rows])
    config = {"workers": n, "jobs": jobs, "steps": steps, "frames": frames, "resolution": res, "repeats": repeats,
              "quick": args.quick}
    goal = {"text": f"{n} single-thread workers are at least as fast as one {n}-thread process", "target": 1.0,
            "met": rows[1]["speedup"] >= 1.0}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
