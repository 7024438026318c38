"""What every benchmark shares: interleaved timing, a small table, atomic JSON, machine facts.

Both sides of a comparison are timed in the same run, alternating (and rotating which goes
first), so load from other processes on a shared machine lands on both and the ratio of their
medians stays meaningful even when the absolute figures move.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from bench.files import atomic_write_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: ``--quick`` (seconds-long smoke), ``--repeats``, ``--out-dir``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test, not a measurement")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per side (median reported)")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where <name>.json goes")
    return p


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call (CUDA work included: synchronised before and after)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleave(sides: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
               desc: str = "timing") -> dict[str, list[float]]:
    """Seconds per call of every side over ``repeats`` rounds, sides alternating within a round.

    Each side runs ``warmup`` untimed calls first (allocator, caches, lazy init). The order
    rotates every round so neither side always runs right after the other.
    """
    names = list(sides)
    for name in names:
        for _ in range(warmup):
            sides[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    with tqdm(total=repeats * len(names), desc=desc, unit="run", leave=False) as bar:
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(timed(sides[name]))
                bar.update()
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def world(root: str | Path, clips: int, frames: int, resolution: int, workers: int = 0) -> Any:
    """A small train split of the synthetic world under ``root`` (generated once, then memory-mapped)."""
    from bench.data.world import SyntheticWorld, WorldConfig

    cfg = WorldConfig(num_frames=frames, resolution=resolution, train_size=clips, test_size=1, workers=workers)
    return SyntheticWorld(cfg, "train", root=root)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i]: each pair ran back to back, under the same load."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def machine() -> dict[str, Any]:
    """Facts that explain a figure: CPUs, torch threads, load average, accelerator."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def table(title: str, columns: list[str], rows: list[list[Any]]) -> str:
    """A fixed-width text table (floats with 3 significant digits) under a title line."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([title, line(columns), "-" * (sum(widths) + 2 * (len(widths) - 1)), *map(line, cells)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def write_json(out_dir: str | Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically (``bench.files``)."""
    path = Path(out_dir) / f"{name}.json"
    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())
    return path


def report(name: str, config: dict[str, Any], rows: list[dict[str, Any]], goal: dict[str, Any],
           out_dir: str | Path, text: str) -> dict[str, Any]:
    """Print ``text`` and the goal line, write the JSON record, return it."""
    payload = {"name": name, "config": config, "rows": rows, "goal": goal, "machine": machine(),
               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = write_json(out_dir, name, payload)
    print(f"{text}\ngoal: {goal['text']} -> {'met' if goal['met'] else 'NOT met'}\nwritten: {path}\n")
    return payload
