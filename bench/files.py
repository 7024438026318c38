"""The ground floor of every write and checksum: files reach disk whole or not at all.

A write goes to a fsynced temp file beside its target (a unique name, so concurrent writers never
collide) and is renamed into place, then the directory is fsynced so the rename survives a power
loss; a failed write (disk full, crash, Ctrl-C) removes its temp file and leaves the old file
intact. Checkpoints, training states, records, boards and benchmark results all write through here.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

CHUNK = 1 << 20


def sha256_stream(f: BinaryIO | io.BufferedReader, chunk: int = CHUNK) -> str:
    """sha256 of the rest of an open binary file, read in ``chunk``-byte pieces into one buffer."""
    digest, buffer = hashlib.sha256(), bytearray(chunk)
    view = memoryview(buffer)
    while n := f.readinto(buffer):
        digest.update(view[:n])
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f, chunk)


def fsync_directory(directory: Path) -> None:
    """Persist a directory's entries (a rename is durable only once its directory is synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def temp_beside(path: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """(open binary file, its path): a temp file next to ``path``, fsynced when the block ends and
    removed if the block fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_stream(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through (e.g. ``torch.save(obj, f)``): renamed into place
    only when the block ends without error."""
    path = Path(path)
    with temp_beside(path) as (f, tmp):
        yield f
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_files({Path(path): data})


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Write several files so that a failed write leaves every old file intact: every content goes
    to its temp file first, and only when all are on disk are they renamed into place. A target
    that is a directory is refused before anything is written, so no rename of the set can fail on
    it after another succeeded."""
    for path in map(Path, files):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            with temp_beside(Path(path)) as (f, tmp):
                temps.append((tmp, Path(path)))
                f.write(data)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for directory in {path.parent for _, path in temps}:
        fsync_directory(directory)
