"""Task plugins through the ``frozen4d.tasks`` entry-point group: the example package
(examples/frozen4d_object_count) installed with pip and run end to end by ``python -m bench.run``;
a plugin that fails to import is reported by name with its error while every other task works.
Plus the SLURM launcher config (composed only where hydra-submitit-launcher is installed)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

import bench.registry as registry
from bench.registry import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "frozen4d_object_count"


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False

DIST = "frozen4d-object-count"
TINY = ["data.train_size=8", "data.test_size=4", "data.num_frames=4", "data.resolution=32", "readout.epochs=1",
        "visualize=false"]


def broken_site(tmp_path: Path) -> Path:
    """A directory that, on sys.path, declares a task plugin whose module does not exist
    (a dist-info with an entry_points.txt, as pip would leave it)."""
    site = tmp_path / "site"
    info = site / "frozen4d_broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: frozen4d-broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken_task = frozen4d_no_such_module\n")
    return site


def test_broken_plugin_is_reported_by_name_and_builtins_still_work(monkeypatch):
    eps = [EntryPoint(name="broken_task", value="frozen4d_no_such_module", group=ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group=None: eps if group == ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "PLUGIN_ERRORS", {})
    monkeypatch.setattr(registry.TASKS, "_loaded", False)  # discover again: built-ins, then plugins
    with pytest.warns(RuntimeWarning, match=r"plugin 'broken_task' \(frozen4d_no_such_module\) failed to import"):
        names = registry.TASKS.names()
    assert {"depth", "action", "camera_pose"} <= set(names)
    assert registry.TASKS.get("depth").name == "depth"
    assert registry.PLUGIN_ERRORS == {
        "broken_task": "ModuleNotFoundError: No module named 'frozen4d_no_such_module'"}


def test_broken_installed_plugin_does_not_break_the_harness(tmp_path):
    env = {"PYTHONPATH": str(broken_site(tmp_path))}
    code = "from bench.registry import TASKS, PLUGIN_ERRORS; print(TASKS.names()); print(PLUGIN_ERRORS)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**_base_env(), **env})
    assert proc.returncode == 0, proc.stderr
    assert "'depth'" in proc.stdout and "broken_task" in proc.stdout
    assert "plugin 'broken_task'" in proc.stderr and "No module named 'frozen4d_no_such_module'" in proc.stderr


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def installed_example():
    """pip-install the example plugin (editable, offline: no dependencies, no build isolation)
    into this interpreter's environment for the test; uninstall it afterwards whatever happens."""
    proc = _pip("install", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE))
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield
    finally:
        _pip("uninstall", "-y", DIST)


@pytest.mark.skipif(not available("bench.data.world"), reason="synthetic world not available")
def test_example_plugin_end_to_end(tmp_path, installed_example):
    """After `pip install`, `task=object_count` works with no change to frozen4d — here with a
    broken plugin installed beside it, which is reported without stopping the run."""
    args = [sys.executable, "-m", "bench.run", "task=object_count", "model=random_t", *TINY,
            f"paths.cache={tmp_path / 'cache'}", f"paths.results={tmp_path / 'results'}",
            f"hydra.run.dir={tmp_path / 'out'}"]
    env = {**_base_env(), "PYTHONPATH": str(broken_site(tmp_path))}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'broken_task'" in proc.stderr
    record = json.loads((tmp_path / "results" / "object_count__synthetic__random_t__attentive__seed0.json").read_text())
    assert record["task"] == "object_count" and record["primary_metric"] == "accuracy"
    assert record["directions"] == {"accuracy": True, "count_mae": False}
    assert all(np.isfinite(v) for v in record["metrics"].values())
    assert record["config"]["task"] == {"name": "object_count", "max_objects": None}


@pytest.fixture
def forget_example_modules():
    yield
    for name in [m for m in sys.modules if m.startswith("frozen4d_object_count")]:
        del sys.modules[name]


def test_example_task_labels_and_metrics(monkeypatch, forget_example_modules):
    """The example's label and metrics, importable without installing (its directory on sys.path);
    the registration its import makes is undone afterwards."""
    monkeypatch.setattr(registry.TASKS, "_entries", dict(registry.TASKS._entries))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from frozen4d_object_count.task import count_metrics, object_counts
    box_valid = np.zeros((3, 4, 5), bool)  # 3 clips, up to 4 objects, 5 frames
    box_valid[0, 0, :] = True  # one object, always visible
    box_valid[1, :2, 2] = True  # two objects, seen in one frame
    box_valid[1, 3, 4] = True  # a third, seen in the last frame
    assert object_counts(box_valid).tolist() == [1, 3, 0]
    import torch

    assert object_counts(torch.from_numpy(box_valid)).tolist() == [1, 3, 0]
    logits = np.eye(5)[[1, 2, 0]]  # predicts 1, 2, 0
    assert count_metrics(logits, np.array([1, 3, 0])) == {"accuracy": 2 / 3, "count_mae": 1 / 3}


# ---------------------------------------------------------------- SLURM launcher config

LAUNCHER = ROOT / "bench" / "configs" / "hydra" / "launcher" / "slurm.yaml"


def test_slurm_launcher_config_extends_the_plugin_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(LAUNCHER)
    assert list(cfg.defaults) == ["submitit_slurm"]
    assert cfg.tasks_per_node == 1 and cfg.nodes == 1


@pytest.mark.skipif(not available("hydra_plugins.hydra_submitit_launcher"),
                    reason="hydra-submitit-launcher not installed")
def test_slurm_launcher_composes():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                           "--cfg", "hydra", "--package", "hydra.launcher"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "SlurmLauncher" in proc.stdout and "partition: gpu" in proc.stdout and "timeout_min: 240" in proc.stdout
