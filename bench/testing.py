"""The task contract: rules every ``Task`` keeps, as plain functions a plugin's own tests import.

    from bench.testing import check_task, world_clips
    check_task(ObjectCount, world_clips())

Each ``contract_<rule>(task_cls, clips, **options)`` builds the task (``options`` are its config
keys) on a few clips and random frozen features, and raises AssertionError naming the task, the
rule it breaks and what to look at; ``check_task`` runs them all. Which rules apply follows from
the class, never its name: a task whose readout has parameters is checked under both trained
readouts, with its loss and a perfect prediction fitted to that loss; a training-free one
(``readout=propagation``) under its own readout; ``zero_init_head`` tasks and tasks with their own
``blind`` for their blind answer; ``closed_form`` tasks for their closed-form targets. frozen4d
runs the contract over every registered task, installed plugins included (tests/test_contract.py).
"""
from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore

from bench.errors import ConfigError
from bench.fit import fit_closed_form, predict
from bench.models.pixels import PixelEncoder
from bench.readouts import build_readout
from bench.task import FeatureSpec, Task, task_options

Prediction = dict[str, np.ndarray]
TRAINED = ("attentive", "linear")  # readouts with parameters; a task that trains is checked with both
DIM, HEADS = 16, 2  # width of the random features and heads of the attentive readout
FIT_STEPS, FIT_LR = 150, 0.1  # Adam on a free readout output, cosine-decayed: the loss-fitted prediction
LOGIT = 20.0  # the class logit of a perfect classification output
TOLERANCE = 1e-3  # relative slack when comparing metrics of two predictions


@dataclass(frozen=True)
class Clips:
    """A few clips: stacked arrays per key ([N, ...], ``video`` [N, T, H, W, 3] uint8 included) and
    the dataset's metadata (``meta``, e.g. ``label_names``), as the runner gives them to a task."""

    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrays["video"])


def world_clips(num_clips: int = 4, num_frames: int = 4, resolution: int = 32, **world: Any) -> Clips:
    """``num_clips`` clips of the synthetic world (every ground-truth key; ``world`` sets other
    ``WorldConfig`` fields), rendered into a temporary directory that is removed again."""
    from bench.data.world import ARRAY_KEYS, SyntheticWorld

    with tempfile.TemporaryDirectory() as root:  # one render process; the train split goes unused
        data = SyntheticWorld(split="test", root=root, **{"workers": 1, "train_size": 1, **world},
                              test_size=num_clips, num_frames=num_frames, resolution=resolution)
        return Clips({k: np.array(v) for k, v in data.arrays(ARRAY_KEYS).items()}, data.meta)


# ------------------------------------------------------------------------------------------ the rules

