"""``make demo-fast``: the whole miniature study (pretrain 3 models, evaluate 4 models on 5 tasks,
build the leaderboard) on a tiny world, in a scratch directory."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.models.checkpoint import checkpoint_path, sidecar_path
from leaderboard import demo
from leaderboard.demo import (COMMITTED, EXTERNAL_ROWS, FAST, FIXED, GRID, MODELS, PRETRAINED, REFERENCES, SELECTED,
                              TRAINED, evaluation_config, evaluations, fetch_external, label, pretrain_config,
                              remove_records, schedule, study)
from pretrain.recipes import BOOKKEEPING, resolve_recipe


def flatten(jobs, after=None):
    """(kind, arg, the model whose pretraining or first evaluation must finish first) of every job."""
    for kind, arg, follow in jobs:
        yield kind, arg, after
        yield from flatten(follow, label(kind, arg))


@pytest.mark.parametrize("train", [TRAINED, ("mae_t",), ()])
def test_schedule_covers_the_study_once_and_orders_each_model_after_its_pretraining(train):
    jobs = list(flatten(schedule(SELECTED, train)))
    evals = [arg for kind, arg, _ in jobs if kind == "evaluate"]
    # 6 encoders x (5 tasks attentive + 2 closed-form linear probes + 2 propagations), blind once per table
    assert sorted(map(tuple, evals)) == sorted(map(tuple, study(SELECTED))) and len(evals) == 6 * 9 + 9
    assert [arg for kind, arg, after in jobs if kind == "pretrain"] == [m for m in reversed(TRAINED) if m in train]
    for kind, arg, after in jobs:
        if kind == "evaluate":  # a model's first evaluation (it caches the features) comes before the others
            model = dict(o.split("=", 1) for o in arg)["model"]
            first = evaluations(model, SELECTED)[0]
            if arg == first:
                assert after == (f"pretrain-{model}" if model in train else None)
            else:
                assert after == label("evaluate", first)


def test_a_subset_of_rows_schedules_only_their_jobs():
    """``--models``: only the named rows' evaluations, and a pretraining only for a named encoder."""
    rows = ("layerlock_t", "blind")
    jobs = list(flatten(schedule(SELECTED, TRAINED, rows)))
    assert [arg for kind, arg, _ in jobs if kind == "pretrain"] == ["layerlock_t"]
    evals = [tuple(arg) for kind, arg, _ in jobs if kind == "evaluate"]
    assert sorted(evals) == sorted(map(tuple, study(SELECTED, rows))) and len(evals) == 9 + 9


def test_a_subset_of_tasks_schedules_only_their_evaluations_for_every_row():
    """``--tasks``: each row's evaluations of the named tasks, nothing else."""
    plan = dict(SELECTED, tasks=("point_tracking", "camera_pose"))
    evals = [dict(o.split("=", 1) for o in arg) for kind, arg, _ in flatten(schedule(plan, ())) if kind == "evaluate"]
    assert {e["task"] for e in evals} == {"point_tracking", "camera_pose"}
    assert {e["model"] for e in evals} == set(MODELS)
    assert len(evals) == len(MODELS) * 3  # each row: point tracking (attentive), pose (attentive, linear)


def test_the_board_reads_every_row_with_features_through_a_probe_grid_and_the_fixed_study_through_one_head():
    """The committed board's study (``SELECTED``) and ``make demo``'s (``FIXED``) differ only in the
    probe grid and where they write: the same world, budgets and rows, so their records compare."""
    differ = {k for k in SELECTED if SELECTED[k] != FIXED[k]}
    assert differ == {"grid", "results", "out", "readme", "staging", "pictures"}
    assert SELECTED["results"] == "leaderboard/results" and FIXED["results"] == "leaderboard/fixed/results"
    for run in study(SELECTED):
        values = dict(o.split("=", 1) for o in run)
        has_grid = any(o.startswith("select.layers=") for o in run)
        assert has_grid == (values["model"] != "blind"), run
    assert not any(o.startswith("select.") for run in study(FIXED) for o in run)
    assert set(GRID) == {"attentive", "closed_form", "propagation"}


def test_remove_records_deletes_only_the_named_rows(tmp_path):
    names = ["depth__synthetic__mae_t__attentive__seed0.json", "depth__synthetic__random_t__attentive__seed0.json",
             "action__synthetic__mae_t__linear__seed0.json", "notes.json"]
    for name in names:
        (tmp_path / name).write_text("{}")
    remove_records(tmp_path, ("mae_t", "blind"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth__synthetic__random_t__attentive__seed0.json",
                                                          "notes.json"]
    (tmp_path / names[0]).write_text("{}")
    remove_records(tmp_path, ("mae_t", "random_t"), ("action",))  # a task subset: only its records go
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[:2] + ["notes.json"])


