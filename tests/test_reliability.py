"""Reliability and security matrix (docs/reliability.md), through the real CLI where it matters.

Every user error ends in one line on stderr (``error: ...`` naming the input), exit status 2 and
nothing half-written under the results or cache directories. Also: a full disk keeps the old
record, concurrent runs into one results directory both land, a SIGKILL during feature caching
leaves nothing a later run trusts, the cache key covers what changes features, and the same
command + seed reproduces the metrics with a record that says how it was made.

The CLI runs in this process where it can (``runpy``, exactly what ``python -m bench.run``
executes): importing torch costs seconds per subprocess on our 2-core machines. Concurrency and
SIGKILL need real processes. Checks already made elsewhere are listed in docs/reliability.md.
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import runpy
import signal
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.features as bf
import bench.grid
from bench.models.checkpoint import load_checkpoint, save_checkpoint, sidecar_path
from bench.models.vit import ViTConfig, VideoViT, normalize_video
from bench.results import read_record
from tests.conftest import TinyClips
from tests.test_adapters import make_kinetics, video_of

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = ["data.num_frames=4", "data.resolution=32"]
TINY_WORLD = TINY_DATA + ["data.train_size=16", "data.test_size=8"]
FAST = ["readout=linear", "readout.epochs=1", "readout.batch_size=8", "visualize=false"]
RECORD = "camera_pose__synthetic__random_t__linear__seed{}.json"


def bench_args(cache: Path, results: Path, out: Path, *overrides: str) -> list[str]:
    return ["task=camera_pose", *FAST, f"paths.cache={cache}", f"paths.results={results}",
            f"paths.checkpoints={cache.parent / 'ckpt'}", f"hydra.run.dir={out}", *overrides]


def run_here(*args: str) -> tuple[int, str]:
    """``python -m bench.run ARGS`` in this process; (exit status, what it wrote to stderr)."""
    argv, env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [str(REPO / "bench" / "run.py"), *args, "hydra/job_logging=none", "hydra/hydra_logging=none",
                "hydra.output_subdir=null"]
    err = io.StringIO()
    try:
        with warnings.catch_warnings(), redirect_stderr(err), redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
            runpy.run_module("bench.run", run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:  # the CLI sets HYDRA_FULL_ERROR=1 for itself; leave this process as it was
        sys.argv = argv
        if env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = env
    return code, err.getvalue()


def error_line(code: int, err: str) -> str:
    """The one-line error of a failed run (after any progress bars), checked for exit 2 and no traceback."""
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    line = err.strip().splitlines()[-1].split("\r")[-1]  # progress bars end in \r, not \n
    assert line.startswith("error: "), err[-2000:]
    return line


def trusted_entries(cache: Path) -> set[str]:
    """Cache entries a run would read (hidden names are temp dirs a writer has not renamed yet)."""
    return {p.relative_to(cache).as_posix() for p in cache.glob("*/*") if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A tiny world, random_t features and the seed-0 record, made once by one in-process run."""
    root = tmp_path_factory.mktemp("shared")
    code, err = run_here(*bench_args(root / "cache", root / "results", root / "out"), *TINY_WORLD)
    assert code == 0, err[-2000:]
    return root


def tiny_checkpoint(path: Path) -> VideoViT:
    """A 2-block encoder for 4x32x32 clips, saved (with its sidecar) to ``path``."""
    torch.manual_seed(0)
    model = VideoViT(ViTConfig(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=(2, 8, 8), img_size=32,
                               num_frames=4))
    save_checkpoint(model, path)
    return model


# ---------------------------------------------------------------------------------------------
# user errors: one line, exit 2, nothing written


