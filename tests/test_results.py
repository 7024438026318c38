"""Result records: atomic writes, validation, skipping malformed files."""
import json

import pytest

from bench.results import RecordError, ResultRecord, read_record, read_records, write_record


def make(seed=0, **kw):
    base = dict(task="depth", dataset="synthetic", split="test", model="random_t", checkpoint_sha256="abc",
                readout="attentive", seed=seed, metrics={"abs_rel": 0.5, "delta1": 0.4},
                directions={"abs_rel": False, "delta1": True}, primary_metric="abs_rel", higher_is_better=False)
    base.update(kw)
    return ResultRecord(**base)


def test_roundtrip_and_malformed_files_reported_by_name(tmp_path):
    path = write_record(make(), tmp_path)
    assert read_record(path) == make()
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "partial.json").write_text(json.dumps({"task": "depth"}))
    records, errors = read_records(tmp_path)
    assert len(records) == 1
    assert any(e.startswith("broken.json: not valid JSON") for e in errors)
    assert any(e.startswith("partial.json: missing fields") for e in errors)


def test_non_finite_metrics_are_not_written(tmp_path):
    with pytest.raises(RecordError, match="non-finite"):
        write_record(make(metrics={"abs_rel": float("nan")}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_record(tmp_path, monkeypatch):
    path = write_record(make(), tmp_path)
    import os

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_record(make(metrics={"abs_rel": 0.1, "delta1": 0.9}), tmp_path)
    assert read_record(path).metrics["abs_rel"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