def test_the_study_carries_every_reference_row():
    assert set(REFERENCES) <= set(MODELS) and {"blind", "pixels", "random_t", "supervised_t"} == set(REFERENCES)


def test_the_external_rows_are_the_real_encoder_and_its_twin_under_one_token_rule():
    """Every run of DINOv2-S/14 and of its random twin carries the frame models' token rule; no
    other row's does (the t models' records stay as they were); FAST has no external rows."""
    assert EXTERNAL_ROWS == ("dinov2_s14_imgfocus", "random_dinov2_s14_imgfocus") and FAST["external"] == ()
    jobs = [arg for kind, arg, _ in flatten(schedule(SELECTED, (), (*MODELS, *EXTERNAL_ROWS))) if kind == "evaluate"]
    for run in jobs:
        model = dict(o.split("=", 1) for o in run)["model"]
        assert (SELECTED["frame_options"][0] in run) == (model in EXTERNAL_ROWS), run
    assert sum(dict(o.split("=", 1) for o in run)["model"] in EXTERNAL_ROWS for run in jobs) == 2 * 9
    cfg = evaluation_config(evaluations("random_dinov2_s14_imgfocus", SELECTED)[0], SELECTED)
    assert cfg.features.token_px == 16 and cfg.model.name == "random_dinov2_s14_imgfocus"


def test_without_their_weights_the_external_rows_are_skipped_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(demo.external, "install", lambda name, checkpoints: False)
    assert fetch_external(SELECTED, (*MODELS, *EXTERNAL_ROWS)) == MODELS
    err = capsys.readouterr().err.strip()
    assert err == ("demo: dinov2_s14_imgfocus and random_dinov2_s14_imgfocus skipped (their weights could not be "
                   "fetched); their records are kept")
    assert fetch_external(SELECTED, ("mae_t",)) == ("mae_t",)  # not asked for: nothing fetched, nothing said
    assert capsys.readouterr().err == ""


def test_a_tasks_own_data_overrides_win_over_the_studys():
    """Point tracking trains on 2048 clips of the study's world, 32 tracks of each per step; the
    propagation tasks see 128 test clips of it at 128x128; the other tasks train on its 1024."""
    sizes, tracks = {}, {}
    for run in study(SELECTED):
        values = dict(o.split("=", 1) for o in run)
        if values["model"] == "pixels" and values.get("readout", "attentive") in ("attentive", "propagation"):
            cfg = evaluation_config(run, SELECTED)
            sizes[values["task"]] = (cfg.data.train_size, cfg.data.test_size, cfg.data.resolution)
            tracks[values["task"]] = cfg.task.get("train_tracks")
    assert tracks.pop("point_tracking") == 32 and not any(tracks.values())  # its own option, nobody else's
    assert sizes.pop("point_tracking") == (2048, 512, 64)
    assert sizes.pop("mask_propagation") == sizes.pop("keypoint_propagation") == (16, 128, 128)
    assert set(sizes.values()) == {(1024, 512, 64)} and len(sizes) == 4


def test_every_trained_encoder_learns_from_the_same_4096_clip_split():
    """The self-supervised encoders see the supervised control's data: the same world, 4096 train
    clips (the study's 1024 first), never its test split."""
    for name in TRAINED:
        data = pretrain_config(name, SELECTED).data
        assert (data.train_size, data.test_size, data.resolution, data.seed) == (4096, 512, 64, 0), name


def test_the_committed_checkpoints_were_trained_by_the_recipe_the_demo_would_train():
    """``--retrain`` reproduces what the board shows: every committed self-supervised checkpoint's
    sidecar holds the recipe and the data that ``make demo --retrain`` would train it with."""
    for name in PRETRAINED:
        meta = json.loads(sidecar_path(checkpoint_path(name, COMMITTED)).read_text())
        cfg = pretrain_config(name, SELECTED)
        expected = resolve_recipe(name, meta["architecture"]["depth"], cfg.train)
        recorded = meta["train_config"]["recipe"]
        assert {k: v for k, v in recorded.items() if k not in BOOKKEEPING} == \
            {k: v for k, v in expected.items() if k not in BOOKKEEPING}, name
        assert meta["train_config"]["data"] == OmegaConf.to_container(cfg.data), name


