"""The ``supervised_<size>`` control's trainer: its recipe and collapse monitors reach the sidecar,
and a run resumed from a mid-run state ends with the same weights as an uninterrupted one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.models.checkpoint import sidecar_path
from pretrain.run import load_config
from pretrain.supervised import DEFAULTS, SupervisedTrainer

TINY = ["model=supervised_t", "data.num_frames=4", "data.resolution=32", "data.train_size=8", "data.test_size=1",
        "data.num_points=8", "data.max_objects=2", "arch.embed_dim=32", "arch.depth=2", "arch.num_heads=2",
        "arch.mlp_dim=64", "train.steps=4", "train.batch_size=2", "train.warmup_steps=1", "train.log_every=2",
        "train.ckpt_every=2", "threads=1"]


def trainer(root: Path, run: str) -> SupervisedTrainer:
    return SupervisedTrainer(load_config([*TINY, f"paths.cache={root}/cache", f"paths.checkpoints={root}/{run}/ckpt",
                                          f"run_dir={root}/{run}/run"]))


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
    monitors = meta["pretrain"]
    assert monitors["steps"] == 4 and monitors["feat_std"] > 0 and 1 <= monitors["eff_rank"] <= 32


def test_resume_from_a_mid_run_state_ends_with_the_same_weights(uninterrupted):
    root, states = uninterrupted
    (root / "b" / "run").mkdir(parents=True)
    shutil.copyfile(states[2], root / "b" / "run" / "state.pt")
    resumed = trainer(root, "b")
    assert resumed.step == 2
    assert resumed.fit() == "done"
    a = load_file(root / "a" / "ckpt" / "supervised_t.safetensors")
    b = load_file(root / "b" / "ckpt" / "supervised_t.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
