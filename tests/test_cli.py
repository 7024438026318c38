"""bench.run end to end on a tiny synthetic world: a record on disk, reproducibility, clear errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_reliability import run_here

TINY = ["data.train_size=8", "data.test_size=4", "data.num_frames=4", "data.resolution=32",
        "readout.epochs=2", "readout.batch_size=4", "visualize=false"]


def bench_args(tmp_path: Path, *overrides: str) -> list[str]:
    return [*TINY, f"paths.cache={tmp_path / 'cache'}", f"paths.results={tmp_path / 'results'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'out'}", *overrides]


def run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m bench.run`` in its own process (the errors below run the same CLI in this one)."""
    return subprocess.run([sys.executable, "-m", "bench.run", *bench_args(tmp_path, *overrides)],
                          capture_output=True, text=True, timeout=300)


def test_depth_run_writes_a_record_and_is_reproducible(tmp_path):
    first = run(tmp_path, "task=depth", "model=random_t")
    assert first.returncode == 0, first.stderr
    path = tmp_path / "results" / "depth__synthetic__random_t__attentive__seed0.json"
    record = json.loads(path.read_text())
    assert record["primary_metric"] == "abs_rel" and record["higher_is_better"] is False
    assert set(record["metrics"]) == {"abs_rel", "delta1", "rmse"}
    assert record["config"]["data"]["resolution"] == 32 and record["versions"]["torch"]
    second = run(tmp_path, "task=depth", "model=random_t")  # features now come from the cache
    assert second.returncode == 0, second.stderr
    assert json.loads(path.read_text())["metrics"] == record["metrics"]


@pytest.mark.parametrize("override,expected", [
    ("task=nope", "Could not find 'task/nope'"),
    ("readout=nope", "Could not find 'readout/nope'"),
    ("model=nope_t", "Could not find 'model/nope_t'"),
    ("data.name=nope", "unknown dataset 'nope'; known:"),
    ("model=layerlock_t", "checkpoint"),
])
def test_bad_names_fail_clearly(tmp_path, override, expected):
    code, err = run_here(*bench_args(tmp_path, override))
    assert code != 0
    assert expected in err
    assert not (tmp_path / "results").exists()


def test_missing_checkpoint_says_how_to_make_it(tmp_path):
    code, err = run_here(*bench_args(tmp_path, "model=mae_t"))
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: model 'mae_t': checkpoint") and "python -m pretrain.run model=mae_t" in line
