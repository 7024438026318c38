"""On-disk cache of a generated split: one stacked ``<key>.npy`` per clip key, memory-mapped on reuse.

A split is rendered into a temporary sibling directory and renamed into place only once complete,
so a directory with a manifest is always whole; leftovers of crashed runs are never read.
Worker processes render clips in parallel but results are written in index order, so the files
are byte-identical to a serial run.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from bench.staging import staged_directory

MANIFEST = "manifest.json"
WORKERS_ENV = "FROZEN4D_WORLD_WORKERS"

Render = Callable[[int], Mapping[str, Any]]


def default_workers(requested: int = 0) -> int:
    """Worker processes: ``requested`` if > 0, else $FROZEN4D_WORLD_WORKERS, else min(2, CPUs)."""
    return requested or int(os.environ.get(WORKERS_ENV, 0)) or min(2, os.cpu_count() or 1)


def load_or_build(directory: str | Path, render: Render, size: int, workers: int = 1, desc: str = "world",
                  meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The cached split in ``directory`` (clips ``render(0..size-1)``), generated first if absent."""
    directory = Path(directory)
    if not (directory / MANIFEST).exists():
        _build(directory, render, size, workers, desc, dict(meta or {}))
    return open_cache(directory)


def open_cache(directory: str | Path) -> dict[str, np.ndarray]:
    """Read-only memory maps [num_clips, ...] of every key of a complete cache directory."""
    directory = Path(directory)
    keys = json.loads((directory / MANIFEST).read_text())["keys"]
    return {k: np.load(directory / f"{k}.npy", mmap_mode="r") for k in keys}


def _build(directory: Path, render: Render, size: int, workers: int, desc: str, meta: dict[str, Any]) -> None:
    if size < 1:
        raise ValueError(f"cannot cache an empty split ({directory.name})")
    with staged_directory(directory, marker=MANIFEST) as tmp:
        keys = _write(tmp, render, size, workers, desc)
        (tmp / MANIFEST).write_text(json.dumps({"keys": keys, "clips": size, **meta}, indent=1))


def _write(tmp: Path, render: Render, size: int, workers: int, desc: str) -> list[str]:
    """Render every clip into stacked .npy files in ``tmp``; return the keys."""
    out: dict[str, np.memmap] = {}
    for i, clip in enumerate(tqdm(_clips(render, size, workers), total=size, desc=desc, unit="clip")):
        if not out:
            out = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=np.asarray(v).dtype,
                                                shape=(size, *np.shape(v))) for k, v in clip.items()}
        for k, array in out.items():
            array[i] = clip[k]
    for array in out.values():
        array.flush()
    return list(out)


def _clips(render: Render, size: int, workers: int) -> Iterator[Mapping[str, Any]]:
    """render(i) for i in order, in a process pool when that pays off."""
    if workers <= 1 or size < 2 * workers:
        yield from map(render, range(size))
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(render, range(size), chunksize=max(1, min(8, size // (4 * workers))))
