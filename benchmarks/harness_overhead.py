"""Harness overhead of feature extraction: ``bench.features.cached_features`` vs a bare ``encoder(x)``.

    python -m benchmarks.harness_overhead            # sizes t, s (ViT-S) and b, 64 clips of 16x64x64
    python -m benchmarks.harness_overhead --quick

The harness side is the real path of ``bench.run``: read uint8 clips from the memory-mapped
synthetic world, normalise, encode batch by batch, convert to fp16 and write a fresh cache entry
(temp directory, fsync, rename) under a temporary cache root. The bare side calls the same
encoder on the same batches already normalised in memory. Goal: the harness keeps >= 97% of
the bare clips/s. The sides alternate round by round; per-round times are reported so that the
spread (about ±5% on a shared 2-core machine) can be read against the gap.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.features import cached_features
from bench.models import build_encoder
from bench.models.vit import normalize_video
from benchmarks.common import interleave, median, parser, report, table, world

NAME = "harness_overhead"
GOAL = 0.97


def harness_side(model: torch.nn.Module, dataset: Any, root: Path, batch_size: int) -> Callable[[], None]:
    """One full extraction into a cache root that is emptied first (always a miss)."""
    def run() -> None:
        shutil.rmtree(root, ignore_errors=True)
        cached_features(model, "bench", dataset, root, batch_size=batch_size)
    return run


def bare_side(model: torch.nn.Module, dataset: Any, batch_size: int) -> Callable[[], None]:
    """The encoder alone, on pre-loaded normalised batches."""
    videos = torch.from_numpy(np.array(dataset.arrays(["video"])["video"]))
    batches = [normalize_video(videos[i:i + batch_size]) for i in range(0, len(videos), batch_size)]

    @torch.inference_mode()
    def run() -> None:
        for x in batches:
            model(x)
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="the harness default (features.batch_size)")
    p.add_argument("--sizes", default="t,s,b")
    args = p.parse_args(argv)
    clips, frames, res, repeats = (4, 4, 32, 1) if args.quick else (args.clips, 16, 64, args.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = world(tmp, clips, frames, res)
        for size in args.sizes.split(","):
            model, _ = build_encoder(f"random_{size}", img_size=res, num_frames=frames)
            sides = {"harness": harness_side(model, data, Path(tmp) / f"features-{size}", args.batch_size),
                     "bare": bare_side(model, data, args.batch_size)}
            times = interleave(sides, repeats, warmup=0 if args.quick else 1, desc=f"ViT-{size}")
            rate = {k: clips / median(v) for k, v in times.items()}
            rows.append({"model": f"random_{size}", "harness_clips_s": rate["harness"], "bare_clips_s": rate["bare"],
                         "ratio": rate["harness"] / rate["bare"], "times_s": times})
    met = all(r["ratio"] >= GOAL for r in rows)
    text = table(f"Harness overhead: cached_features vs encoder(x), {clips} clips {frames}x{res}x{res}, "
                 f"batch {args.batch_size}, median of {repeats}",
                 ["model", "harness clips/s", "bare clips/s", "ratio"],
                 [[r["model"], r["harness_clips_s"], r["bare_clips_s"], r["ratio"]] for r in rows])
    config = {"clips": clips, "frames": frames, "resolution": res, "batch_size": args.batch_size,
              "repeats": repeats, "quick": args.quick}
    goal = {"text": f"harness >= {GOAL:.0%} of bare encoder throughput", "target": GOAL, "met": met}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
