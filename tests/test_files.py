"""bench.files: a write reaches its path whole or not at all; checksums read in chunks agree with hashlib."""
import hashlib

import pytest

from bench.files import atomic_stream, atomic_write_bytes, sha256_file


def test_a_failed_stream_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "state.pt"
    atomic_write_bytes(path, b"old")
    with pytest.raises(KeyboardInterrupt), atomic_stream(path) as f:
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    with atomic_stream(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_sha256_in_chunks_is_hashlib_sha256(tmp_path):
    data = bytes(range(256)) * 1000 + b"tail"
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=4096) == hashlib.sha256(data).hexdigest()
