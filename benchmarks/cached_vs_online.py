"""One readout epoch over cached features vs one with the frozen encoder in the loop (online probe).

    python -m benchmarks.cached_vs_online            # depth and action, attentive readout, ViT-S, 32 clips 16x64x64
    python -m benchmarks.cached_vs_online --quick

Cached: ``bench.fit.fit`` for one epoch over the fp16 feature memmap (what ``bench.run`` does
after the one-off extraction). Online: the same readout, optimiser, batch order and
``bench.fit.train_step``, but every step first encodes its clips under ``torch.inference_mode``.
The one-off extraction is reported too, with the epoch count after which caching has paid for
itself. Goal (depth): a cached epoch is >= 10x faster than an online one. Action (one query)
is the contrast: a light readout, where the encoder is nearly all of an online step.
"""
from __future__ import annotations

import math
import tempfile
from typing import Any, Callable

import numpy as np
import torch

from bench.features import cached_features
from bench.fit import fit, optimizer, train_step
from bench.models import build_encoder
from bench.models.vit import VideoViT, normalize_video
from bench.readouts import AttentiveReadout, LearnedQueries, build_readout
from bench.registry import TASKS
from bench.task import FeatureSpec, Task
from benchmarks.common import interleave, median, paired_ratio, parser, report, table, timed, world

NAME = "cached_vs_online"
GOAL = 10.0
RECIPE = AttentiveReadout.recipe
LR, WEIGHT_DECAY = RECIPE["lr"], RECIPE["weight_decay"]


def targets(task: Task, data: Any) -> dict[str, np.ndarray]:
    """The clip keys the task trains on (everything it needs but the video)."""
    return data.arrays([k for k in task.requires if k != "video"])


def online_epoch(encoder: VideoViT, task: Task, data: Any, batch_size: int, seed: int) -> Callable[[], None]:
    """An epoch of the online probe: encode each batch, then the same readout step ``fit`` takes."""
    videos, arrays = data.arrays(["video"])["video"], targets(task, data)

    def run() -> None:
        torch.manual_seed(seed)
        readout = build_readout("attentive", task, task.spec.dim).train()
        order = np.random.default_rng(seed).permutation(len(data))
        opt, sched = optimizer(readout, LR, WEIGHT_DECAY, math.ceil(len(data) / batch_size))
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start:start + batch_size])
            with torch.inference_mode():
                feats = encoder(normalize_video(torch.from_numpy(videos[idx])))
            batch = {"features": feats.clone(), **{k: torch.from_numpy(v[idx]) for k, v in arrays.items()}}
            train_step(readout, task, opt, sched, batch)
    return run


def cached_epoch(task: Task, feats: np.ndarray, data: Any, batch_size: int, seed: int) -> Callable[[], None]:
    """An epoch of ``bench.fit.fit`` over the cached features (readout built fresh, as bench.run does)."""
    arrays = targets(task, data)

    def run() -> None:
        torch.manual_seed(seed)
        readout = build_readout("attentive", task, task.spec.dim)
        fit(readout, task, feats, arrays, 1, batch_size, LR, WEIGHT_DECAY, seed)
    return run


def compare(name: str, encoder: VideoViT, feats: np.ndarray, data: Any, batch_size: int, repeats: int,
            warmup: int, extract_s: float) -> dict[str, Any]:
    """Cached and online epochs of task ``name``, interleaved; speedup = online / cached."""
    frames, res = data.cfg.num_frames, data.cfg.resolution
    spec = FeatureSpec(grid=encoder.grid_for(frames, res, res), dim=encoder.cfg.embed_dim, clip=(frames, res, res))
    task = TASKS.get(name)(spec, readout="attentive", meta=data.meta)
    sides = {"cached": cached_epoch(task, feats, data, batch_size, 0),
             "online": online_epoch(encoder, task, data, batch_size, 0)}
    times = interleave(sides, repeats, warmup, desc=f"{name} epochs")
    cached, online = median(times["cached"]), median(times["online"])
    queries = task.queries(8)
    return {"task": name, "readout": "attentive",
            "queries": queries.query.shape[1] if isinstance(queries, LearnedQueries) else None,
            "cached_epoch_s": cached, "online_epoch_s": online, "speedup": paired_ratio(times["online"], times["cached"]),
            "extract_s": extract_s, "break_even_epochs": extract_s / max(online - cached, 1e-9), "times_s": times}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"], help="readout batch (default: the recipe's)")
    p.add_argument("--size", default="s")
    p.add_argument("--tasks", default="depth,action", help="the goal applies to depth")
    args = p.parse_args(argv)
    clips, frames, res, repeats = (4, 4, 32, 1) if args.quick else (args.clips, 16, 64, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        data = world(tmp, clips, frames, res)
        encoder, _ = build_encoder(f"random_{args.size}", img_size=res, num_frames=frames)
        holder: dict[str, np.ndarray] = {}
        extract_s = timed(lambda: holder.update(feats=cached_features(encoder, "bench", data, tmp)))
        rows = [dict(model=f"random_{args.size}", **compare(name, encoder, holder["feats"], data, args.batch_size,
                                                              repeats, 0 if args.quick else 1, extract_s))
                for name in args.tasks.split(",")]
    text = table(f"Cached vs online readout epoch: attentive readout on ViT-{args.size}, {clips} clips "
                 f"{frames}x{res}x{res}, batch {args.batch_size}, median of {repeats}",
                 ["model", "task", "queries", "cached epoch s", "online epoch s", "speedup", "extraction s",
                  "break-even epochs"],
                 [[r["model"], r["task"], r["queries"], r["cached_epoch_s"], r["online_epoch_s"], r["speedup"],
                   r["extract_s"], r["break_even_epochs"]] for r in rows])
    config = {"clips": clips, "frames": frames, "resolution": res, "batch_size": args.batch_size,
              "repeats": repeats, "quick": args.quick}
    depth = [r["speedup"] for r in rows if r["task"] == "depth"]
    goal = {"text": f"depth: cached epoch >= {GOAL:g}x faster than online", "target": GOAL,
            "met": bool(depth) and min(depth) >= GOAL}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