@pytest.mark.slow
def test_demo_fast_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "leaderboard.demo", "--fast"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "outputs" / "demo-fast"
    records = sorted((out / "results").glob("*.json"))
    # models x (5 tasks x (attentive, linear) + 2 propagation tasks), one seed (FAST probes all)
    assert len(records) == len(MODELS) * (5 * 2 + 2)
    for f in ("leaderboard.md", "leaderboard.csv", "index.html"):
        assert (out / "leaderboard" / f).stat().st_size > 0
    for model in ("mae_t", "layerlock_t", "latent_nofreeze_t"):
        assert f"| {model} |" in proc.stdout
    for model in REFERENCES:
        assert f"| {model} (reference) |" in proc.stdout
    # one row again: its records are redone, the others' stay as they were, the board keeps every row
    kept = {p.name: p.stat().st_mtime_ns for p in records if "__random_t__" not in p.name}
    proc = subprocess.run([sys.executable, "-m", "leaderboard.demo", "--fast", "--models", "random_t"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = sorted((out / "results").glob("*.json"))
    assert [p.name for p in again] == [p.name for p in records]
    assert {p.name: p.stat().st_mtime_ns for p in again if "__random_t__" not in p.name} == kept
    assert "| layerlock_t |" in proc.stdout and "| random_t (reference) |" in proc.stdout


def demo_processes(mark: str) -> list[int]:
    """Pids of live processes started with the environment mark ``mark`` (the demo and its workers)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"FROZEN4D_TEST_MARK={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                if b"State:\tZ" not in (proc / "status").read_bytes():
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def interrupted_demo(cwd: Path, sig: int, files: str, count: int) -> int:
    """Start ``demo --fast``, send ``sig`` once ``count`` files match ``files`` (a glob in its
    outputs: job logs, staged records); its exit code. Every process it started is gone shortly after."""
    mark = uuid.uuid4().hex
    outputs = cwd / "outputs" / "demo-fast" / "outputs"
    proc = subprocess.Popen([sys.executable, "-m", "leaderboard.demo", "--fast"], cwd=cwd, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "FROZEN4D_TEST_MARK": mark})
    deadline = time.time() + 600
    while len(list(outputs.glob(files))) < count and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    for _ in range(100):  # workers end after their parent (SIGKILL: through PDEATHSIG)
        if not demo_processes(mark):
            break
        time.sleep(0.2)
    assert demo_processes(mark) == [], "a worker outlived the interrupted demo"
    if sig != signal.SIGKILL:
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"demo: interrupted by {signal.Signals(sig).name}; the records in ") and \
            "are unchanged" in last and "Traceback" not in err, err[-2000:]
    return proc.returncode


def scores(results: Path) -> dict[str, tuple]:
    out = {}
    for f in sorted(results.glob("*.json")):
        r = json.loads(f.read_text())
        out[f.name] = (r["metrics"], r["per_clip"], r["config"])
    return out


@pytest.mark.slow
def test_an_interrupted_study_loses_nothing_and_resumes_to_the_same_records(tmp_path):
    """SIGTERM, SIGINT and SIGKILL at several points of ``demo --fast``: the published records stay
    byte-identical, no process is left, and a rerun completes with an uninterrupted run's records."""
    first = subprocess.run([sys.executable, "-m", "leaderboard.demo", "--fast"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    results = tmp_path / "outputs" / "demo-fast" / "results"
    published = {f.name: f.read_bytes() for f in results.glob("*.json")}
    expected = scores(results)
    for logs in tmp_path.glob("outputs/demo-fast/outputs/demo-logs/*.log"):
        logs.unlink()
    points = ((signal.SIGTERM, "demo-logs/*.log", 1), (signal.SIGINT, "demo-records/*.json", 3),
              (signal.SIGKILL, "demo-records/*.json", 8), (signal.SIGTERM, "demo-records/*.json", 20))
    for sig, files, count in points:
        code = interrupted_demo(tmp_path, sig, files, count)
        assert code in (128 + sig, -sig), (sig, code)
        assert {f.name: f.read_bytes() for f in results.glob("*.json")} == published, sig
    again = subprocess.run([sys.executable, "-m", "leaderboard.demo", "--fast"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert scores(results) == expected
    assert list((tmp_path / "outputs" / "demo-fast" / "outputs" / "demo-records").glob("*.json")) == []


@pytest.mark.parametrize("argv,message", [(["--fast", "--fixed"], "--fast and --fixed: choose one"),
                                          (["--pictures", "--fixed"], "the fixed-probe board has no feature pictures")])
def test_contradictory_study_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        demo.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
