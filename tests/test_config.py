"""Configuration checked before any work: a value of the wrong type or out of range ends in one
line naming the key, the value and what is allowed (exit 2), before a clip, feature or record is
touched — an earlier good record is never replaced by a run that could not train."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_reliability import RECORD, bench_args, error_line, run_here

BAD = {  # override -> what the error line must say
    "readout.epochs=-1": "readout.epochs=-1: expected an integer in [1, ",
    "readout.epochs=0": "readout.epochs=0: expected an integer in [1, ",
    "readout.epochs=abc": "readout.epochs=abc",  # hydra's type check: "could not be converted to Integer"
    "readout.epochs=2.5": "could not be converted to Integer",
    "readout.batch_size=0": "readout.batch_size=0: expected an integer in [1, ",
    "readout.lr=0": "readout.lr=0.0: expected a finite number > 0",
    "readout.lr=nan": "readout.lr=nan: expected a finite number > 0",
    "readout.weight_decay=-1": "readout.weight_decay=-1.0: expected a finite number >= 0",
    "readout.solver=foo": "readout.solver='foo': expected one of ['sgd', 'closed_form']",
    "seed=abc": "Error merging override seed=abc; Value 'abc' of type 'str' could not be converted to Integer",
    "seed=-3": "seed=-3: expected an integer in [0, ",
    "model_seed=1.5": "Value '1.5' of type 'float' could not be converted to Integer",
    "visualize=maybe": "Error merging override visualize=maybe; Value 'maybe' is not a valid bool",
    "features.batch_size=x": "Value 'x' of type 'str' could not be converted to Integer",
    "data.train_size=1.5": "Error merging override data.train_size=1.5; Value '1.5' of type 'float' could not be",
    "data.later_queries=lots": "Value 'lots' of type 'str' could not be converted to Float",
    "task=depth task.patch_px=x": "Error merging override task.patch_px=x; Value 'x' of type 'str' could not be",
    "task=depth task.average=bogus": "task.average='bogus': expected one of ['pooled', 'per_image']",
    "task=depth task.align=icp": "task.align='icp': expected one of ['none', 'median', 'lstsq']",
    "task=point_tracking task.query_mode=random": "task.query_mode='random': expected one of ['first', 'strided']",
    "task=box_tracking task.l1_weight=heavy": "Value 'heavy' of type 'str' could not be converted to Float",
    "data.resolution=60": ("data.num_frames=16, data.resolution=60: model 'random_t' cuts clips into 2×8×8 tubelets; "
                           "use a frame count divisible by 2 and sides by 8"),
    "data.num_frames=15": "data.num_frames=15, data.resolution=64: model 'random_t' cuts clips into 2×8×8 tubelets",
    "model=mae_t": "model 'mae_t': checkpoint ",  # a missing checkpoint is found before the world is generated
    "features.batch_size=0": "features.batch_size=0: expected an integer in [1, ",
    "device=gpu": "device='gpu': expected 'cpu', 'cuda' or 'cuda:<index>'",
    "device=cuda:7": "device='cuda:7': this machine has",
    "data.resolution=0": "data.resolution=0: expected an integer in [1, ",
    "data.train_size=-5": "data.train_size=-5: expected an integer in [1, ",
    # numbers beyond a type's range, nested lists, zero / NaN / float32-underflowing scales
    "seed=18446744073709551616": "seed=18446744073709551616: expected an integer in [0, 9223372036854775807]",
    "model_seed=99999999999999999999999": "model_seed=99999999999999999999999: expected an integer in [0, ",
    "seeds=[[0,1]]": "seeds=[[0, 1]]: expected a list of distinct integers in [0, 9223372036854775807], or null",
    # the probe grid: fractions of the depth, positive float32 rates, a held-out share that can choose
    "select.layers=[0.5,1.5]": "select.layers=[0.5, 1.5]: expected a list of distinct fractions of the encoder's depth",
    "select.layers=[]": "select.layers=[]: expected a list of distinct fractions",
    "select.lr=[1e-3,1e-3]": "select.lr=[0.001, 0.001]: expected a list of distinct finite numbers > 0",
    "select.lr=[1e-50]": "select.lr=[1e-50]: expected a list of distinct finite numbers > 0 that float32 holds",
    "select.weight_decay=[-1.0]": "select.weight_decay=[-1.0]: expected a list of distinct finite numbers >= 0",
    "select.alpha=[nan]": "select.alpha=[nan]: expected a list of distinct finite numbers > 0",
    "task=depth readout=linear readout.solver=closed_form": ("readout.solver=closed_form: task 'depth' has no "
                                                             "closed-form linear fit (those that do: ['action', "
                                                             "'camera_pose']); use readout.solver=sgd"),
    "select.val_fraction=0.9": "select.val_fraction=0.9: expected a number in [0, 0.5]",
    "select.val_fraction=0 select.lr=[1e-3,3e-3]": ("select.val_fraction=0.0 with a grid over select.lr: no held-out "
                                                   "train clips to choose its head on (the test split never chooses)"),
    "task=point_tracking task.query_mode=strided task.query_stride=0":
        "task.query_stride=0: expected an integer in [1, 2147483647]",
    "task=point_tracking task.huber_delta=0": "task.huber_delta=0.0: expected a number > 0 that float32 holds",
    "task=box_tracking task.mlp_hidden=0": "task.mlp_hidden=0: expected an integer in [1, 2147483647]",
    "readout.lr=1e39": "readout.lr=1e+39: expected a finite number > 0 that float32 holds",
}


PROPAGATION_BAD = {  # the training-free tasks' own scales: NaN, negative, or 0 in float32
    "task=mask_propagation task.bound_th=nan": "task.bound_th=nan: expected a finite number >= 0",
    "task=mask_propagation task.bound_th=-1": "task.bound_th=-1.0: expected a finite number >= 0",
    "task=mask_propagation readout.temperature=1e-300":
        "readout.temperature=1e-300: expected a finite number > 0 that float32 holds",
    "task=keypoint_propagation task.sigma=nan": "task.sigma=nan: expected a finite number >= 0",
    "task=keypoint_propagation task.sigma=1e-45":
        "task.sigma=1e-45: expected a number > 0 that float32 holds (>= 1.2e-38)",
}


@pytest.mark.parametrize("override", [*BAD, *PROPAGATION_BAD])
def test_bad_values_are_refused_before_any_work(tmp_path: Path, override: str) -> None:
    cache = tmp_path / "cache"
    if override in PROPAGATION_BAD:
        args = ["readout=propagation", "visualize=false", f"paths.cache={cache}",
                f"paths.results={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'out'}", *override.split()]
    else:
        args = bench_args(cache, tmp_path / "results", tmp_path / "out", *override.split())
    code, err = run_here(*args)
    assert {**BAD, **PROPAGATION_BAD}[override] in error_line(code, err)
    assert not cache.exists() and not (tmp_path / "results").exists()  # nothing generated, nothing written


@pytest.mark.parametrize("override, expected", [
    ("readout.dim=30", "readout.dim=30: expected a multiple of readout.num_heads=8"),
    ("readout.protocol=jax", "readout.protocol='jax': expected one of ['frozen4d', '4ds']"),
])
def test_attentive_readout_choices(tmp_path: Path, override: str, expected: str) -> None:
    args = [a for a in bench_args(tmp_path / "cache", tmp_path / "results", tmp_path / "out") if a != "readout=linear"]
    code, err = run_here(*args, override)
    assert expected in error_line(code, err)


def test_propagation_keys_are_typed(tmp_path: Path) -> None:
    args = ["task=mask_propagation", "readout=propagation", f"paths.cache={tmp_path / 'cache'}",
            f"paths.results={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'out'}"]
    assert "readout.topk=0: expected an integer in [1, " in error_line(*run_here(*args, "readout.topk=0"))
    assert "readout.temperature=0.0: expected a finite number > 0" in error_line(*run_here(*args, "readout.temperature=0"))
    assert "could not be converted to Integer" in error_line(*run_here(*args, "readout.context=many"))


def test_a_refused_run_keeps_the_earlier_record(tmp_path: Path) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    code, err = run_here(*bench_args(cache, results, tmp_path / "out", "data.train_size=16", "data.test_size=8",
                                     "data.num_frames=4", "data.resolution=32"))
    assert code == 0, err[-2000:]
    before = (results / RECORD.format(0)).read_bytes()
    code, err = run_here(*bench_args(cache, results, tmp_path / "out", "data.train_size=16", "data.test_size=8",
                                     "data.num_frames=4", "data.resolution=32", "readout.epochs=-1"))
    assert "readout.epochs=-1" in error_line(code, err)
    assert (results / RECORD.format(0)).read_bytes() == before
