"""Publish a cache directory atomically: fill a temporary sibling, fsync it, rename it into place.

Readers only ever see a complete directory or none. A crashed writer leaves a hidden ``.tmp``
sibling that nothing reads. When two writers race, the first rename wins and the loser's copy
is discarded; ``marker`` is the file whose presence says the winner's directory is complete.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def staged_directory(final: str | Path, marker: str) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``final``; on a clean exit, fsync its files and rename
    it to ``final`` (keeping a concurrent writer's complete ``final``); on error, remove it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name[:16]}-"))
    try:
        yield tmp
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            os.replace(tmp, final)
        except OSError:  # another writer published the same directory first: keep theirs
            if not (final / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
