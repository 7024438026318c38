"""The task contract (bench.testing): every registered task keeps every rule that applies to it,
plugins included; each rule catches a toy task broken in the way it guards against; the example
plugin's own tests (which import bench.testing) pass the way its author runs them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.readouts import LearnedQueries
from bench.registry import TASKS
from bench.task import FeatureSpec, Task, register_task_config
from bench.testing import (CONTRACT, Clips, check_task, contract_blind, contract_closed_form, contract_config,
                           contract_metrics, contract_per_clip, contract_perfect, contract_shapes, contract_visualize,
                           contract_zero_output, readout_kinds, world_clips)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "frozen4d_object_count"

# The training-free built-ins have no loss to fit a perfect output to: their perfect prediction is the truth.
PERFECT = {"mask_propagation": lambda t: {"segmentation": t["segmentation"].astype(np.int32)},
           "keypoint_propagation": lambda t: {"tracks": t["target_points"]}}


@pytest.fixture(scope="module")
def clips() -> Clips:
    return world_clips()


@pytest.mark.parametrize("rule", CONTRACT, ids=lambda rule: rule.__name__.removeprefix("contract_"))
@pytest.mark.parametrize("name", TASKS.names())
def test_every_registered_task_keeps_the_contract(name, rule, clips):
    task_cls = TASKS.get(name)
    assert task_cls.name == name
    rule(task_cls, clips, **({"perfect": PERFECT.get(name)} if rule is contract_perfect else {}))


def test_which_rules_apply_follows_from_the_class():
    kinds = {name: readout_kinds(TASKS.get(name)) for name in ("depth", "mask_propagation")}
    assert kinds == {"depth": ("attentive", "linear"), "mask_propagation": ("propagation",)}


def test_world_clips_hold_every_key_and_the_metadata(clips):
    assert len(clips) == 4 and clips.arrays["video"].shape == (4, 4, 32, 32, 3)
    assert {"depth", "target_points", "boxes", "segmentation", "label"} <= set(clips.arrays)
    assert clips.meta["max_objects"] == 4 and len(clips.meta["label_names"]) == 12


def test_clips_without_a_required_key_are_refused(clips):
    partial = Clips({k: v for k, v in clips.arrays.items() if k != "depth"}, clips.meta)
    with pytest.raises(ConfigError, match=r"task 'depth' reads clip keys \['depth'\] that the clips do not have "
                                          r"\(they have \['box_valid', 'boxes', 'cam_to_world', "):
        contract_metrics(TASKS.get("depth"), partial)


def test_a_world_of_no_clips_is_refused():
    with pytest.raises(ConfigError, match=r"^synthetic world: test needs at least one clip and max_objects >= 1$"):
        world_clips(num_clips=0)


def test_a_wrong_perfect_prediction_is_caught_for_a_training_free_task(clips):
    empty = lambda t: {"segmentation": np.zeros_like(t["segmentation"], np.int32)}  # noqa: E731
    with pytest.raises(AssertionError, match=r"task 'mask_propagation' breaks the perfect rule: the perfect "
                                             r"prediction scores worse than the readout=propagation prediction"):
        contract_perfect(TASKS.get("mask_propagation"), clips, perfect=empty)


def test_example_plugin_tests_pass_as_its_author_runs_them():
    """`pytest` in the plugin's directory (its pyproject puts the package on sys.path, uninstalled);
    exit status 0 means tests were collected and all passed."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=EXAMPLE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------ toy tasks

def clip_mean_depth(depth):
    """Mean depth of each clip [N, T, H, W] -> [N] (numpy or torch)."""
    return depth.reshape(len(depth), -1).mean(1)


@register_task_config
class MeanDepth(Task):
    """A toy task that keeps the contract: each clip's mean depth, as a residual on the mean over the
    train split (so the zero output is the blind answer), with a ridge closed form and a JSON plot."""

    name = "toy_mean_depth"
    requires = ("video", "depth")
    metric_directions = {"abs_err": False, "within": True}
    clip_level = True
    closed_form = "ridge"
    zero_init_head = True

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", tolerance: float = 0.1, **cfg: Any):
        super().__init__(spec, readout, **cfg)
        self.tolerance, self.offset = tolerance, 0.0

    def prepare(self, train: dict[str, np.ndarray]) -> None:
        self.offset = float(clip_mean_depth(train["depth"]).mean())

    def queries(self, dim: int) -> nn.Module:
        return LearnedQueries(1, dim)

    @property
    def output_dim(self) -> int:
        return 1

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(out[:, 0, 0] + self.offset, clip_mean_depth(batch["depth"]))

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mean_depth": out[:, 0, 0] + self.offset}

    def closed_form_targets(self, targets: dict[str, np.ndarray]) -> np.ndarray:
        return (clip_mean_depth(targets["depth"]) - self.offset)[:, None]

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        truth = clip_mean_depth(target["depth"])
        err = np.abs(pred["mean_depth"] - truth)
        return {"abs_err": float(err.mean()), "within": float(np.mean(err < self.tolerance * truth))}

    def visualize(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], out_dir: Path) -> list[str]:
        path = Path(out_dir) / "mean_depth.json"
        path.write_text(json.dumps({"pred": pred["mean_depth"].tolist()}))
        return [str(path)]


