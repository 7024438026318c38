"""Atomic publication of cache directories and their array writer (bench.staging)."""
import errno
import os
from pathlib import Path

import numpy as np
import pytest

from bench import staging
from bench.staging import NpyWriter, WriteError, staged_directory


def test_publishes_complete_and_cleans_up_on_error(tmp_path):
    final = tmp_path / "cache" / "entry"
    with pytest.raises(RuntimeError):
        with staged_directory(final, marker="done") as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("crash mid-write")
    assert not final.exists() and list(final.parent.iterdir()) == []  # nothing half-written, no temp left
    with staged_directory(final, marker="done") as tmp:
        (tmp / "done").write_text("ok")
    assert (final / "done").read_text() == "ok" and [p.name for p in final.parent.iterdir()] == ["entry"]


def test_a_concurrent_winner_is_kept_and_an_incomplete_one_is_an_error(tmp_path):
    final = tmp_path / "entry"
    with staged_directory(final, marker="done") as tmp:
        (tmp / "done").write_text("loser")
        final.mkdir()
        (final / "done").write_text("winner")  # another writer published first
    assert (final / "done").read_text() == "winner" and [p.name for p in tmp_path.iterdir()] == ["entry"]
    (final / "done").unlink()
    (final / "junk").write_text("not complete")
    with pytest.raises(OSError):
        with staged_directory(final, marker="done") as tmp:
            (tmp / "done").write_text("x")


def test_a_failed_publication_is_a_write_error_naming_the_entry_and_leaves_no_temp(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    final = tmp_path / "entry"
    with pytest.raises(WriteError) as caught:
        with staged_directory(final, marker="done") as tmp:
            (tmp / "done").write_text("ok")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(final))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("array", [np.arange(24, dtype=np.float16).reshape(6, 2, 2), np.array([True, False, True]),
                                   np.arange(5, dtype=np.int64)])
def test_npy_writer_writes_what_np_save_writes(tmp_path, array):
    np.save(tmp_path / "ref.npy", array)
    writer = NpyWriter(tmp_path / "out.npy", array.shape, array.dtype)
    writer[0] = array[0]
    writer[1:] = array[1:]
    record = writer.close()
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert record["bytes"] == (tmp_path / "ref.npy").stat().st_size and record["dtype"] == array.dtype.str


def test_npy_writer_takes_rows_in_order_and_all_of_them(tmp_path):
    writer = NpyWriter(tmp_path / "out.npy", (4, 2), np.float32)
    writer[0:2] = np.ones((2, 2))
    with pytest.raises(IndexError, match="the next is row 2, not 3"):
        writer[3] = np.ones(2)
    with pytest.raises(RuntimeError, match="only 2 of 4 rows were written"):
        writer.close()
    writer.discard()


def test_a_killed_writers_temp_directory_is_removed_by_the_next_writer(tmp_path):
    """A writer killed with SIGKILL leaves its hidden temp sibling; the next writer on the host
    removes it once its process is gone, and leaves live writers' and other hosts' alone."""
    import subprocess
    import sys
    code = ("import os, sys; from bench.staging import staged_directory\n"
            "with staged_directory(sys.argv[1], marker='done') as tmp:\n"
            "    (tmp / 'part').write_bytes(b'x'); print(tmp, flush=True); os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "entry")], capture_output=True, text=True)
    assert proc.returncode == -9
    orphan = Path(proc.stdout.strip())
    foreign = tmp_path / ".tmp-entry-otherhost.1-abc"
    live = tmp_path / f".tmp-entry-{staging.HOST}.{os.getppid()}-abc"
    for d in (foreign, live):
        d.mkdir()
    assert orphan.is_dir()
    with staged_directory(tmp_path / "other", marker="done") as tmp:
        (tmp / "done").write_text("ok")
    assert not orphan.exists() and foreign.is_dir() and live.is_dir()
