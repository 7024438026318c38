"""Seeds trained together (bench.grid) equal the same seeds trained one at a time (bench.fit)."""
import json

import numpy as np
import pytest
import torch

from bench.data.world import SyntheticWorld, WorldConfig
from bench.fit import fit, predict
from bench.grid import Head, SeedStack, choose, fit_grid, held_out, seeded_readouts
from bench.readouts import build_readout
from bench.registry import TASKS
from bench.task import FeatureSpec
from benchmarks.multiseed import SIDES, main

SPEC = FeatureSpec(grid=(2, 4, 4), dim=16, clip=(4, 32, 32))
SEEDS = [0, 1, 2]
RECIPE = {"epochs": 2, "batch_size": 5, "lr": 1e-3, "weight_decay": 0.05}  # 12 clips: 3 steps an epoch, the last short


def fit_seeds(readouts, task, features, targets, seeds, epochs, batch_size, lr, weight_decay, rows=None):
    """The grid of ``seeds`` on one layer with one learning rate and weight decay."""
    heads = [Head(seed, 0, lr, weight_decay) for seed in seeds]
    return fit_grid(readouts, heads, task, {0: features}, targets, epochs, batch_size, rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = WorldConfig(train_size=12, test_size=1, num_frames=4, resolution=32, workers=1)
    clips = SyntheticWorld(cfg, split="train", root=tmp_path_factory.mktemp("world"))
    features = np.random.default_rng(0).standard_normal((12, 2, 16, 16)).astype(np.float32)
    return clips, features


def task_and_builder(clips, name: str, kind: str, **options):
    task = TASKS.get(name)(SPEC, readout=kind, meta=clips.meta, **options)
    targets = {k: np.asarray(v) for k, v in clips.arrays([k for k in task.requires if k != "video"]).items()}
    task.prepare(targets)
    return task, targets, lambda: build_readout(kind, task, SPEC.dim, num_heads=2)


@pytest.mark.parametrize("name,kind,options", [("depth", "attentive", {}), ("point_tracking", "attentive", {}),
                                               ("point_tracking", "attentive", {"train_tracks": 5}),
                                               ("box_tracking", "attentive", {}), ("action", "attentive", {}),
                                               ("camera_pose", "linear", {})])
def test_batched_seeds_equal_one_seed_fits(world, name, kind, options):
    """Also with a task that trains on random views of its batches (point tracking's track subsets)."""
    clips, features = world
    task, targets, build = task_and_builder(clips, name, kind, **options)
    alone = []
    for seed in SEEDS:
        torch.manual_seed(seed)  # as bench.run.read_out builds a readout
        readout = build()
        history = fit(readout, task, features, targets, seed=seed, **RECIPE)
        alone.append((history, predict(readout, task, features, targets, 5)))
    readouts = seeded_readouts(SEEDS, build)
    histories = fit_seeds(readouts, task, features, targets, seeds=SEEDS, **RECIPE)
    assert len(histories) == len(SEEDS) and all(len(h) == 6 for h in histories)
    assert histories[0] != histories[1]  # seeds really differ (init and batch order)
    for (history, pred), batched_history, readout in zip(alone, histories, readouts):
        np.testing.assert_allclose(batched_history, history, rtol=1e-5)
        batched_pred = predict(readout, task, features, targets, 5)
        for key in pred:
            np.testing.assert_allclose(batched_pred[key], pred[key], rtol=1e-5, atol=1e-6)
        ours, theirs = task.metrics(batched_pred, targets), task.metrics(pred, targets)
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-7)


def test_frozen_parameters_stay_frozen_and_write_back_fills_every_readout(world):
    clips, features = world
    task, targets, build = task_and_builder(clips, "action", "attentive")
    readouts = seeded_readouts([0, 1], build)
    for r in readouts:
        r.head.bias.requires_grad_(False)
    before = [r.head.bias.clone() for r in readouts]
    untouched = [r.kv.weight.clone() for r in readouts]
    fit_seeds(readouts, task, features, targets, seeds=[0, 1], **RECIPE)
    for r, bias, kv in zip(readouts, before, untouched):
        torch.testing.assert_close(r.head.bias, bias, rtol=0, atol=0)
        assert not torch.equal(r.kv.weight, kv)


