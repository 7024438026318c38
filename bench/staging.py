"""Cache entries: written so that a full disk is an error, published atomically, never served damaged.

An entry is a directory of ``.npy`` arrays stacked over clips plus one JSON metadata file that
records each array's shape, dtype, byte size and sha256 (``cached_entry``).

- Writing: the directory is filled as a temporary sibling, fsynced and renamed into place, so
  readers see a complete directory or none; a killed writer leaves a hidden ``.tmp`` sibling
  that nothing reads, named with its host and process id, and the next writer in that
  directory on the same host removes it once that process is gone. When two writers race, the
  first rename wins and the loser's copy is discarded. Arrays go out through ordinary buffered
  writes into files whose blocks are reserved up front (``posix_fallocate``): a full disk raises
  ENOSPC before any work, never a SIGBUS midway as a page fault in a sparse memory map does.
- Reading: every open checks each array's size and ``.npy`` header against the metadata, and its
  sha256 once per process and file version (device, inode, size, mtime). An entry that fails is
  named in a warning, removed and rebuilt.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import operator
import os
import shutil
import socket
import tempfile
import uuid
import warnings
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
from numpy.lib import format as npy_format

from bench.files import fsync_directory, sha256_stream

T = TypeVar("T")

_VERIFIED: set[tuple[int, int, int, int]] = set()  # versions of files whose sha256 this process has checked


class WriteError(OSError):
    """An OSError while writing or publishing a cache entry (a full disk, a quota, permissions);
    ``filename`` is the file or directory being written."""


class BadEntry(Exception):
    """A published entry that fails a check; the message names the file and what is wrong."""


class CacheWarning(UserWarning):
    """A damaged cache entry was removed and is rebuilt."""


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Re-raise an OSError as a WriteError naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from exc


HOST = socket.gethostname().replace("-", "_")  # in temp names, between dashes: <host>.<pid>


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's, alive
        return False
    return False


def remove_orphans(directory: Path) -> None:
    """Remove the temp siblings in ``directory`` left by killed writers of this host (their process
    is gone); other hosts' (a shared cache) and live writers' are left alone."""
    for tmp in directory.glob(".tmp-*"):
        host, _, pid = tmp.name.rsplit("-", 2)[-2].rpartition(".") if tmp.name.count("-") >= 3 else ("", "", "")
        if host == HOST and pid.isdigit() and int(pid) != os.getpid() and process_gone(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_directory(final: str | Path, marker: str) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``final``; on a clean exit, fsync its files and rename
    it to ``final`` (keeping a concurrent writer's complete ``final``); on any error, remove it.
    Failures of its own writes raise WriteError."""
    final = Path(final)
    with _writing(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(final.parent)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name[:16]}-{HOST}.{os.getpid()}-"))
    try:
        yield tmp
        with _writing(final):
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.replace(tmp, final)
            except OSError:  # another writer published the same directory first: keep theirs
                if not (final / marker).exists():
                    raise
            fsync_directory(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class NpyWriter:
    """A new ``.npy`` file of known shape and dtype, filled in row order (``w[i] = row`` or
    ``w[a:b] = rows``, like the memory map it replaces) through buffered writes.

    Its blocks are reserved on creation, so a full disk fails at once and not with a SIGBUS
    midway; every failed write raises WriteError. The sha256 is computed as the bytes go out.
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: Any):
        self.path, self.shape, self.dtype = Path(path), tuple(int(n) for n in shape), np.dtype(dtype)
        header = io.BytesIO()
        npy_format.write_array_header_1_0(header, {"descr": npy_format.dtype_to_descr(self.dtype),
                                                   "fortran_order": False, "shape": self.shape})
        self.nbytes = header.tell() + math.prod(self.shape) * self.dtype.itemsize
        self._rows, self._sha = 0, hashlib.sha256()
        with _writing(self.path):
            self._file = open(self.path, "wb")
        try:
            with _writing(self.path):
                _reserve(self._file.fileno(), self.nbytes)
            self._write(header.getbuffer())
        except BaseException:
            self.discard()
            raise

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index: int | slice, rows: Any) -> None:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            shape = (stop - start, *self.shape[1:])
        else:
            start = operator.index(index)
            stop, step, shape = start + 1, 1, self.shape[1:]
        if start != self._rows or step != 1 or stop > len(self):
            raise IndexError(f"{self.path}: rows are written in order; the next is row {self._rows}, not {index}")
        block = np.ascontiguousarray(np.broadcast_to(np.asarray(rows, self.dtype), shape))
        self._write(block.reshape(-1).view(np.uint8))
        self._rows = stop

    def _write(self, data: Any) -> None:
        self._sha.update(data)
        with _writing(self.path):
            self._file.write(data)

    def close(self) -> dict[str, Any]:
        """Flush and close the complete file; return its record: shape, dtype, bytes, sha256."""
        if self._rows != len(self):
            raise RuntimeError(f"{self.path}: only {self._rows} of {len(self)} rows were written")
        with _writing(self.path):
            self._file.close()
        _VERIFIED.add(_version(self.path.stat()))  # this process hashed exactly these bytes
        return {"shape": list(self.shape), "dtype": self.dtype.str, "bytes": self.nbytes,
                "sha256": self._sha.hexdigest()}

    def discard(self) -> None:
        """Close after a failure, without checks (the file goes with its temporary directory)."""
        with suppress(OSError):
            self._file.close()


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate the file's blocks now, so that a full disk is ENOSPC here and not a SIGBUS later."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except AttributeError:  # no posix_fallocate (macOS, Windows): the buffered writes still report ENOSPC
        pass
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system that cannot reserve: as above
            raise


class EntryWriter:
    """The temporary directory of an entry being written: ``array()`` opens an NpyWriter whose
    record goes into the entry's metadata."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._arrays: dict[str, NpyWriter] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> NpyWriter:
        self._arrays[name] = writer = NpyWriter(self.directory / name, shape, dtype)
        return writer

    def close(self) -> dict[str, dict[str, Any]]:
        return {name: writer.close() for name, writer in self._arrays.items()}

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        for writer in self._arrays.values():
            writer.discard()


Build = Callable[[EntryWriter], dict[str, Any]]
BuildMany = Callable[[list[tuple[Path, EntryWriter]]], list[dict[str, Any]]]


def cached_entry(directory: str | Path, meta_name: str, rows: int, build: Build,
                 error: type[Exception]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and read-only memory maps of the entry at ``directory``, each array ``rows`` long.

    A missing entry is written first: ``build`` fills arrays opened with ``EntryWriter.array`` and
    returns the rest of the metadata. An entry that fails a check is named in a warning, removed
    and rebuilt. A write that fails (a full disk) raises ``error`` naming ``directory`` and leaves
    nothing behind.
    """
    return cached_entries([directory], meta_name, rows, lambda made: [build(made[0][1])], error)[0]


def cached_entries(directories: list[str | Path], meta_name: str, rows: int, build: BuildMany,
                   error: type[Exception]) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """``cached_entry`` of several entries whose missing ones are written together: ``build`` gets
    (final directory, writer) of each missing entry and returns their metadata, in that order
    (one encoder pass for several feature layers). Each entry is published on its own."""
    directories = [Path(d) for d in directories]
    opened = {d: entry for d in directories if (entry := _open_sound(d, meta_name, rows)) is not None}
    missing = [d for d in directories if d not in opened]
    try:
        if missing:
            _write_entries(missing, meta_name, build)
    except WriteError as exc:
        named = [d for d in missing if Path(exc.filename).is_relative_to(d.parent)]
        if not named:  # another cache's write, e.g. a dataset's
            raise
        raise error(f"{named[0]}: cannot write the cache entry ({exc.strerror}); nothing was kept") from exc
    return [opened.get(d) or open_entry(d, meta_name, rows) for d in directories]  # fails only on a bug or a bad disk


def _open_sound(directory: Path, meta_name: str, rows: int) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The published entry at ``directory``, or None if there is none (a damaged one is named in a
    warning and removed)."""
    if not directory.exists():
        return None
    try:
        return open_entry(directory, meta_name, rows)
    except BadEntry as bad:
        warnings.warn(f"{bad}; removed the cache entry, rebuilding it", CacheWarning, stacklevel=4)
        _remove(directory)
        return None


def _write_entries(directories: list[Path], meta_name: str, build: BuildMany) -> None:
    """Write every entry of ``directories`` in a staged directory of its own, filled by one ``build``."""
    with ExitStack() as stack:
        made = [(d, stack.enter_context(EntryWriter(stack.enter_context(staged_directory(d, marker=meta_name)))))
                for d in directories]
        for (_, writer), meta in zip(made, build(made)):
            path = writer.directory / meta_name
            meta = {**meta, "arrays": writer.close()}
            with _writing(path):
                path.write_text(json.dumps(meta, indent=1))


def _remove(directory: Path) -> None:
    """Take a bad entry out of readers' sight at once (a rename), then delete it."""
    trash = directory.with_name(f".bad-{directory.name[:16]}-{uuid.uuid4().hex[:8]}")
    try:
        with _writing(directory):
            os.replace(directory, trash)
    except WriteError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: another process removed it first
            raise
    shutil.rmtree(trash, ignore_errors=True)


def open_entry(directory: str | Path, meta_name: str,
               rows: int | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and read-only memory maps of a published entry, after checking every array
    against its record (and its length against ``rows``); raises BadEntry."""
    path = Path(directory) / meta_name
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadEntry(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise BadEntry(f"{path}: unreadable metadata ({type(exc).__name__}: {exc})") from None
    records = meta.get("arrays") if isinstance(meta, dict) else None
    if not isinstance(records, dict) or not records:
        raise BadEntry(f"{path}: records no arrays (damaged, or written by an older frozen4d)")
    return meta, {name: _open_array(path.parent / name, record, rows) for name, record in records.items()}


def first_open(directories: Iterable[Path], open_fn: Callable[[Path], T]) -> T | None:
    """``open_fn`` of the first of ``directories`` whose entry is complete and sound (it raises no
    BadEntry), or None: where a cache looks for a smaller entry to reuse."""
    for directory in directories:
        try:
            return open_fn(directory)
        except BadEntry:
            continue
    return None


def _open_array(path: Path, record: Any, rows: int | None) -> np.ndarray:
    """A read-only memory map of ``path`` once its size, header and sha256 match ``record``."""
    try:
        shape, dtype = tuple(int(n) for n in record["shape"]), np.dtype(record["dtype"]).str
        nbytes, sha = int(record["bytes"]), str(record["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadEntry(f"{path}: malformed record in the metadata ({type(exc).__name__}: {exc})") from None
    if rows is not None and shape[:1] != (rows,):
        raise BadEntry(f"{path}: the metadata records shape {shape}, expected {rows} rows (one per clip)")
    try:
        stat = path.stat()
        if stat.st_size != nbytes:
            raise BadEntry(f"{path}: {stat.st_size} bytes, the metadata records {nbytes} (empty, truncated "
                           f"or overwritten)")
        with open(path, "rb") as f:
            found = _read_header(f)
            if found != (shape, dtype):
                raise BadEntry(f"{path}: the .npy header says shape {found[0]} dtype {found[1]}, the metadata "
                               f"records shape {shape} dtype {dtype}")
            if _version(stat) not in _VERIFIED:
                f.seek(0)
                digest = sha256_stream(f)
                if digest != sha:
                    raise BadEntry(f"{path}: sha256 {digest[:12]}… does not match the metadata ({sha[:12]}…): "
                                   f"the bytes changed since they were written")
                _VERIFIED.add(_version(stat))
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise BadEntry(f"{path}: missing") from None
    except OSError as exc:
        raise BadEntry(f"{path}: unreadable ({exc.strerror or exc})") from None


def _read_header(f: io.BufferedReader) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) of a C-order version 1.0 ``.npy`` header, the only kind NpyWriter writes."""
    try:
        version = npy_format.read_magic(f)
        if version != (1, 0):
            raise ValueError(f"format version {version}, expected (1, 0)")
        shape, fortran_order, dtype = npy_format.read_array_header_1_0(f)
    except (ValueError, TypeError) as exc:
        raise BadEntry(f"{f.name}: unreadable .npy header ({exc})") from None
    if fortran_order:
        raise BadEntry(f"{f.name}: the .npy header says Fortran order, expected C order")
    return shape, dtype.str


def _version(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies one version of a file: device, inode, size, modification time."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns
