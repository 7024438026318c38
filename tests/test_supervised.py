"""The ``supervised_<size>`` control's trainer: its recipe and collapse monitors reach the sidecar,
and a run resumed from a mid-run state ends with the same weights, and logs the same lines, as an
uninterrupted one (it saves every 2 steps and logs every 3: the state at step 2 holds 2 unlogged steps)."""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.errors import ConfigError
from bench.models.checkpoint import sidecar_path
from pretrain.metrics_log import read_metrics
from pretrain.run import load_config
from pretrain.state import load_state
from pretrain.supervised import DEFAULTS, SupervisedTrainer, recipe
from tests.test_pretrain_resume import comparable

TINY = ["model=supervised_t", "data.num_frames=4", "data.resolution=32", "data.train_size=8", "data.test_size=1",
        "data.num_points=8", "data.max_objects=2", "arch.embed_dim=32", "arch.depth=2", "arch.num_heads=2",
        "arch.mlp_dim=64", "train.steps=4", "train.batch_size=2", "train.warmup_steps=1", "train.log_every=3",
        "train.ckpt_every=2", "threads=1"]


def trainer(root: Path, run: str, *overrides: str) -> SupervisedTrainer:
    return SupervisedTrainer(load_config([*TINY, f"paths.cache={root}/cache", f"paths.checkpoints={root}/{run}/ckpt",
                                          f"run_dir={root}/{run}/run", *overrides]))


def resume_from(root: Path, run: str, state: dict, *overrides: str) -> SupervisedTrainer:
    """A trainer of run ``run`` killed with ``state`` saved (and run ``a``'s log on disk, as it was then)."""
    (root / run / "run").mkdir(parents=True)
    torch.save(state, root / run / "run" / "state.pt")
    shutil.copyfile(root / "a" / "run" / "metrics.jsonl", root / run / "run" / "metrics.jsonl")
    return trainer(root, run, *overrides)


def weights(root: Path, run: str) -> dict[str, torch.Tensor]:
    return load_file(root / run / "ckpt" / "supervised_t.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("supervised")
    states = {}
    t = trainer(root, "a")
    save = t.save

    def keep_each_state() -> None:  # the state file is overwritten: keep a copy of each
        save()
        states[t.step] = root / f"state{t.step}.pt"
        shutil.copyfile(t.state_path, states[t.step])
    t.save = keep_each_state
    assert t.fit() == "done"
    return root, states


def test_sidecar_records_the_recipe_and_the_collapse_monitors(uninterrupted):
    root, _ = uninterrupted
    meta = json.loads(sidecar_path(root / "a" / "ckpt" / "supervised_t.safetensors").read_text())
    recipe = meta["train_config"]["recipe"]
    assert recipe["lr"] == DEFAULTS["lr"] and recipe["steps"] == 4 and recipe["batch_size"] == 2
    assert meta["train_config"]["tasks"] == ["depth", "point_tracking", "box_tracking", "camera_pose", "action"]
    assert meta["train_config"]["correspondence"] == {"temperature": 0.1}  # the propagation tasks' objective
    assert set(meta["train_config"]["loss_scale"]) == {*meta["train_config"]["tasks"], "correspondence"}
    monitors = meta["pretrain"]
    assert monitors["steps"] == 4 and monitors["feat_std"] > 0 and 1 <= monitors["eff_rank"] <= 32


def test_resume_from_a_mid_run_state_ends_with_the_same_weights_and_log(uninterrupted):
    root, states = uninterrupted
    state = load_state(states[2])
    assert [len(w["loss"]) for w in state["metrics_window"]] == [2]     # steps 0 and 1, not yet logged
    resumed = resume_from(root, "b", state)
    assert resumed.step == 2
    assert resumed.fit() == "done"
    a, b = weights(root, "a"), weights(root, "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = comparable(read_metrics(root / "a" / "run" / "metrics.jsonl"))
    assert [r["step"] for r in log] == [2, 3]
    assert comparable(read_metrics(root / "b" / "run" / "metrics.jsonl")) == log


def test_a_state_without_a_metrics_window_resumes_and_says_so(uninterrupted, capsys):
    root, states = uninterrupted
    state = load_state(states[2])
    del state["metrics_window"]
    assert resume_from(root, "c", state).fit() == "done"
    path = root / "c" / "run" / "state.pt"
    assert (f"warning: {path} holds no unlogged metrics for this run (it predates them); the first metrics.jsonl "
            "record after step 2 averages only the steps since the resume") in capsys.readouterr().err
    a, c = weights(root, "a"), weights(root, "c")
    assert all(torch.equal(a[k], c[k]) for k in a)
    log_a, log_c = (comparable(read_metrics(root / run / "run" / "metrics.jsonl")) for run in "ac")
    assert log_c[1:] == log_a[1:] and log_c[0]["loss"] != log_a[0]["loss"]   # step 2's record: step 2 alone


def test_a_stop_request_saves_the_state_and_the_same_command_resumes_to_the_same_weights(uninterrupted):
    """SIGTERM or Ctrl-C (the loop's handler sets the request): the update in flight finishes, the
    state is saved off the checkpoint cadence, and a rerun ends where the uninterrupted run ended."""
    root, _ = uninterrupted
    stopped = trainer(root, "s")
    stopped._stop_requested = signal.SIGTERM
    assert stopped.fit() == "stopped" and stopped.stopped_by == signal.SIGTERM
    assert load_state(stopped.state_path)["step"] == 1 and not (root / "s" / "ckpt").exists()
    assert trainer(root, "s").fit() == "done"
    a, s = weights(root, "a"), weights(root, "s")
    assert all(torch.equal(a[k], s[k]) for k in a)


def test_config_errors_name_the_key_and_the_value(uninterrupted):
    root, states = uninterrupted
    with pytest.raises(ConfigError, match=r"^train.mask_ratio does not apply to supervised models \(they take "):
        recipe({"mask_ratio": 0.9})
    for run, override, what in (("d", "train.lr=0.001", "lr: 0.0003 -> 0.001"), ("e", "seed=1", "seed: 0 -> 1")):
        with pytest.raises(ConfigError) as info:
            resume_from(root, run, load_state(states[2]), override)
        assert str(info.value) == (f"{root / run / 'run' / 'state.pt'}: saved run differs from this config ({what}); "
                                   "remove the run directory or pass resume=false to start over")