def test_readouts_of_different_shapes_are_refused(world):
    clips, _ = world
    task, _, _ = task_and_builder(clips, "action", "attentive")
    narrow, wide = (build_readout("attentive", task, SPEC.dim, num_heads=2, dim=d) for d in (8, 16))
    with pytest.raises(ValueError, match="differ in their parameters"):
        SeedStack([narrow, wide])
    with pytest.raises(ValueError, match=r"1 readouts for 2 heads"):
        fit_seeds([narrow], task, np.zeros((2, 2, 16, 16), np.float32), {}, seeds=[0, 1], **RECIPE)


def test_a_diverging_seed_is_named(world):
    clips, features = world
    task, targets, build = task_and_builder(clips, "camera_pose", "linear")
    diverged = r"readout camera_pose seed 0 \(layer 0, lr 1e\+30, weight decay 0.05\): training loss became (nan|inf)"
    with pytest.raises(FloatingPointError, match=diverged):
        fit_seeds(seeded_readouts([0, 1], build), task, features, targets, seeds=[0, 1],
                  **{**RECIPE, "lr": 1e30})


def test_benchmark_quick_mode_times_every_side_and_counts_k_seeds_of_flops(tmp_path):
    main(["--quick", "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "multiseed.json").read_text())
    assert [r["task"] for r in record["rows"]] == ["depth", "point_tracking", "box_tracking", "camera_pose", "action"]
    for row in record["rows"]:
        assert all(row[f"ms_{side}"] > 0 for side in SIDES)
        assert row["gflop_batched"] == pytest.approx(3 * row["gflop_single"], rel=1e-6)
    assert record["goal"]["target"] == 1.5 and isinstance(record["goal"]["met"], bool)


def test_seeds_on_the_command_line_write_one_record_each_equal_to_one_seed_runs(tmp_path):
    """``seeds=[0,1]`` trains both readouts in one batched fit and writes the same two records (up
    to wall time and provenance) that ``seed=0`` and ``seed=1`` write alone."""
    from tests.test_reliability import RECORD, TINY_WORLD, bench_args, run_here

    def records(results, *overrides):
        code, err = run_here(*bench_args(tmp_path / "cache", results, tmp_path / "out", *TINY_WORLD, *overrides))
        assert code == 0, err[-2000:]
        return {s: json.loads((results / RECORD.format(s)).read_text()) for s in (0, 1)
                if (results / RECORD.format(s)).exists()}

    together = records(tmp_path / "together", "seeds=[0,1]")
    alone = {**records(tmp_path / "a0", "seed=0"), **records(tmp_path / "a1", "seed=1")}
    assert sorted(together) == sorted(alone) == [0, 1]
    for s in (0, 1):
        assert together[s]["seed"] == s and together[s]["config"]["seed"] == s
        for key in ("metrics", "per_clip", "train_metrics", "loss_tail"):
            assert together[s][key] == alone[s][key], f"seed {s}: {key} differs from the one-seed run"
    assert together[0]["metrics"] != together[1]["metrics"]


def test_bad_seed_lists_are_refused(tmp_path):
    from tests.test_reliability import bench_args, error_line, run_here

    args = bench_args(tmp_path / "cache", tmp_path / "results", tmp_path / "out")
    assert error_line(*run_here(*args, "seeds=[1,1]")) == (
        "error: seeds=[1, 1]: expected a list of distinct integers in [0, 9223372036854775807], or null")
    assert "seeds=[]" in error_line(*run_here(*args, "seeds=[]"))
    assert not (tmp_path / "cache").exists()


def test_a_grid_of_layers_and_learning_rates_equals_each_head_trained_alone(world):
    """Heads of two layers x two learning rates x two weight decays, on a subset of the clips:
    each equals ``fit`` of its own readout, layer, learning rate and weight decay on those clips."""
    clips, features = world
    layers = {3: features, 5: features[::-1].copy() * 0.5}
    task, targets, build = task_and_builder(clips, "box_tracking", "attentive")
    rows = np.array([0, 2, 3, 5, 7, 8, 9, 11])
    heads = [Head(1, layer, lr, wd) for layer in layers for lr in (1e-3, 3e-3) for wd in (0.0, 0.05)]
    readouts = seeded_readouts([h.seed for h in heads], build)
    histories = fit_grid(readouts, heads, task, layers, targets, epochs=2, batch_size=3, rows=rows)
    assert len({tuple(h) for h in histories}) == len(heads)  # every head trained its own way
    for head, readout, history in zip(heads, readouts, histories):
        torch.manual_seed(head.seed)
        alone = build()
        sub = {k: v[rows] for k, v in targets.items()}
        expected = fit(alone, task, layers[head.layer][rows], sub, epochs=2, batch_size=3, lr=head.lr,
                       weight_decay=head.weight_decay, seed=head.seed)
        assert len(history) == 6  # 8 clips in batches of 3: 3 steps an epoch
        np.testing.assert_allclose(history, expected, rtol=1e-5)
        ours = dict(readout.named_parameters())
        for name, param in alone.named_parameters():
            torch.testing.assert_close(ours[name], param, rtol=1e-4, atol=1e-6, msg=f"{head}: {name}")


def test_held_out_rows_are_seeded_disjoint_sorted_and_sized():
    train, val = held_out(100, 0.2)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    assert list(train) == sorted(train) and list(val) == sorted(val) and set(train) | set(val) == set(range(100))
    again_train, again_val = held_out(100, 0.2)
    np.testing.assert_array_equal(val, again_val)
    assert held_out(100, 0.0) == (None, None)
    assert len(held_out(3, 0.01)[1]) == 1  # at least one clip
    assert choose([0.3, 0.5, 0.5], higher_is_better=True) == 1 and choose([0.3, 0.1, 0.1], False) == 1


def test_the_head_is_chosen_on_held_out_train_clips_never_on_test_labels(tmp_path, monkeypatch):
    """A grid run records every head's held-out and test score and the held-out choice; with the
    test split's labels permuted, every held-out score and the choice stay the same (the test
    metrics change)."""
    from bench.data.world import SyntheticWorld
    from tests.test_reliability import TINY_WORLD, bench_args, run_here

    grid = ["select.alpha=[0.01,1.0,100.0]", "select.layers=[0.5,1.0]", "readout.solver=closed_form"]

    def selection(results, permute):
        if permute:
            real = SyntheticWorld.arrays

            def shuffled(self, keys):
                arrays = real(self, keys)
                if self.split != "test":
                    return arrays
                order = np.random.default_rng(1).permutation(len(next(iter(arrays.values()))))
                return {k: (v if k == "video" else np.asarray(v)[order]) for k, v in arrays.items()}
            monkeypatch.setattr(SyntheticWorld, "arrays", shuffled)
        code, err = run_here(*bench_args(tmp_path / "cache", results, tmp_path / "out", *TINY_WORLD, *grid))
        assert code == 0, err[-2000:]
        record = json.loads(next(results.glob("*.json")).read_text())
        monkeypatch.undo()
        return record

    plain, permuted = selection(tmp_path / "plain", False), selection(tmp_path / "permuted", True)
    sel = plain["selection"]
    # layers 4 and 8 (halfway, last) and 6 (the 4DS rule) of random_t's 8 blocks, x 3 L2 weights
    assert [(h["layer"], h["alpha"]) for h in sel["heads"]] == [(layer, a) for layer in (4, 6, 8)
                                                               for a in (0.01, 1.0, 100.0)]
    assert sel["val_clips"] == 3  # 16 train clips, 20% held out
    assert sel["heads"][sel["chosen"]]["test"] == pytest.approx(plain["metrics"][plain["primary_metric"]])
    assert [h["val"] for h in permuted["selection"]["heads"]] == [h["val"] for h in sel["heads"]]
    assert permuted["selection"]["chosen"] == sel["chosen"]
    assert [h["test"] for h in permuted["selection"]["heads"]] != [h["test"] for h in sel["heads"]]
