"""Pretraining runs that go wrong through their inputs: a diverging learning rate, a damaged
``state.pt``, a full disk. Each is one user error naming the file or the key, and nothing that a
later run would trust is written (tiny mae_t runs of a few steps, as in ``test_pretrain.py``)."""
from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.state import DivergedError, StateError, StateWriteError, load_state
from pretrain.train import Trainer
from tests.test_leaderboard import fsync_fails_for
from tests.test_pretrain import trainer
from tests.test_pretrain_resume import ENV
from tests.test_reliability import error_line

MAE = ["model=mae_t", "train.steps=4"]


def run_dir(root: Path) -> Path:
    return root / "runs" / "mae_t"


def temp_files(root: Path) -> list[str]:
    """Leftover temp files (``.<name>.*.tmp``) of the atomic writes under ``root``."""
    return sorted(p.name for p in root.rglob(".*.tmp"))


# ---------------------------------------------------------------------------- the command line
def test_hydra_config_errors_are_one_line_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pretrain.run", *MAE, "train.stepz=3", f"paths.runs={tmp_path}"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert error_line(out.returncode, out.stderr) == (
        "error: Could not override 'train.stepz'; To append to your config use +train.stepz=3; "
        "Key 'stepz' not in 'RecipeOverrides'")


# ---------------------------------------------------------------------------- divergence
def test_a_diverging_lr_stops_with_the_step_and_keeps_the_last_good_state(tmp_path):
    """lr=1e6: the loss of step 0 is finite, that of step 1 is not (inf or nan). The run ends in one line
    (exit 2) naming the step and train.lr; the state saved after step 0 stays, and no checkpoint is exported."""
    out = subprocess.run([sys.executable, "-m", "pretrain.run", *MAE, "data.name=patterns", "data.num_frames=4",
                          "data.resolution=32", "data.train_size=16", "arch.embed_dim=32", "arch.depth=4",
                          "arch.num_heads=2", "arch.mlp_dim=64", "train.decoder_depth=1", "train.batch_size=4",
                          "device=cpu", "train.lr=1e6", "train.ckpt_every=1", f"paths.runs={tmp_path}/runs",
                          f"paths.checkpoints={tmp_path}/ckpt"], env=ENV, capture_output=True, text=True,
                         timeout=120)
    state = run_dir(tmp_path) / "state.pt"
    assert re.fullmatch(
        rf"error: mae_t: the loss became (nan|inf) at step 1: training diverged at train.lr=1e\+06; rerun with a "
        rf"lower train.lr and resume=false \({re.escape(str(state))} holds the last good state, at the start of "
        rf"step 1\)",
        error_line(out.returncode, out.stderr))
    saved = load_state(state)
    assert saved["step"] == 1 and all(torch.isfinite(t).all() for t in saved["model"].values())
    assert not (tmp_path / "ckpt").exists() and temp_files(tmp_path) == []


def test_weights_that_are_no_longer_finite_are_never_saved(tmp_path):
    t = trainer(tmp_path, *MAE)
    t.train_step()
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("inf"))
    with pytest.raises(DivergedError, match=r"^mae_t: the weights became non-finite at step 0: training diverged "
                                             r"at train.lr=0.001; rerun with a lower train.lr$"):
        t.save()
    assert not (run_dir(tmp_path) / "state.pt").exists()


# ---------------------------------------------------------------------------- a damaged state.pt
class Payload:
    """Unpickling it would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("damage", ["truncated", "empty", "torch pickle", "plain pickle", "a tensor"])
def test_a_damaged_state_is_one_line_naming_the_file(tmp_path, damage):
    t = trainer(tmp_path, *MAE)
    t.save()
    state = run_dir(tmp_path) / "state.pt"
    marker = tmp_path / "marker"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[:len(state.read_bytes()) // 2])
    elif damage == "empty":
        state.write_bytes(b"")
    elif damage == "torch pickle":
        torch.save({"model": Payload(marker)}, state)
    elif damage == "plain pickle":
        state.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    else:
        torch.save(torch.zeros(3), state)
    with pytest.raises(StateError) as info:
        trainer(tmp_path, *MAE)
    start_over = "; delete it (or pass resume=false) to start over"
    assert str(info.value) == f"{state}: " + {
        "truncated": "truncated or corrupt training state (RuntimeError: PytorchStreamReader failed reading zip "
                     "archive: failed finding central directory)",
        "empty": "truncated or corrupt training state (EOFError)",
        "torch pickle": "holds objects other than tensors, refused without running them: the pickle references "
                        "posix.system, which a weights-only load never runs (a state dict does not need it: the "
                        "file is corrupt or malicious)",
        "plain pickle": "holds objects other than tensors, refused without running them: the pickle references "
                        "posix.system, which a weights-only load never runs (a state dict does not need it: the "
                        "file is corrupt or malicious)",
        "a tensor": "holds a Tensor, not a training state"}[damage] + start_over
    assert not marker.exists()
    assert isinstance(trainer(tmp_path, *MAE, "resume=false"), Trainer)  # the way out the message gives


# ---------------------------------------------------------------------------- a full disk
def test_a_full_disk_while_saving_the_state_keeps_the_old_one(tmp_path, monkeypatch):
    t = trainer(tmp_path, *MAE)
    t.save()
    state = run_dir(tmp_path) / "state.pt"
    before = state.read_bytes()
    t.train_step()
    fsync_fails_for(monkeypatch, ".state.pt.")
    with pytest.raises(StateWriteError) as info:
        t.save()
    assert str(info.value) == (f"{state}: cannot write the training state (No space left on device); any earlier "
                               "training state there is unchanged")

    def torch_save_on_a_full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", torch_save_on_a_full_disk)
    with pytest.raises(StateWriteError) as info:
        t.save()
    assert str(info.value) == (f"{state}: cannot write the training state (torch.save failed: unexpected pos 704 vs "
                               "598; is the disk full?); any earlier training state there is unchanged")
    assert state.read_bytes() == before and temp_files(tmp_path) == []
    assert t.saved_step == 0


def test_a_full_disk_while_exporting_the_checkpoint_is_one_line(tmp_path, monkeypatch):
    t = trainer(tmp_path, *MAE)
    t.finish()
    weights = tmp_path / "ckpt" / "mae_t.safetensors"
    before = weights.read_bytes()
    with torch.no_grad():
        next(t.model.encoder.parameters()).add_(1.0)  # the export to fail differs from the one on disk
    fsync_fails_for(monkeypatch, ".mae_t.json.")  # the sidecar: the weights' temp file is already on disk
    with pytest.raises(StateWriteError) as info:
        t.finish()
    assert str(info.value) == (f"{weights}: cannot write the checkpoint (No space left on device); any earlier "
                               "checkpoint there is unchanged")
    assert weights.read_bytes() == before and temp_files(tmp_path) == []


def test_a_bug_while_saving_keeps_its_traceback(tmp_path, monkeypatch):
    t = trainer(tmp_path, *MAE)

    def bug(*args, **kwargs):
        raise RuntimeError("an internal invariant")

    monkeypatch.setattr(torch, "save", bug)
    with pytest.raises(RuntimeError, match="^an internal invariant$"):
        t.save()
