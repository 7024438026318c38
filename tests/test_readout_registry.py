"""Readouts are declared once, on the class: its ``from_task`` keywords and its fitting recipe are the
typed hydra node ``readout/<name>``, ranged by the rules their annotations carry; a new readout is
one class and its registration."""
from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
import torch
from einops import reduce
from torch import nn

from bench.readouts import Readout, readout_fields, readout_recipe
from bench.registry import READOUTS
from bench.schema import number
from tests.test_reliability import TINY_WORLD, bench_args, error_line, run_here


def test_every_readout_declares_its_keys_once():
    fields = {name: {k: v for k, (_, v) in readout_fields(READOUTS.get(name)).items()} for name in READOUTS.names()}
    assert fields == {
        "attentive": {"num_heads": 8, "dim": None, "protocol": "frozen4d", "epochs": 20, "batch_size": 16,
                      "lr": 1.0e-3, "weight_decay": 0.05},
        "linear": {"epochs": 20, "batch_size": 16, "lr": 3.0e-3, "weight_decay": 0.0, "solver": "sgd", "alpha": 1.0},
        "propagation": {"context": 20, "topk": 7, "radius": 20.0, "reference_grid": 30, "temperature": 0.7,
                        "batch_size": 16}}
    assert [READOUTS.get(n).trained for n in ("attentive", "linear", "propagation")] == [True, True, False]
    assert readout_recipe(READOUTS.get("propagation"), {"batch_size": 4}).epochs == 1  # undeclared: the default


class ScaledMean(Readout):
    """The pooled features times a learned matrix, scaled: a probe in a dozen lines."""

    name = "scaled_mean"
    recipe = {"epochs": 1, "batch_size": 8, "lr": 1.0e-2}

    def __init__(self, feature_dim: int, output_dim: int, scale: float):
        super().__init__()
        self.scale, self.head = scale, nn.Linear(feature_dim, output_dim)

    @classmethod
    def from_task(cls, task: Any, feature_dim: int, scale: Annotated[float, number()] = 1.0) -> Readout:
        return cls(feature_dim, task.output_dim, scale)

    def forward(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.scale * reduce(features, "b t n c -> b 1 c", "mean"))


@pytest.fixture
def scaled_mean():
    READOUTS.register()(ScaledMean)
    yield ScaledMean
    READOUTS._entries.pop(ScaledMean.name)


def test_a_new_readout_is_one_class_and_its_registration(scaled_mean, tmp_path):
    args = bench_args(tmp_path / "cache", tmp_path / "results", tmp_path / "out", *TINY_WORLD)
    args = [a for a in args if not a.startswith("readout")] + ["readout=scaled_mean", "readout.scale=0.5"]
    code, err = run_here(*args)
    assert code == 0, err[-2000:]
    record = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert record["readout"] == "scaled_mean" and len(record["loss_tail"]) > 0
    assert record["config"]["readout"] == {"kind": "scaled_mean", "scale": 0.5, "epochs": 1, "batch_size": 8,
                                           "lr": 1.0e-2}
    code, err = run_here(*args[:-1], "readout.scale=-1")
    assert error_line(code, err).startswith("error: readout.scale=-1.0: expected a finite number > 0")