def contract_config(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """The typed hydra node ``task/<name>`` exists, holds the task's name and exactly the options of
    its ``__init__``, and its values build the task (what ``task=<name>`` does)."""
    rule, store = "config", ConfigStore.instance()
    _require(f"{task_cls.name}.yaml" in store.list("task"), task_cls, rule,
             f"no hydra config node 'task/{task_cls.name}'; register the class with @TASKS.register() (or call bench.task.register_task_config)")
    node = store.load(f"task/{task_cls.name}.yaml").node
    keys, expected = set(node) - {"name"}, set(task_options(task_cls))
    _require(node.get("name") == task_cls.name and keys == expected, task_cls, rule,
             f"node task/{task_cls.name} has name={node.get('name')!r} and keys {sorted(keys)}; "
             f"expected name={task_cls.name!r} and the __init__ options {sorted(expected)}")
    _task(task_cls, clips, default_readout(task_cls), {**{k: node[k] for k in keys}, **options})


def contract_shapes(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """Under each readout it is checked with: query positions and appearance fit the queries, the
    readout output is [N, Q, output_dim], the loss is a finite scalar that reaches the readout's
    parameters, and ``decode`` gives batched tensors laid out the same way whatever the readout."""
    rule, layouts = "shapes", {}
    for kind in readout_kinds(task_cls):
        task, targets = _prepared(task_cls, clips, kind, options)
        batch = _batch(task, clips, targets)
        readout = _readout(task)
        if kind == "attentive" and task.has_query_positions:
            _check_positions(task, batch)
        if kind == "attentive" and task.has_query_appearance:
            _check_appearance(task, batch)
        out = readout(batch["features"], batch)
        if trains(readout):
            _require(out.ndim == 3 and out.shape[0] == len(clips) and out.shape[2] == task.output_dim, task, rule,
                     f"readout={kind} gives an output of shape {tuple(out.shape)}, expected "
                     f"[{len(clips)}, Q, output_dim={task.output_dim}]")
            _check_loss(task, readout, out, batch)
        pred = _decoded(task, out.detach(), batch, f"readout={kind}")
        layouts[kind] = {k: v.shape[1:] for k, v in pred.items()}
    first, *rest = layouts
    for kind in rest:
        _require(layouts[kind] == layouts[first], task_cls, rule,
                 f"decode gives {layouts[first]} per clip under readout={first} but {layouts[kind]} under "
                 f"readout={kind}; a prediction must not depend on the readout")


def contract_metrics(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """``metrics`` returns finite floats for exactly the metrics ``directions`` orders, the primary
    metric among them with the direction ``higher_is_better`` says."""
    task, targets = _prepared(task_cls, clips, default_readout(task_cls), options)
    metrics, directions = task.metrics(_readout_prediction(task, clips, targets), targets), task.directions()
    rule = "metrics"
    _require(set(metrics) == set(directions), task, rule,
             f"metrics() returns {sorted(metrics)} but directions() orders {sorted(directions)}")
    bad = {k: v for k, v in metrics.items() if not isinstance(v, (float, np.floating)) or not np.isfinite(v)}
    _require(not bad, task, rule, f"metrics() must be finite floats, got {bad}")
    _require(task.primary_metric in metrics, task, rule,
             f"primary_metric {task.primary_metric!r} is not among the metrics {sorted(metrics)}")
    _require(directions[task.primary_metric] == task.higher_is_better, task, rule,
             f"directions() says {task.primary_metric!r} higher_is_better={directions[task.primary_metric]} "
             f"but the class says higher_is_better={task.higher_is_better}")


def contract_zero_output(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """``zero_init_head`` tasks: the untrained readout (output zero) predicts the same whatever the
    features — the input-blind answer training starts from — and that is ``blind()`` unless the
    task overrides it."""
    if not task_cls.zero_init_head:
        return
    for kind in readout_kinds(task_cls):
        task, targets = _prepared(task_cls, clips, kind, options)
        readout = _readout(task)
        first, second = (predict(readout, task, _features(task, clips, seed), targets, len(clips)) for seed in (1, 2))
        _require(_same(first, second), task, "zero_output",
                 f"under readout={kind} the zero output decodes to predictions that change with the features; "
                 f"decode() must not read batch['features']")
        if task_cls.blind is Task.blind:
            _require(_same(first, task.blind(targets)), task, "zero_output",
                     f"under readout={kind} the decoded zero output differs from blind()")


def contract_blind(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """Tasks with an input-blind answer (``zero_init_head`` or their own ``blind``): its predictions
    have the keys, per-split shapes and kinds of dtype (bool, integer, float) that ``decode`` gives."""
    if not has_blind(task_cls):
        return
    task, targets = _prepared(task_cls, clips, default_readout(task_cls), options)
    want, got = _layout(_readout_prediction(task, clips, targets)), _layout(task.blind(targets))
    _require(got == want, task, "blind", f"blind() gives {got} but decode gives {want} (key: (shape, dtype kind))")


def contract_perfect(task_cls: type[Task], clips: Clips, perfect: Callable[[Prediction], Prediction] | None = None,
                     **options: Any) -> None:
    """A perfect prediction scores at least as well as the zero, random, untrained-readout and blind
    predictions on every metric, in the direction ``directions()`` gives, and better than one of them
    on the primary metric. It is ``perfect(targets)`` when given, else (tasks that train) the
    readout output fitted to ``loss`` — so this also checks that the loss leads where the metrics
    point. Training-free tasks without ``perfect`` have nothing to fit: the rule does not apply."""
    kinds = readout_kinds(task_cls)
    if perfect is None and kinds[0] not in TRAINED:
        return
    for kind in kinds if perfect is None else kinds[:1]:
        task, targets = _prepared(task_cls, clips, kind, options)
        if perfect is None:
            best, what = _fitted(task, clips, targets), (f"the readout={kind} output fitted to loss()",
                                                         "loss() does not lead to what metrics() rewards")
        else:
            best, what = perfect(targets), ("the perfect prediction", "perfect() is not a perfect prediction")
        _check_best(task, targets, "perfect", what, best, _references(task, clips, targets))


def contract_closed_form(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """``closed_form`` tasks: ``closed_form_targets`` are in the readout output's units — [N,
    output_dim] floats (ridge) or [N] class indices (logistic) whose decoded output is perfect, as
    good as the output fitted to the loss — and the closed-form fit of the linear readout runs."""
    if task_cls.closed_form is None:
        return
    rule = "closed_form"
    _require(task_cls.closed_form in ("ridge", "logistic"), task_cls, rule,
             f"closed_form={task_cls.closed_form!r}: expected 'ridge', 'logistic' or None")
    task, targets = _prepared(task_cls, clips, "linear", options)
    y, n, dim = np.asarray(task.closed_form_targets(targets)), len(clips), task.output_dim
    if task.closed_form == "ridge":
        _require(y.shape == (n, dim), task, rule, f"closed_form_targets() has shape {y.shape}, expected ({n}, {dim})")
        out = torch.as_tensor(y, dtype=torch.float32)[:, None]
    else:
        _require(y.shape == (n,) and np.array_equal(y, np.clip(np.round(y), 0, dim - 1)), task, rule,
                 f"closed_form_targets() must be {n} class indices in [0, {dim}), got {y!r}")
        out = F.one_hot(torch.as_tensor(y).long(), dim)[:, None].float() * LOGIT
    batch = _batch(task, clips, targets)
    decoded = _decoded(task, out, batch, "closed_form_targets()")
    what = ("the decoded closed_form_targets()", "closed_form_targets() are not in the readout output's units")
    _check_best(task, targets, rule, what, decoded,
                {**_references(task, clips, targets), "loss-fitted": _fitted(task, clips, targets)})
    readout = _readout(task)
    features = _features(task, clips, seed=1)
    fit_closed_form(readout, task, features, targets)
    _require(_layout(predict(readout, task, features, targets, n)) == _layout(decoded), task, rule,
             "the closed-form linear readout predicts a layout decode() does not give")


def contract_per_clip(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """``per_clip`` gives N finite values and N non-negative weights whose weighted mean is the primary
    metric (the identity the runner checks), for every reference prediction."""
    rule = "per_clip"
    task, targets = _prepared(task_cls, clips, default_readout(task_cls), options)
    for name, pred in _references(task, clips, targets).items():
        values, weights = (np.asarray(a, np.float64) for a in task.per_clip(pred, targets))
        shapes = (values.shape, weights.shape)
        _require(shapes == ((len(clips),),) * 2, task, rule,
                 f"per_clip() gives values and weights of shapes {shapes}, expected ({len(clips)},) each")
        _require(np.isfinite(values).all() and (weights >= 0).all() and weights.sum() > 0, task, rule,
                 f"per_clip() on the {name} prediction needs finite values and weights >= 0 that do not "
                 f"all vanish, got {values.tolist()} and {weights.tolist()}")
        pooled = float(np.sum(values * weights) / weights.sum())
        primary = task.metrics(pred, targets)[task.primary_metric]
        _require(bool(np.isclose(pooled, primary, rtol=1e-6, atol=1e-9)), task, rule,
                 f"on the {name} prediction per_clip() gives {task.primary_metric}={pooled} but metrics() gives "
                 f"{primary}; per_clip must reproduce the primary metric as a weighted mean")


def contract_visualize(task_cls: type[Task], clips: Clips, **options: Any) -> None:
    """``visualize`` returns the paths of the files it writes in ``out_dir``: each exists and is not
    empty, and it writes nothing else (the runner lists only what it returns)."""
    rule = "visualize"
    task, targets = _prepared(task_cls, clips, default_readout(task_cls), options)
    pred, shown = _readout_prediction(task, clips, targets), {**targets, "video": clips.arrays["video"]}
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp).resolve()
        returned = {Path(p).resolve() for p in task.visualize(pred, shown, out_dir)}
        written = {p for p in out_dir.rglob("*") if p.is_file()}
        missing = sorted(str(p) for p in returned - written)
        _require(not missing, task, rule, f"visualize() returned {missing} but wrote no such file in {out_dir}")
        unlisted = sorted(p.name for p in written - returned)
        _require(not unlisted, task, rule, f"visualize() wrote {unlisted} without returning them")
        empty = sorted(p.name for p in returned if p.stat().st_size == 0)
        _require(not empty, task, rule, f"visualize() wrote empty files {empty}")


CONTRACT: tuple[Callable[..., None], ...] = (contract_config, contract_shapes, contract_metrics, contract_zero_output,
                                             contract_blind, contract_perfect, contract_closed_form,
                                             contract_per_clip, contract_visualize)


def check_task(task_cls: type[Task], clips: Clips, perfect: Callable[[Prediction], Prediction] | None = None,
               **options: Any) -> None:
    """Every rule of the contract that applies to ``task_cls`` (``options``: its config keys;
    ``perfect``: see ``contract_perfect``); the first broken one raises AssertionError."""
    for rule in CONTRACT:
        rule(task_cls, clips, **({"perfect": perfect} if rule is contract_perfect else {}), **options)


# ------------------------------------------------------------------------------------------ what a task is

def default_readout(task_cls: type[Task]) -> str:
    """The readout a task is built for: the default of its ``readout`` argument."""
    param = inspect.signature(task_cls.__init__).parameters.get("readout")
    return "attentive" if param is None or param.default is param.empty else param.default


def readout_kinds(task_cls: type[Task]) -> tuple[str, ...]:
    """The readouts a task is checked with: both trained ones for a task that trains, else its own."""
    kind = default_readout(task_cls)
    return (kind, *[k for k in TRAINED if k != kind]) if kind in TRAINED else (kind,)


def trains(readout: torch.nn.Module) -> bool:
    """Whether a readout has parameters to train (the runner fits those; propagation has none)."""
    return any(p.requires_grad for p in readout.parameters())


def has_blind(task_cls: type[Task]) -> bool:
    """Whether a task has an input-blind answer: the decoded zero output of a zero-initialised head,
    or its own ``blind``."""
    return task_cls.zero_init_head or task_cls.blind is not Task.blind


# ------------------------------------------------------------------------------------------ helpers

def _require(ok: bool, task: Task | type[Task], rule: str, message: str) -> None:
    """An AssertionError naming the task and the rule unless ``ok``."""
    if not ok:
        raise AssertionError(f"task {task.name!r} breaks the {rule} rule: {message}")


def _task(task_cls: type[Task], clips: Clips, kind: str, options: Mapping[str, Any]) -> Task:
    """The task under readout ``kind``, on the feature grid the runner gives the blind row."""
    missing = [k for k in dict.fromkeys(("video", *task_cls.requires)) if k not in clips.arrays]
    if missing:
        raise ConfigError(f"task {task_cls.name!r} reads clip keys {missing} that the clips do not have "
                          f"(they have {sorted(clips.arrays)})")
    clip = tuple(clips.arrays["video"].shape[1:4])
    spec = FeatureSpec(grid=PixelEncoder().grid_for(*clip), dim=DIM, clip=clip)
    return task_cls(spec, readout=kind, meta=dict(clips.meta), **options)


def _prepared(task_cls: type[Task], clips: Clips, kind: str, options: Mapping[str, Any]) -> tuple[Task, Prediction]:
    """The task under readout ``kind``, prepared on the clips' targets (every required key but video)."""
    task = _task(task_cls, clips, kind, options)
    targets = {k: np.asarray(clips.arrays[k]) for k in task_cls.requires if k != "video"}
    task.prepare(targets)
    return task, targets


def _features(task: Task, clips: Clips, seed: int) -> np.ndarray:
    """Random frozen features of every clip, [N, T', h·w, DIM]."""
    t, h, w = task.spec.grid
    return np.random.default_rng(seed).standard_normal((len(clips), t, h * w, task.spec.dim), dtype=np.float32)


def _batch(task: Task, clips: Clips, targets: Prediction) -> dict[str, torch.Tensor]:
    """Every clip as one batch, as ``bench.fit.batches`` makes it."""
    return {"features": torch.from_numpy(_features(task, clips, seed=1)),
            **{k: torch.from_numpy(np.array(v)) for k, v in targets.items()}}


def _readout(task: Task) -> torch.nn.Module:
    """The task's readout (``task.readout``) on features of width ``DIM``, initialised from seed 0
    (the caller's random state is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_readout(task.readout, task, DIM, num_heads=HEADS)


def _readout_prediction(task: Task, clips: Clips, targets: Prediction) -> Prediction:
    """What the untrained readout predicts from random features, through the runner's ``predict``."""
    return predict(_readout(task), task, _features(task, clips, seed=1), targets, len(clips))


def _decoded(task: Task, out: torch.Tensor, batch: dict[str, torch.Tensor], what: str) -> Prediction:
    """``decode`` of a readout output, checked to be batched tensors, as numpy arrays."""
    with torch.no_grad():
        pred = task.decode(out, batch)
    _require(isinstance(pred, dict) and len(pred) > 0, task, "shapes",
             f"decode() under {what} must return a non-empty dict of tensors, got {type(pred).__name__}")
    n = len(out)
    bad = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in pred.items()
           if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != n}
    _require(not bad, task, "shapes",
             f"decode() under {what} must return a dict of tensors with the batch axis ({n} clips) first; got {bad}")
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in pred.items()}


def _check_positions(task: Task, batch: dict[str, torch.Tensor]) -> None:
    """``query_positions``: one normalised (t, y, x) per attentive query, for the batch or all of it."""
    queries = task.queries(DIM)(batch).shape[1]
    pos = task.query_positions(batch)
    _require(pos.ndim == 3 and pos.shape[0] in (1, len(batch["features"])) and tuple(pos.shape[1:]) == (queries, 3)
             and bool(((pos >= 0) & (pos <= 1)).all()), task, "shapes",
             f"query_positions() gives shape {tuple(pos.shape)} (range [{pos.min():.3g}, {pos.max():.3g}]); expected "
             f"[N or 1, {queries} queries, 3] normalised (t, y, x) in [0, 1]")


def _check_appearance(task: Task, batch: dict[str, torch.Tensor]) -> None:
    """``query_appearance``: one feature vector, as wide as the features, per attentive query."""
    queries, feats = task.queries(DIM)(batch).shape[1], batch["features"]
    look = task.query_appearance(feats, batch)
    _require(tuple(look.shape) == (len(feats), queries, feats.shape[-1]), task, "shapes",
             f"query_appearance() gives shape {tuple(look.shape)}; expected [N, {queries} queries, {feats.shape[-1]}]")


def _check_loss(task: Task, readout: torch.nn.Module, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
    """The loss is a finite scalar whose gradient reaches the readout's parameters."""
    kind, loss = task.readout, task.loss(out, batch)
    _require(isinstance(loss, torch.Tensor) and loss.ndim == 0 and bool(torch.isfinite(loss)), task, "shapes",
             f"loss() under readout={kind} must be a finite scalar tensor, got {loss!r}")
    _require(loss.requires_grad, task, "shapes", f"loss() under readout={kind} does not depend on the readout output")
    loss.backward()
    _require(any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in readout.parameters()), task, "shapes",
             f"loss() under readout={kind} gives no gradient to the readout's parameters")


def _fitted(task: Task, clips: Clips, targets: Prediction) -> Prediction:
    """The decoded readout output that minimises ``loss`` on the clips (Adam on a free output)."""
    batch = _batch(task, clips, targets)
    with torch.no_grad():
        shape = _readout(task)(batch["features"], batch).shape
    out = torch.zeros(shape, requires_grad=True)
    opt = torch.optim.Adam([out], lr=FIT_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, FIT_STEPS)
    for _ in range(FIT_STEPS):
        opt.zero_grad()
        task.loss(out, batch).backward()
        opt.step()
        schedule.step()
    return _decoded(task, out.detach(), batch, "a loss-fitted output")


def _references(task: Task, clips: Clips, targets: Prediction) -> dict[str, Prediction]:
    """Imperfect predictions to compare with: the readout's from random features (untrained), the
    decoded zero and random outputs (readouts that train), and the blind answer (tasks that have one)."""
    batch, readout = _batch(task, clips, targets), _readout(task)
    untrained = "untrained " if trains(readout) else ""
    refs = {f"{untrained}readout={task.readout}": _readout_prediction(task, clips, targets)}
    if untrained:
        with torch.no_grad():
            shape = readout(batch["features"], batch).shape
        refs["zero output"] = _decoded(task, torch.zeros(shape), batch, "the zero output")
        refs["random output"] = _decoded(task, torch.randn(shape, generator=torch.Generator().manual_seed(0)),
                                         batch, "a random output")
    if has_blind(type(task)):
        refs["blind"] = task.blind(targets)
    return refs


def _check_best(task: Task, targets: Prediction, rule: str, what: tuple[str, str], best: Prediction,
                refs: Mapping[str, Prediction]) -> None:
    """``best`` scores at least as well as every reference on every metric, in the direction
    ``directions()`` gives, and better than one of them on the primary metric. ``what`` names
    ``best`` and the suspect when it does not."""
    what, suspect = what
    directions, scores = task.directions(), task.metrics(best, targets)
    ref_scores = {name: task.metrics(pred, targets) for name, pred in refs.items()}
    for name, ref in ref_scores.items():
        for metric, higher in directions.items():
            _require(not _worse(scores[metric], ref[metric], higher), task, rule,
                     f"{what} scores worse than the {name} prediction on {metric!r}: {scores[metric]:.6g} vs "
                     f"{ref[metric]:.6g}, and directions() says {'higher' if higher else 'lower'} is better; either "
                     f"that direction is wrong or {suspect}")
    primary, higher = task.primary_metric, directions[task.primary_metric]
    _require(any(_worse(ref[primary], scores[primary], higher) for ref in ref_scores.values()), task, rule,
             f"{what} scores no better on {primary!r} ({scores[primary]:.6g}) than the {', '.join(refs)} "
             f"predictions: does metrics() read the prediction?")


def _worse(a: float, b: float, higher: bool) -> bool:
    """``a`` is worse than ``b`` by more than the tolerance, in the metric's direction."""
    return (b - a if higher else a - b) > TOLERANCE * max(1.0, abs(a), abs(b))


def _layout(pred: Prediction) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each prediction's shape and dtype kind: b(ool), i(nteger; unsigned counts as signed), f(loat)."""
    return {k: (np.shape(v), {"u": "i"}.get(np.asarray(v).dtype.kind, np.asarray(v).dtype.kind))
            for k, v in sorted(pred.items())}


def _same(a: Prediction, b: Prediction) -> bool:
    """Same keys, layouts and values (NaN equal to NaN)."""
    return _layout(a) == _layout(b) and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6, equal_nan=True) for k in a)
