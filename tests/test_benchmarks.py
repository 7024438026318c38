"""``benchmarks.run_all --quick`` runs every benchmark's smoke mode and writes JSON with the agreed fields."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

LIGHT = ("harness_overhead", "cached_vs_online", "world_generation", "mfu", "readout_mfu", "demo_workers")
ROW_FIELDS = {
    "harness_overhead": {"model", "harness_clips_s", "bare_clips_s", "ratio", "times_s"},
    "cached_vs_online": {"model", "task", "cached_epoch_s", "online_epoch_s", "speedup", "extract_s", "times_s"},
    "world_generation": {"side", "clips_s", "vs_encode", "times_s"},
    "mfu": {"model", "resolution", "dtype", "gflop_per_clip", "achieved_gflops", "peak_gflops", "mfu", "times_s"},
    "readout_mfu": {"task", "options", "width", "gflop_per_step", "ms_per_clip_epoch", "achieved_gflops",
                    "peak_gflops", "mfu", "times_s"},
    "demo_workers": {"side", "jobs_s", "speedup", "times_s"},
    "layerlock_savings": {"variant", "frozen", "step_time", "flops", "predicted_saving", "time_saving"},
    "grid": {"task", "heads", "s_one", "s_grid", "per_head_over_one", "times_s"},
}


def run_quick(out: Path, names: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick", "--out-dir", str(out),
                           "--only", ",".join(names)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "run_all.json").read_text())
    assert [b["name"] for b in summary["benchmarks"]] == list(names)
    for name in names:
        record = json.loads((out / f"{name}.json").read_text())
        assert record["name"] == name and record["config"]["quick"] is True
        assert {"text", "target", "met"} <= set(record["goal"]) and record["machine"]["cpus"]
        assert record["rows"] and all(ROW_FIELDS[name] <= set(row) for row in record["rows"]), name
    assert not list(out.glob(".*.tmp")), "atomic writes leave no temp files"


def test_quick_readout_benchmark_writes_its_json(tmp_path):
    run_quick(tmp_path, ("readout_mfu",))
    rows = json.loads((tmp_path / "readout_mfu.json").read_text())["rows"]
    point_tracking = {r["options"].get("train_tracks"): r["gflop_per_step"]
                      for r in rows if r["task"] == "point_tracking"}
    assert point_tracking[32] < 0.75 * point_tracking[None]  # half the tracks: the query side's work halves


@pytest.mark.slow
def test_quick_benchmarks_write_their_json(tmp_path):
    run_quick(tmp_path, tuple(name for name in LIGHT if name != "readout_mfu"))


@pytest.mark.slow
def test_quick_layerlock_savings_and_grid_write_their_json(tmp_path):
    run_quick(tmp_path, ("layerlock_savings", "grid"))


def test_cpu_peak_memory_counts_the_steps_even_after_a_higher_start_up_peak():
    """The savings benchmark's CPU peak: reset before the steps, so an earlier, higher peak (the
    start-up's) does not hide them, as a ``ru_maxrss`` delta does."""
    from benchmarks.layerlock_savings import proc_status, reset_peak_rss
    start_up = torch.ones(80_000_000)  # 320 MB, then freed: the process's peak so far
    del start_up
    base = reset_peak_rss()
    step = torch.ones(25_000_000)  # 100 MB, touched
    peak = proc_status("VmHWM") - base
    del step
    assert 90 * 2**20 <= peak <= 250 * 2**20