@pytest.mark.parametrize("override,expected", [
    # a prefix: plugin tasks registered earlier in this process (tests/test_plugin.py) may follow
    ("task=nope", "error: In 'bench': Could not find 'task/nope'; available: action, box_tracking, camera_pose, "
                  "depth,"),
    ("readout=nope", "error: In 'bench': Could not find 'readout/nope'; available: attentive, linear"),
    ("model=nope_t",
     "error: In 'bench': Could not find 'model/nope_t'; available: blind, dinov2_s14_imgfocus, latent_nofreeze_b,"),
    ("data=nope", "error: In 'bench': Could not find 'data/nope'; available: davis, jhmdb, kinetics,"),
    ("data.name=nope", "error: unknown dataset 'nope'; known: davis, jhmdb, kinetics, realestate10k, scannet, ssv2, "
                       "synthetic,"),
    ("data.bogus=1", "error: Could not override 'data.bogus'; To append to your config use +data.bogus=1; "
                     "Key 'bogus' not in 'synthetic_data'"),
])
def test_unknown_names_are_one_line_errors(tmp_path, override, expected):
    line = error_line(*run_here(*bench_args(tmp_path / "cache", tmp_path / "results", tmp_path / "out"),
                                override))
    assert line.startswith(expected)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_task_dataset_key_mismatch_is_refused_before_any_work(tmp_path):
    args = bench_args(tmp_path / "cache", tmp_path / "results", tmp_path / "out", "task=point_tracking",
                      "data=scannet", *TINY_DATA)
    assert error_line(*run_here(*args)) == (
        "error: task 'point_tracking' needs clip keys ['target_points', 'occluded'] that dataset 'scannet' does "
        "not provide (it provides ['video', 'depth', 'intrinsics', 'cam_to_world'])")
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def sidecar_claims_a_third_block(path: Path) -> None:
    tiny_checkpoint(path)
    meta = json.loads(sidecar_path(path).read_text())
    meta["architecture"]["depth"] = 3
    sidecar_path(path).write_text(json.dumps(meta))


def truncate(path: Path) -> None:
    tiny_checkpoint(path)
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("name,make,expected", [
    ("mae_t", None, "error: model 'mae_t': checkpoint {path} not found; train it with "
                    "`python -m pretrain.run model=mae_t`"),
    ("deeper", sidecar_claims_a_third_block,
     "error: {path}: weights do not match the sidecar architecture (12 tensor(s) missing from the file: "
     "blocks.2.attn.proj.bias, blocks.2.attn.proj.weight, blocks.2.attn.qkv.bias, ...)"),
    ("cut", truncate, "error: {path}: sha256 <hex>… does not match its sidecar (<hex>…)"),
])
def test_bad_checkpoints_are_refused(shared, tmp_path, name, make, expected):
    path = shared / "ckpt" / f"{name}.safetensors"
    if make:
        make(path)
    args = bench_args(shared / "cache", tmp_path / "results", tmp_path / "out", f"model.name={name}", *TINY_WORLD)
    line = re.sub(r"\b[0-9a-f]{12}…", "<hex>…", error_line(*run_here(*args)))
    assert line == expected.format(path=path)
    assert not (tmp_path / "results").exists()


def test_inf_features_are_refused_before_training(shared, tmp_path, monkeypatch):
    """Huge (finite) activations overflow the fp16 cache to +-Inf: no NaN at all, and still caught."""
    model = tiny_checkpoint(shared / "ckpt" / "huge.safetensors")
    with torch.no_grad():
        model.patch_embed.weight.mul_(1e6)
    save_checkpoint(model, shared / "ckpt" / "huge.safetensors")
    refuse = lambda *a, **k: pytest.fail("readout trained on non-finite features")  # noqa: E731
    monkeypatch.setattr(bench.grid, "fit_grid", refuse)
    monkeypatch.setattr(bench.grid, "fit_closed_form", refuse)
    args = bench_args(shared / "cache", tmp_path / "results", tmp_path / "out", "model.name=huge", *TINY_WORLD)
    assert error_line(*run_here(*args)) == (
        "error: model 'huge' on synthetic/train: features of clip 0 contain NaN or Inf (encoder diverged or bad input)")
    assert not (tmp_path / "results").exists()
    cached = [np.load(f) for f in (shared / "cache" / "features").glob("*/features.npy")]
    assert any(np.isinf(f).any() and not np.isnan(f).any() for f in cached)  # the Inf-only case was exercised


