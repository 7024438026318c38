"""Is the synthetic world ever the bottleneck? Generation and cached-read clips/s vs ViT-S encoding.

    python -m benchmarks.world_generation            # 16x64x64 clips: 16 per generation run
    python -m benchmarks.world_generation --quick

Four rates, interleaved in one run:
- ``generate x1``: ``bench.data.world_cache.load_or_build`` rendering a fresh split in one process;
- ``generate xN``: the same with N worker processes (the default: min(2, CPUs));
- ``read (mmap)``: every clip's video and depth copied out of the memory-mapped cache (what
  every later run pays: the world is generated once per config and seed);
- ``encode ViT-S``: ``encoder(x)`` on the same clips, batch 8 (the consumer).
Goal: parallel generation and the cached read both outpace the encoder.
"""
from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.data.world import WorldConfig, render_clip
from bench.data.world_cache import default_workers, load_or_build, open_cache
from bench.models import build_encoder
from bench.models.vit import normalize_video
from benchmarks.common import interleave, median, parser, report, table

NAME = "world_generation"


def generate(cfg: WorldConfig, root: Path, workers: int) -> Callable[[], None]:
    """Render the whole split into a fresh cache directory with ``workers`` processes."""
    def run() -> None:
        shutil.rmtree(root, ignore_errors=True)
        load_or_build(root, partial(render_clip, cfg, "train"), cfg.train_size, workers, desc=f"world x{workers}")
    return run


def read(root: Path) -> Callable[[], None]:
    """Copy every clip's video and depth out of the memory-mapped cache, one clip at a time."""
    def run() -> None:
        arrays = open_cache(root)
        for i in range(len(arrays["video"])):
            np.array(arrays["video"][i]), np.array(arrays["depth"][i])
    return run


def encode(cfg: WorldConfig, batch_size: int) -> Callable[[], None]:
    """ViT-S forward over ``cfg.train_size`` random clips of the world's shape."""
    model, _ = build_encoder("random_s", img_size=cfg.resolution, num_frames=cfg.num_frames)
    shape = (cfg.train_size, cfg.num_frames, cfg.resolution, cfg.resolution, 3)
    video = normalize_video(torch.randint(0, 256, shape, dtype=torch.uint8))

    @torch.inference_mode()
    def run() -> None:
        for start in range(0, len(video), batch_size):
            model(video[start:start + batch_size])
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="pool size of the parallel side; 0: the default")
    args = p.parse_args(argv)
    workers = max(2, default_workers(args.workers))
    clips, frames, res, repeats = (4, 4, 32, 1) if args.quick else (args.clips, 16, 64, args.repeats)
    cfg = WorldConfig(num_frames=frames, resolution=res, train_size=clips)
    with tempfile.TemporaryDirectory() as tmp:
        cached = Path(tmp) / "cached"
        generate(cfg, cached, workers)()
        sides = {"generate x1": generate(cfg, Path(tmp) / "serial", 1),
                 f"generate x{workers}": generate(cfg, Path(tmp) / "pooled", workers),
                 "read (mmap)": read(cached), "encode ViT-S": encode(cfg, 8)}
        times = interleave(sides, repeats, warmup=0, desc="world")
    rate = {k: clips / median(v) for k, v in times.items()}
    encode_rate = rate["encode ViT-S"]
    rows = [{"side": k, "clips_s": v, "vs_encode": v / encode_rate, "times_s": times[k]} for k, v in rate.items()]
    met = rate[f"generate x{workers}"] >= encode_rate and rate["read (mmap)"] >= encode_rate
    text = table(f"World generation vs ViT-S encoding: {clips} clips {frames}x{res}x{res}, median of {repeats}",
                 ["side", "clips/s", "x encode rate"], [[r["side"], r["clips_s"], r["vs_encode"]] for r in rows])
    config = {"clips": clips, "frames": frames, "resolution": res, "workers": workers, "repeats": repeats,
              "quick": args.quick}
    goal = {"text": "parallel generation and cached reads outpace ViT-S encoding", "target": 1.0, "met": met}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