class Unconfigured(MeanDepth):
    name = "toy_unconfigured"  # no @register_task_config: `task=toy_unconfigured` would not compose


class Unbatched(MeanDepth):
    def decode(self, out, batch):
        return {"mean_depth": (out[:, 0, 0] + self.offset).mean(0, keepdim=True)}  # one value for the batch


class Detached(MeanDepth):
    def loss(self, out, batch):
        return super().loss(out.detach(), batch)


class Undirected(MeanDepth):
    metric_directions = {"abs_err": False}


class Peeking(MeanDepth):
    def decode(self, out, batch):
        return {"mean_depth": out[:, 0, 0] + self.offset + 0.01 * batch["features"].flatten(1).sum(1)}


class ColumnBlind(MeanDepth):
    def blind(self, split):
        return {"mean_depth": np.full((len(split["depth"]), 1), self.offset, np.float32)}


class Flipped(MeanDepth):
    metric_directions = {"abs_err": False, "within": False}


class Unread(MeanDepth):
    def metrics(self, pred, target):
        return super().metrics({"mean_depth": np.full(len(target["depth"]), self.offset)}, target)


class RawTargets(MeanDepth):
    def closed_form_targets(self, targets):
        return clip_mean_depth(targets["depth"])[:, None]  # forgets that decode adds the offset


class Unweighted(MeanDepth):
    def per_clip(self, pred, target):
        values, _ = super().per_clip(pred, target)
        return values, np.arange(1.0, len(values) + 1)


class Unwritten(MeanDepth):
    def visualize(self, pred, target, out_dir):
        return super().visualize(pred, target, out_dir) + [str(Path(out_dir) / "missing.png")]


class Unlisted(MeanDepth):
    def visualize(self, pred, target, out_dir):
        (Path(out_dir) / "extra.png").write_bytes(b"png")
        return super().visualize(pred, target, out_dir)


def test_the_toy_task_keeps_the_whole_contract(clips):
    check_task(MeanDepth, clips)


BROKEN = [
    (contract_config, Unconfigured, r"the config rule: no hydra config node 'task/toy_unconfigured'; register the "
                                    r"class with @TASKS.register\(\) \(or call bench.task.register_task_config\)$"),
    (contract_shapes, Unbatched, r"the shapes rule: decode\(\) under readout=attentive must return a dict of tensors "
                                 r"with the batch axis \(4 clips\) first; got \{'mean_depth': \(1,\)\}$"),
    (contract_shapes, Detached, r"the shapes rule: loss\(\) under readout=attentive does not depend on the readout "
                                r"output$"),
    (contract_metrics, Undirected, r"the metrics rule: metrics\(\) returns \['abs_err', 'within'\] but directions\(\) "
                                   r"orders \['abs_err'\]$"),
    (contract_zero_output, Peeking, r"the zero_output rule: under readout=attentive the zero output decodes to "
                                    r"predictions that change with the features; decode\(\) must not read "
                                    r"batch\['features'\]$"),
    (contract_blind, ColumnBlind, r"the blind rule: blind\(\) gives \{'mean_depth': \(\(4, 1\), 'f'\)\} but decode "
                                  r"gives \{'mean_depth': \(\(4,\), 'f'\)\}"),
    (contract_perfect, Flipped, r"the perfect rule: the readout=attentive output fitted to loss\(\) scores worse than "
                                r"the untrained readout=attentive prediction on 'within': 1 vs 0\.\d+, and "
                                r"directions\(\) says lower is better; either that direction is wrong or loss\(\) does "
                                r"not lead to what metrics\(\) rewards$"),
    (contract_perfect, Unread, r"the perfect rule: the readout=attentive output fitted to loss\(\) scores no better on "
                               r"'abs_err' \([\d.]+\) than the untrained readout=attentive, zero output, random "
                               r"output, blind predictions: does metrics\(\) read the prediction\?$"),
    (contract_closed_form, RawTargets, r"the closed_form rule: the decoded closed_form_targets\(\) scores worse than "
                                       r"the untrained readout=linear prediction on 'abs_err': [\d.]+ vs [\d.]+, and "
                                       r"directions\(\) says lower is better; either that direction is wrong or "
                                       r"closed_form_targets\(\) are not in the readout output's units$"),
    (contract_per_clip, Unweighted, r"the per_clip rule: on the untrained readout=attentive prediction per_clip\(\) "
                                    r"gives abs_err=[\d.]+ but metrics\(\) gives [\d.]+; per_clip must reproduce the "
                                    r"primary metric as a weighted mean$"),
    (contract_visualize, Unwritten, r"the visualize rule: visualize\(\) returned \['/.+/missing.png'\] but wrote no "
                                    r"such file in /"),
    (contract_visualize, Unlisted, r"the visualize rule: visualize\(\) wrote \['extra.png'\] without returning them$"),
]


@pytest.mark.parametrize("rule, toy, message", BROKEN, ids=lambda x: getattr(x, "__name__", None))
def test_each_rule_catches_its_broken_toy(rule, toy, message, clips):
    with pytest.raises(AssertionError, match=rf"^task '{toy.name}' breaks {message}"):
        rule(toy, clips)
