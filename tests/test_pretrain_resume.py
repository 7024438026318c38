"""Pretraining as a process: SIGKILL / SIGTERM mid-run and exact resume, and 2-rank DDP.

Each test launches ``python -m pretrain.run`` (or torchrun) on a tiny LayerLock config that
freezes two blocks during the run, so resume crosses the freeze machinery. It logs every 7 steps and
saves every 5: every saved state but the last falls inside a log window (steps whose mean loss the
next log record reports), so a resumed run logs the same lines only if the window was saved too."""
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
        "train.freeze_interval=6", "train.rewarmup_steps=3", "train.log_every=7", "train.ckpt_every=5",
        "device=cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
NAME = "layerlock_t"
LOG_EVERY = 7


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
    """The log records but their wall-clock step time (floats compare bit for bit)."""
    return [{k: v for k, v in r.items() if k != "step_time"} for r in records]


def state_path(root: Path) -> Path:
    return root / "runs" / NAME / "state.pt"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny config."""
    root = tmp_path_factory.mktemp("reference")
    out = run(root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A throttled run of the tiny config killed mid-run (tests resume copies of it): its state is of step 10
    or 15 or 20 or 25, inside a log window."""
    root = tmp_path_factory.mktemp("killed")
    proc = launch_and_signal(root, signal.SIGKILL, after_step=13)
    assert proc.returncode == -signal.SIGKILL
    return root


def test_sigkill_mid_run_then_resume_is_bit_exact(reference, killed, tmp_path):
    shutil.copytree(killed, tmp_path, dirs_exist_ok=True)
    assert not (tmp_path / "ckpt" / f"{NAME}.safetensors").exists()
    assert max(r["step"] for r in metrics(tmp_path)) < 29      # killed before the end
    out = run(tmp_path, "train.throttle_s=0.1")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / NAME / "summary.json").read_text())
    assert summary["resumed_from"] is not None and 0 < summary["resumed_from"] < 30
    assert summary["resumed_from"] % LOG_EVERY       # resumed inside a log window
    ref = (reference / "ckpt" / f"{NAME}.safetensors").read_bytes()
    assert (tmp_path / "ckpt" / f"{NAME}.safetensors").read_bytes() == ref
    assert comparable(metrics(tmp_path)) == comparable(metrics(reference))


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])  # one handler
def test_sigterm_or_ctrl_c_saves_state_and_exits_128_plus_the_signal_then_resumes_exactly(reference, tmp_path, sig):
    from pretrain.state import load_state

    proc = launch_and_signal(tmp_path, sig, after_step=11)
    err = proc.stderr.read()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name} at step" in err, err[-3000:]
    state = load_state(state_path(tmp_path))
    step = state["step"]
    assert 14 <= step < 30 and max(r["step"] for r in metrics(tmp_path)) == step // LOG_EVERY * LOG_EVERY - 1
    assert [len(w.get("loss", [])) for w in state["metrics_window"]] == [step % LOG_EVERY]   # steps not yet logged
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ref = (reference / "ckpt" / f"{NAME}.safetensors").read_bytes()
    assert (tmp_path / "ckpt" / f"{NAME}.safetensors").read_bytes() == ref
    assert comparable(metrics(tmp_path)) == comparable(metrics(reference))


def test_a_state_without_a_metrics_window_resumes_and_says_so(reference, killed, tmp_path):
    """A state saved before the window was kept resumes to the same weights; its first log record after the
    resume averages only the steps since, and a warning says so."""
    import torch

    from pretrain.state import load_state

    shutil.copytree(killed, tmp_path, dirs_exist_ok=True)
    state = load_state(state_path(tmp_path))
    del state["metrics_window"]
    torch.save(state, state_path(tmp_path))
    step = state["step"]
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"warning: {state_path(tmp_path)} holds no unlogged metrics for this run (it predates them); the first "
            f"metrics.jsonl record after step {step} averages only the steps since the resume") in out.stderr
    assert (tmp_path / "ckpt" / f"{NAME}.safetensors").read_bytes() == \
        (reference / "ckpt" / f"{NAME}.safetensors").read_bytes()
    mine, ref = comparable(metrics(tmp_path)), comparable(metrics(reference))
    first = step // LOG_EVERY       # the record whose window the resume cut
    assert mine[:first] == ref[:first] and mine[first + 1:] == ref[first + 1:]
    assert mine[first]["loss"] != ref[first]["loss"]


def test_changed_recipe_refuses_to_resume(reference, tmp_path):
    from pretrain.state import load_state

    shutil.copytree(reference / "runs", tmp_path / "runs")
    lr = load_state(state_path(tmp_path))["recipe"]["lr"]
    out = run(tmp_path, "train.lr=0.5")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {state_path(tmp_path)}: saved run differs from this config (lr: {lr!r} -> 0.5); remove the run "
        "directory or pass resume=false to start over")


def test_bf16_on_cpu_and_non_square_clips_are_config_errors(tmp_path, monkeypatch):
    """(``pretrain.run`` prints a ConfigError as one ``error:`` line, exit 2: ``test_changed_recipe_refuses_to_resume``.)"""
    import numpy as np

    from bench.errors import ConfigError
    from pretrain import train
    from pretrain.run import load_config

    with pytest.raises(ConfigError) as info:
        train.Trainer(load_config([*TINY, *paths(tmp_path), "precision=bf16"]))
    assert str(info.value) == ("precision=bf16: bf16 is only supported on CUDA (bf16 matmul is ~400x slower on our "
                               "CPUs) and this run is on device=cpu; use precision=fp32")
    monkeypatch.setattr(train, "open_videos", lambda *a: np.zeros((16, 4, 32, 48, 3), np.uint8))
    with pytest.raises(ConfigError) as info:
        train.Trainer(load_config([*TINY, *paths(tmp_path)]))
    assert str(info.value) == ("data.resolution=32 gives clips of 32x48: the ViT expects square frames; set "
                               "data.resolution to one int")


def test_torchrun_two_ranks_gloo_identical_weights(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = subprocess.run([*torchrun, "-m", "pretrain.run", *TINY, *paths(tmp_path), "train.steps=12"],
                         env=ENV, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / NAME / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 12 and summary["frozen"] == 1
    assert len(summary["rank_digests"]) == 2 and summary["ranks_consistent"]
    assert (tmp_path / "ckpt" / f"{NAME}.safetensors").exists()


def test_a_resumed_log_drops_the_records_past_the_state_and_a_line_cut_by_a_kill(tmp_path):
    from pretrain.metrics_log import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 6, "loss": 1.0}\n{"step": 13, "loss": 0.5}\n{"step": 20, "loss": 0.25}\n{"step": 27, "lo')
    MetricsLog(path, resume_step=25)
    assert path.read_text() == '{"step": 6, "loss": 1.0}\n{"step": 13, "loss": 0.5}\n{"step": 20, "loss": 0.25}\n'
    MetricsLog(path, resume_step=15)
    assert path.read_text() == '{"step": 6, "loss": 1.0}\n{"step": 13, "loss": 0.5}\n'
