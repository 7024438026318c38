"""Top-k accuracy against hand-computed cases (ties included); label names; logistic fast path."""
import json

import numpy as np
import pytest
import torch

from bench.fit import fit, fit_closed_form, predict
from bench.readouts import build_readout
from bench.task import FeatureSpec
from tasks.action import Action, action_metrics, confusion_matrix, topk_accuracy

NAMES = ["left", "right", "toward", "away", "pan", "still", "up", "down"]


def test_topk_hand_computed():
    scores = np.array([[0.1, 0.5, 0.2, 0.0, 0.0, 0.0],    # true 1: rank 1
                       [0.9, 0.1, 0.8, 0.7, 0.3, 0.2],    # true 2: rank 2
                       [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])   # true 5: rank 6
    labels = np.array([1, 2, 5])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert action_metrics(scores, labels) == {"top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3)}


def test_ties_count_against_the_prediction():
    # true class tied with one other at the top: not top-1, but top-2
    scores = np.array([[0.5, 0.5, 0.1]])
    assert topk_accuracy(scores, [0], 1) == 0.0 and topk_accuracy(scores, [1], 1) == 0.0
    assert topk_accuracy(scores, [0], 2) == 1.0
    # constant scores: never top-1 with 3 classes; with k capped at 3 classes, top-5 is always right
    flat = np.zeros((4, 3))
    assert action_metrics(flat, [0, 1, 2, 0]) == {"top1": 0.0, "top5": 1.0}
    # a single class is always right
    assert topk_accuracy(np.zeros((2, 1)), [0, 0], 1) == 1.0
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((0, 3)), np.zeros(0), 1)


def test_label_names_from_metadata():
    spec = FeatureSpec(grid=(2, 4, 4), dim=16, clip=(4, 32, 32))
    task = Action(spec, meta={"label_names": NAMES})
    assert task.num_classes == task.output_dim == 8 and task.label_names == NAMES
    assert Action(spec, num_classes=3).label_names == ["0", "1", "2"]
    with pytest.raises(ValueError, match="label_names"):
        Action(spec)
    with pytest.raises(ValueError, match="num_classes=3"):
        Action(spec, num_classes=3, meta={"label_names": NAMES})


def test_confusion_matrix():
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


SPEC = FeatureSpec(grid=(2, 4, 4), dim=16, clip=(4, 32, 32))


def synthetic(n, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    feats = rng.normal(0, 1, (n, 2, 16, 16)).astype(np.float32)
    feats[np.arange(n), :, :, labels] += 1.5  # class c shows up in channel c
    return feats, {"label": labels.astype(np.int64)}


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_readout_shapes(kind):
    task = Action(SPEC, readout=kind, meta={"label_names": NAMES})
    ro = build_readout(kind, task, 16, num_heads=4)
    feats, targets = synthetic(3)
    batch = {"features": torch.from_numpy(feats), "label": torch.from_numpy(targets["label"])}
    out = ro(batch["features"], batch)
    assert out.shape == (3, 1, 8)
    assert torch.isfinite(task.loss(out, batch))
    pred = task.decode(out, batch)
    assert pred["logits"].shape == (3, 8) and pred["label"].shape == (3,)


@pytest.mark.parametrize("classes", [4, 2])
def test_closed_form_logistic_matches_sgd_behaviour(classes):
    # 8 named classes, only `classes` of them in the data: absent ones must never be predicted
    task = Action(SPEC, readout="linear", meta={"label_names": NAMES})
    feats, targets = synthetic(64, classes)
    test_feats, test_targets = synthetic(32, classes, seed=1)
    out = {}
    for solver in ("closed_form", "sgd"):
        torch.manual_seed(0)
        ro = build_readout("linear", task, 16)
        if solver == "closed_form":
            fit_closed_form(ro, task, feats, targets)
        else:
            fit(ro, task, feats, targets, epochs=30, batch_size=16, lr=3e-3, weight_decay=0.0, seed=0)
        pred = predict(ro, task, test_feats, test_targets, batch_size=8)
        assert pred["logits"].shape == (32, 8)
        out[solver] = (task.metrics(pred, test_targets), pred["label"])
    assert out["closed_form"][0]["top1"] >= 0.9 and out["sgd"][0]["top1"] >= 0.9
    assert set(out["closed_form"][1]) <= set(range(classes))


def test_closed_form_with_one_class_predicts_it():
    task = Action(SPEC, readout="linear", meta={"label_names": NAMES})
    feats, _ = synthetic(6)
    ro = build_readout("linear", task, 16)
    fit_closed_form(ro, task, feats, {"label": np.full(6, 3)})
    assert set(predict(ro, task, feats, {"label": np.full(6, 3)}, 4)["label"]) == {3}


def test_visualize_names_the_classes(tmp_path):
    task = Action(SPEC, meta={"label_names": NAMES})
    labels = np.array([0, 1, 2, 2])
    logits = np.eye(8)[[0, 1, 1, 2]]
    paths = task.visualize({"logits": logits, "label": logits.argmax(1)}, {"label": labels}, tmp_path)
    assert len(paths) == 2 and all((tmp_path / p).exists() for p in paths)
    table = json.loads((tmp_path / "action_per_class.json").read_text())
    assert table["per_class_accuracy"]["toward"] == 0.5 and table["per_class_accuracy"]["away"] is None
    assert table["label_names"] == NAMES
