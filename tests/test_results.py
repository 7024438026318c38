"""Result records: atomic writes, validation, skipping malformed files, refusing degenerate runs."""
import json
import os

import pytest

from bench.errors import UserError
from bench.results import RecordError, ResultRecord, read_record, read_records, write_record

CLIPS = {"values": [0.25, 0.75], "weights": [1.0, 1.0]}  # weighted mean 0.5: the abs_rel of ``make``


def make(seed=0, **kw):
    base = dict(task="depth", dataset="synthetic", split="test", model="random_t", checkpoint_sha256="abc",
                readout="attentive", seed=seed, metrics={"abs_rel": 0.5, "delta1": 0.4},
                directions={"abs_rel": False, "delta1": True}, primary_metric="abs_rel", higher_is_better=False,
                per_clip=CLIPS)
    base.update(kw)
    return ResultRecord(**base)


def test_roundtrip_and_malformed_files_reported_by_name(tmp_path):
    path = write_record(make(), tmp_path)
    assert read_record(path) == make()
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "partial.json").write_text(json.dumps({"task": "depth"}))
    records, errors = read_records(tmp_path)
    assert records == [(path.name, make())]
    assert any(e.startswith("broken.json: not valid JSON") for e in errors)
    assert any(e.startswith("partial.json: missing fields") for e in errors)


DEGENERATE = {
    "nan_metric": (dict(metrics={"abs_rel": float("nan"), "delta1": 0.4}),
                   "metrics {'abs_rel': nan} are not finite numbers within ±1e+100"),
    "inf_metric": (dict(metrics={"abs_rel": 0.5, "delta1": float("-inf")}),
                   "metrics {'delta1': -inf} are not finite numbers within ±1e+100"),
    "null_metric": (dict(metrics={"abs_rel": None, "delta1": 0.4}),
                    "metrics {'abs_rel': None} are not finite numbers within ±1e+100"),
    "huge_metric": (dict(metrics={"abs_rel": 1e308, "delta1": 0.4}),
                    "metrics {'abs_rel': 1e+308} are not finite numbers within ±1e+100"),
    "nan_train_metric": (dict(train_metrics={"abs_rel": float("nan")}),
                         "train_metrics {'abs_rel': nan} are not finite numbers within ±1e+100"),
    "no_metrics": (dict(metrics={}), "primary metric 'abs_rel' not among its metrics"),
    "no_per_clip": (dict(per_clip={}), "per_clip is missing: a version-2 record holds the primary metric of every "
                                       "test clip"),
    "zero_clips": (dict(per_clip={"values": [], "weights": []}), "per_clip is empty: the run scored no test clip"),
    "nan_clip": (dict(per_clip={"values": [0.25, float("nan")], "weights": [1.0, 1.0]}),
                 "per_clip values[1] is nan, expected a finite number within ±1e+100"),
    "negative_weight": (dict(per_clip={"values": [0.25, 0.75], "weights": [1.0, -1.0]}),
                        "per_clip weights[1] is -1.0, expected a finite non-negative number within ±1e+100"),
    "weightless_clips": (dict(per_clip={"values": [0.25, 0.75], "weights": [0.0, 0.0]}),
                         "per_clip weights are all 0: no clip counts"),
}


@pytest.mark.parametrize("case", DEGENERATE)
def test_a_degenerate_run_never_overwrites_the_record(tmp_path, case):
    fields, problem = DEGENERATE[case]
    path = write_record(make(), tmp_path)
    before = path.read_bytes()
    with pytest.raises(RecordError) as info:
        write_record(make(**fields), tmp_path)
    assert str(info.value) == f"{path}: refusing to write the record: {problem}; any earlier record there is unchanged"
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no temp file left


@pytest.mark.parametrize("case", DEGENERATE)
def test_a_degenerate_record_file_is_refused_when_read(tmp_path, case):
    fields, problem = DEGENERATE[case]
    data = {**json.loads(write_record(make(), tmp_path).read_text()), **fields}
    (tmp_path / "odd.json").write_text(json.dumps(data))
    with pytest.raises(RecordError) as info:
        read_record(tmp_path / "odd.json")
    assert str(info.value) == f"odd.json: {problem}"


def test_version_1_records_without_per_clip_values_are_still_written_and_read(tmp_path):
    old = make(per_clip={}, schema_version=1)
    assert read_record(write_record(old, tmp_path)) == old


def test_failed_write_keeps_the_old_record(tmp_path, monkeypatch):
    path = write_record(make(), tmp_path)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_record(make(metrics={"abs_rel": 0.1, "delta1": 0.9}, per_clip={"values": [0.1], "weights": [1]}),
                     tmp_path)
    assert read_record(path).metrics["abs_rel"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