def test_a_diverging_readout_is_one_line_and_writes_no_record(shared, tmp_path):
    """readout.lr=1e30: the pose head's outputs overflow before any loss is non-finite; the SVD that
    decodes them is never reached."""
    args = bench_args(shared / "cache", tmp_path / "results", tmp_path / "out", *TINY_WORLD, "readout=attentive",
                      "readout.epochs=1", "readout.lr=1e30")
    assert error_line(*run_here(*args)) in (
        "error: readout camera_pose: its outputs are not finite (the fit diverged; lower readout.lr)",
        "error: readout camera_pose seed 0 (layer 6, lr 1e+30, weight decay 0.05): training loss became nan "
        "(lower readout.lr)")
    assert not (tmp_path / "results").exists()


def test_a_bug_keeps_its_traceback(shared, tmp_path, monkeypatch):
    """Only user errors (bench.errors.UserError) become one line: a plain ValueError from inside the
    code is a bug, and it reaches the caller whole instead of being printed as `error: ...`."""
    def buggy_fit(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")  # what numpy says for a shape bug

    monkeypatch.setattr(bench.grid, "fit_grid", buggy_fit)
    args = bench_args(shared / "cache", tmp_path / "results", tmp_path / "out", *TINY_WORLD)
    with pytest.raises(ValueError, match="could not be broadcast"):
        run_here(*args)
    assert not (tmp_path / "results").exists()


def test_zero_byte_video_through_the_cli(tmp_path):
    data = make_kinetics(tmp_path / "kinetics")
    video_of(data).write_bytes(b"")
    args = bench_args(tmp_path / "cache", tmp_path / "results", tmp_path / "out", "task=action", "data=kinetics",
                      f"data.data_dir={data}", *TINY_DATA)
    assert error_line(*run_here(*args)) == f"error: {video_of(data)}: video is empty (0 bytes)"
    assert not (tmp_path / "results").exists()
    entries = list((tmp_path / "cache" / "adapters" / "kinetics").iterdir())
    assert len(entries) == 1 and (entries[0] / "complete.json").exists()  # the train split, complete; no test split


def test_disk_full_on_record_write_keeps_the_old_record(shared, tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    old = (shared / "results" / RECORD.format(0)).read_bytes()
    (results / RECORD.format(0)).write_bytes(old)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(results)):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    args = bench_args(shared / "cache", results, tmp_path / "out", *TINY_WORLD)
    assert error_line(*run_here(*args)) == (
        f"error: {results / RECORD.format(0)}: cannot write the result record (No space left on device); "
        "any earlier record there is unchanged")
    assert [p.name for p in results.iterdir()] == [RECORD.format(0)]  # no temp file left behind
    assert (results / RECORD.format(0)).read_bytes() == old


def test_disk_full_while_saving_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    """Weights and sidecar both reach disk before either is renamed: a write that fails on the
    sidecar leaves the previous (weights, sidecar) pair, which still loads."""
    path = tmp_path / "m.safetensors"
    old = tiny_checkpoint(path)
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the sidecar's temp file
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    new = VideoViT(old.cfg)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(new, path)
    monkeypatch.undo()
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.patch_embed.weight, old.patch_embed.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


# ---------------------------------------------------------------------------------------------
# concurrency, reproducibility, provenance


def test_concurrent_runs_into_one_results_dir_reproduce_the_metrics(shared, tmp_path):
    """Two processes race on one fresh cache (world + features) and one results directory; both
    records land intact, and seed 0 reproduces the in-process run made on another cache."""
    procs = [subprocess.Popen([sys.executable, "-m", "bench.run",
                               *bench_args(tmp_path / "cache", tmp_path / "results", tmp_path / f"out{seed}",
                                           f"seed={seed}"), *TINY_WORLD],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [RECORD.format(0), RECORD.format(1)]
    records = [read_record(tmp_path / "results" / RECORD.format(seed)) for seed in (0, 1)]
    assert [r.seed for r in records] == [0, 1]
    reference = read_record(shared / "results" / RECORD.format(0))
    assert records[0].metrics == reference.metrics  # bit-identical: same command + seed, fresh cache
    assert records[1].metrics != reference.metrics  # and the seed does matter


def test_record_says_how_it_was_made(shared):
    record = read_record(shared / "results" / RECORD.format(0))
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    assert record.git_commit in (head, f"{head}-dirty")
    assert record.config["seed"] == record.seed == 0 and record.config["data"]["resolution"] == 32
    assert record.config["readout"]["kind"] == "linear" and record.config["model"]["name"] == "random_t"
    assert {"python", "torch", "numpy", "hydra-core", "scikit-learn", "safetensors"} <= set(record.versions)
    assert record.versions["torch"] == torch.__version__ and record.versions["numpy"] == np.__version__
    assert record.hardware["cpu_count"] == os.cpu_count() and "machine" in record.hardware
    assert record.task_version == 1  # the task's version: the leaderboard never pools two versions


# ---------------------------------------------------------------------------------------------
# the feature cache: killed writers, and a key that covers what changes features

KILLED_WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
import torch
from bench.features import cached_features
from bench.models.vit import ViTConfig, VideoViT
from tests.conftest import TinyClips

torch.manual_seed(0)
model = VideoViT(ViTConfig(embed_dim=32, depth=4, num_heads=2, mlp_dim=64, patch_size=(2, 4, 4), img_size=16,
                           num_frames=4)).eval()
forward_layers = model.forward_layers
def slow_forward_layers(x, layers):
    print("batch", flush=True)
    time.sleep(0.02)
    return forward_layers(x, layers)
model.forward_layers = slow_forward_layers
cached_features(model, "sha-kill", TinyClips(n=40), {cache!r}, batch_size=1)
print("done", flush=True)
"""


def test_sigkill_during_feature_caching_leaves_nothing_trusted(tiny_vit, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(repo=str(REPO), cache=str(cache))],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout.readline() == "batch\n"  # extraction has started: 40 batches of >= 20 ms to go
    delay = random.Random(os.getpid()).uniform(0.0, 0.4)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert trusted_entries(cache) == set(), f"killed {delay:.3f} s into extraction"
    assert any(p.name.startswith(".") for p in (cache / "features").iterdir())  # the half-written temp dir

    real_extract, calls = bf.extract, []
    monkeypatch.setattr(bf, "extract", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    fresh = bf.cached_features(tiny_vit, "sha-kill", TinyClips(n=40), cache)  # the killed writer's key
    assert calls == [1]  # a miss: recomputed, not read from the killed writer's leftovers
    with torch.inference_mode():
        ref = tiny_vit(normalize_video(torch.from_numpy(TinyClips(n=40).arrays(["video"])["video"])))
    np.testing.assert_allclose(fresh.astype(np.float32), ref.numpy(), atol=2e-2, rtol=1e-2)


def test_changing_weights_data_depth_or_transforms_misses_the_cache(tiny_vit, tmp_path, monkeypatch):
    """Each input that changes features gets its own entry: a real miss (extraction runs), not only a new key."""
    real_extract, misses = bf.extract, []
    monkeypatch.setattr(bf, "extract", lambda *a, **k: misses.append(1) or real_extract(*a, **k))
    base = dict(weights_sha="w", dataset=TinyClips(n=4), transforms={"normalize": "imagenet"})

    def extractions(**change) -> int:
        before = len(misses)
        bf.cached_features(tiny_vit, cache_root=tmp_path, **{**base, **change})
        return len(misses) - before

    assert extractions() == 1 and extractions() == 0  # a miss, then a hit
    assert extractions(weights_sha="w2") == 1
    assert extractions(dataset=TinyClips(n=4, seed=1)) == 1
    assert extractions(transforms={"normalize": "none"}) == 1
    tiny_vit.cfg.readout_depth = 0.5  # features from block 2 of 4 instead of block 3
    assert extractions() == 1
