"""Pretraining as a process: SIGKILL / SIGTERM mid-run and exact resume, and 2-rank DDP.

Each test launches ``python -m pretrain.run`` (or torchrun) on a tiny LayerLock config that
freezes two blocks during the run, so resume crosses the freeze machinery."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["model=layerlock_t", "data.name=patterns", "data.num_frames=4", "data.resolution=32", "data.train_size=16",
        "arch.embed_dim=32", "arch.depth=4", "arch.num_heads=2", "arch.mlp_dim=64", "train.decoder_depth=1",
        "train.batch_size=4", "train.warmup_steps=3", "train.steps=30", "train.pixel_steps=8",
        "train.freeze_interval=6", "train.rewarmup_steps=3", "train.log_every=1", "train.ckpt_every=5",
        "device=cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
NAME = "layerlock_t"


def paths(root: Path) -> list[str]:
    return [f"paths.runs={root}/runs", f"paths.checkpoints={root}/ckpt"]


def run(root: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.run", *TINY, *paths(root), *extra], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def metrics(root: Path) -> list[dict]:
    path = root / "runs" / NAME / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def launch_and_signal(root: Path, sig: int, after_step: int) -> subprocess.Popen:
    """Start a throttled run; send ``sig`` once the metrics log shows ``after_step``."""
    proc = subprocess.Popen([sys.executable, "-m", "pretrain.run", *TINY, *paths(root), "train.throttle_s=0.1"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        log = metrics(root)
        if log and log[-1]["step"] >= after_step:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    proc.wait(timeout=120)
    return proc


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "step_time"} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny config."""
    root = tmp_path_factory.mktemp("reference")
    out = run(root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def test_sigkill_mid_run_then_resume_is_bit_exact(reference, tmp_path):
    proc = launch_and_signal(tmp_path, signal.SIGKILL, after_step=17)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "ckpt" / f"{NAME}.safetensors").exists()
    assert max(r["step"] for r in metrics(tmp_path)) < 29      # killed before the end
    out = run(tmp_path, "train.throttle_s=0.1")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / NAME / "summary.json").read_text())
    assert summary["resumed_from"] is not None and 0 < summary["resumed_from"] < 30
    ref = (reference / "ckpt" / f"{NAME}.safetensors").read_bytes()
    assert (tmp_path / "ckpt" / f"{NAME}.safetensors").read_bytes() == ref
    assert comparable(metrics(tmp_path)) == comparable(metrics(reference))


def test_sigterm_saves_state_and_exits_143_then_resumes_exactly(reference, tmp_path):
    from pretrain.state import load_state

    proc = launch_and_signal(tmp_path, signal.SIGTERM, after_step=11)
    assert proc.returncode == 143, proc.stderr.read()[-3000:]
    state = load_state(tmp_path / "runs" / NAME / "state.pt")
    assert 12 <= state["step"] < 30 and state["step"] == max(r["step"] for r in metrics(tmp_path)) + 1
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ref = (reference / "ckpt" / f"{NAME}.safetensors").read_bytes()
    assert (tmp_path / "ckpt" / f"{NAME}.safetensors").read_bytes() == ref


def test_changed_recipe_refuses_to_resume(reference, tmp_path):
    shutil.copytree(reference / "runs", tmp_path / "runs")
    out = run(tmp_path, "train.lr=0.5")
    assert out.returncode == 2 and "differs" in out.stderr


def test_torchrun_two_ranks_gloo_identical_weights(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = subprocess.run([*torchrun, "-m", "pretrain.run", *TINY, *paths(tmp_path), "train.steps=12"],
                         env=ENV, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / NAME / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 12 and summary["frozen"] == 1
    assert len(summary["rank_digests"]) == 2 and summary["ranks_consistent"]
    assert (tmp_path / "ckpt" / f"{NAME}.safetensors").exists()
