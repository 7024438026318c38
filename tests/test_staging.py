"""Atomic publication of cache directories (bench.staging)."""
import pytest

from bench.staging import staged_directory


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
