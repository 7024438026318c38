"""On-disk cache of a generated split: one stacked ``<key>.npy`` per clip key, memory-mapped on reuse.

A split is a ``bench.staging`` cache entry: rendered into a temporary sibling directory and renamed
into place only once complete (leftovers of crashed runs are never read); its ``manifest.json``
records every array's shape, dtype, size and sha256, and a directory that does not match is
removed and rendered again. A full disk is a ``DatasetError`` naming the directory. Worker
processes render clips in parallel but results are written in index order, so the files are
byte-identical to a serial run. A split whose first clips are already cached in a smaller one
(``prefix``) copies them and renders only the rest.
"""
from __future__ import annotations

import multiprocessing
import os
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from bench.errors import DatasetError
from bench.staging import EntryWriter, NpyWriter, cached_entry, open_entry

MANIFEST = "manifest.json"
WORKERS_ENV = "FROZEN4D_WORLD_WORKERS"

Render = Callable[[int], Mapping[str, Any]]


def default_workers(requested: int = 0) -> int:
    """Worker processes: ``requested`` if > 0, else $FROZEN4D_WORLD_WORKERS, else min(2, CPUs)."""
    return requested or int(os.environ.get(WORKERS_ENV, 0)) or min(2, os.cpu_count() or 1)


def load_or_build(directory: str | Path, render: Render, size: int, workers: int = 1, desc: str = "world",
                  meta: Mapping[str, Any] | None = None,
                  prefix: Callable[[], Mapping[str, np.ndarray] | None] | None = None) -> dict[str, np.ndarray]:
    """The cached split in ``directory`` (clips ``render(0..size-1)``), generated first if absent
    or damaged; ``prefix()``, asked only then, may give arrays holding its first clips already."""
    if size < 1:
        raise ValueError(f"cannot cache an empty split ({Path(directory).name})")
    build = partial(_write, render=render, size=size, workers=workers, desc=desc, meta=dict(meta or {}),
                    prefix=prefix)
    return _by_key(cached_entry(directory, MANIFEST, size, build, DatasetError)[1])


def open_cache(directory: str | Path) -> dict[str, np.ndarray]:
    """Read-only memory maps [num_clips, ...] of every key of a complete cache directory, checked
    against its manifest (``bench.staging.BadEntry`` if they do not match)."""
    return _by_key(open_entry(directory, MANIFEST)[1])


def _by_key(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name.removesuffix(".npy"): array for name, array in arrays.items()}


def _write(entry: EntryWriter, render: Render, size: int, workers: int, desc: str, meta: dict[str, Any],
           prefix: Callable[[], Mapping[str, np.ndarray] | None] | None = None) -> dict[str, Any]:
    """Render every clip (copying those ``prefix`` holds) into one stacked ``<key>.npy`` per key in
    ``entry``; return the manifest."""
    cached = (prefix() if prefix else None) or {}
    start = min(size, len(next(iter(cached.values())))) if cached else 0
    copied = ({k: a[i] for k, a in cached.items()} for i in range(start))
    out: dict[str, NpyWriter] = {}
    clips = chain(copied, _clips(render, range(start, size), workers))
    for i, clip in enumerate(tqdm(clips, total=size, desc=desc, unit="clip")):
        if not out:
            out = {k: entry.array(f"{k}.npy", (size, *np.shape(v)), np.asarray(v).dtype) for k, v in clip.items()}
        for k, array in out.items():
            array[i] = clip[k]
    return {"keys": list(out), "clips": size, **meta}


POOL_CLIPS = 16  # clips per worker below which rendering in this process beats starting a pool


def _clips(render: Render, indices: range, workers: int) -> Iterator[Mapping[str, Any]]:
    """render(i) for i in order, in a process pool when that pays off. Its workers come from a
    fork server (a fresh single-threaded process), never from forking this one: a fork copies the
    locks that this process's other threads (torch, decoders) hold, and a child can wait on one forever."""
    n = len(indices)
    if workers <= 1 or n < POOL_CLIPS * workers:
        yield from map(render, indices)
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":  # the server imports the renderer once; each pool's workers fork from it
        context.set_forkserver_preload([render.func.__module__ if isinstance(render, partial) else render.__module__])
    with context.Pool(workers) as pool:
        yield from pool.imap(render, indices, chunksize=max(1, min(8, n // (4 * workers))))
