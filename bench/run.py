"""One evaluation: ``python -m bench.run task=depth model=random_t readout=attentive``.

Resolves model + task + data + readout, extracts frozen features once (cached), trains the
readout on the train split, evaluates the test split, prints the metrics and writes one
result record atomically under ``paths.results``.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from bench.config import check_config, register_schemas
from bench.errors import ConfigError, UserError
from bench.features import cached_layers, check_finite, feature_layers
from bench.fit import fit_flags, flush_denormals, loss_tail, predict
from bench.grid import SOLVER_KEYS, Head, choose, fit_readouts, grid_heads, held_out, seeded_readouts
from bench.models.pixels import PixelEncoder
from bench.models import build_encoder
from bench.models.family import store_configs
from bench.readouts import build_readout, readout_options, readout_recipe
from bench.registry import DATASETS, READOUTS, TASKS, resolve_model
from bench.results import ResultRecord, environment, write_record
from bench.task import FeatureSpec, Task


def load_datasets(cfg: DictConfig, task_cls: type[Task]) -> tuple[Any, Any]:
    """Train and test datasets, after checking they provide every key the task needs."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    dataset_cls = DATASETS.get(data.pop("name"))
    missing = [k for k in task_cls.requires if k not in dataset_cls.provides]
    if missing:
        raise ConfigError(f"task {task_cls.name!r} needs clip keys {missing} that dataset "
                          f"{cfg.data.name!r} does not provide (it provides {list(dataset_cls.provides)})")
    return tuple(dataset_cls(split=cfg.splits[s], root=cfg.paths.cache, **data) for s in ("train", "test"))


def features_for(cfg: DictConfig, train: Any, test: Any) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]],
                                                                  FeatureSpec, str, int]:
    """Frozen features of both splits at every layer the grid reads (cached; ``select.layers``),
    their spec, the encoder's sha256 and its depth in blocks (0: parameter-free)."""
    clip = train.arrays(["video"])["video"].shape[1:4]
    model, meta = build_encoder(cfg.model.name, cfg.paths.checkpoints, seed=cfg.model_seed,
                                weights=cfg.model.get("weights"), img_size=clip[1], num_frames=clip[0],
                                token_px=cfg.features.get("token_px"))
    sha, layers = meta["sha256"], feature_layers(model, cfg.select.get("layers"))
    feats = [cached_layers(model, sha, ds, cfg.paths.cache, layers, batch_size=cfg.features.batch_size,
                           device=cfg.device) for ds in (train, test)]
    for f, ds in zip(feats, (train, test)):
        for layer, array in zip(layers, f):
            at = f" layer {layer}" if len(layers) > 1 else ""
            check_finite(array, f"model {cfg.model.name!r}{at} on {cfg.data.name}/{ds.split}")
    spec = FeatureSpec(grid=model.grid_for(*clip), dim=model.cfg.embed_dim, clip=tuple(clip))
    return dict(zip(layers, zip(*feats))), spec, sha, getattr(model.cfg, "depth", 0)


def blind_spec(train: Any) -> FeatureSpec:
    """The spec a task is built with for the ``blind`` row: the default tubelet grid (a blind
    answer does not depend on it; point and box tracking need a time-chunk count)."""
    clip = tuple(train.arrays(["video"])["video"].shape[1:4])
    return FeatureSpec(grid=PixelEncoder().grid_for(*clip), dim=1, clip=clip)


TRAIN_SCORED = 256  # at most this many train clips are scored for the train-split metrics


def seen_rows(train_rows: np.ndarray, test_clips: int) -> np.ndarray:
    """The first clips a readout trained on, as many as the test split has and at most
    ``TRAIN_SCORED``: the train-split metrics score these, enough to show a train–test gap at a
    fraction of a pass."""
    return train_rows[:min(len(train_rows), test_clips, TRAIN_SCORED)]


def subset(targets: dict, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The clip keys of the clips ``rows``."""
    return {k: np.asarray(v)[rows] for k, v in targets.items()}


@dataclass
class SeedRun:
    """One readout seed's outcome: predictions of the seen train clips and of the test split, the
    loss of every training step, and how its head was chosen from a grid (empty: a one-head run)."""
    seed: int
    pred_seen: dict
    pred_test: dict
    history: list[float]
    selection: dict = field(default_factory=dict)


def seeds_of(cfg: DictConfig) -> list[int]:
    """The readout seeds of a run: ``seeds`` (trained together, one record each), else ``[seed]``."""
    return [int(s) for s in cfg.seeds] if cfg.get("seeds") else [int(cfg.seed)]


def heads_of(cfg: DictConfig, layers: list[int]) -> list[Head]:
    """The grid of a run: every seed × layer × the hyperparameters its solver uses (``select.*``,
    else the readout's own value); a training-free readout varies the layer only."""
    sel, recipe = cfg.select, readout_recipe(READOUTS.get(cfg.readout.kind), cfg.readout)
    used = SOLVER_KEYS.get(solver(cfg), ())
    pick = lambda key: list(sel.get(key) or [getattr(recipe, key)]) if key in used else [getattr(recipe, key)]  # noqa: E731
    return grid_heads(seeds_of(cfg), layers, pick("lr"), pick("weight_decay"), pick("alpha"))


def solver(cfg: DictConfig) -> str | None:
    """The solver that fits the configured readout; None for a training-free one."""
    cls = READOUTS.get(cfg.readout.kind)
    return readout_recipe(cls, cfg.readout).solver if cls.trained else None


def split_rows(cfg: DictConfig, clips: int, heads_per_seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows the heads train on, held-out rows that choose among them): all rows and None for a
    one-head run, else ``select.val_fraction`` held out (``bench.grid.held_out``)."""
    if heads_per_seed == 1:
        return np.arange(clips), None
    train_rows, val_rows = held_out(clips, float(cfg.select.val_fraction))  # check_config: val_fraction > 0
    return train_rows, val_rows


def read_out(cfg: DictConfig, task_cls: type[Task], train: Any, test: Any, train_targets: dict,
             test_targets: dict) -> tuple[Task, list[SeedRun], str, dict]:
    """Train the configured grid of readout heads on frozen features (one batched fit,
    ``bench.grid``), choose each seed's head on the held-out train clips, and predict the seen
    train clips and the test split with it; returns (task, one SeedRun per seed, checkpoint
    sha256, the seen clips' targets). The ``blind`` model trains nothing: its predictions are the
    task's input-blind answer."""
    task_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
    ro, seeds, test_clips = cfg.readout, seeds_of(cfg), len(next(iter(test_targets.values())))
    if not resolve_model(cfg.model.name).has_encoder:
        seen = subset(train_targets, seen_rows(np.arange(len(train)), test_clips))
        task = task_cls(blind_spec(train), readout=ro.kind, meta=getattr(train, "meta", None), **task_kwargs)
        task.prepare(train_targets)
        return task, [SeedRun(s, task.blind(seen), task.blind(test_targets), []) for s in seeds], "none", seen
    feats, spec, sha, depth = features_for(cfg, train, test)
    heads = heads_of(cfg, list(feats))
    train_rows, val_rows = split_rows(cfg, len(train), len(heads) // len(seeds))
    task = task_cls(spec, readout=ro.kind, meta=getattr(train, "meta", None), **task_kwargs)
    task.prepare(train_targets if val_rows is None else subset(train_targets, train_rows))
    cls = READOUTS.get(ro.kind)
    options = {k: ro[k] for k in readout_options(cls)}  # e.g. num_heads, dim; propagation's topk
    readouts = seeded_readouts([h.seed for h in heads], lambda: build_readout(ro.kind, task, spec.dim, **options))
    histories = fit_readouts(readouts, heads, task, {layer: f[0] for layer, f in feats.items()}, train_targets,
                             readout_recipe(cls, ro), rows=None if val_rows is None else train_rows, device=cfg.device)
    seen_at = seen_rows(train_rows, test_clips)
    scored = partial(score_heads, cfg, task, feats, train_targets, test_targets, val_rows)
    runs = []
    for seed in seeds:
        ks = [k for k, h in enumerate(heads) if h.seed == seed]
        chosen, selection, pred_test = scored([readouts[k] for k in ks], [heads[k] for k in ks], depth)
        k, layer = ks[chosen], heads[ks[chosen]].layer
        if pred_test is None:
            pred_test = predict(readouts[k], task, feats[layer][1], test_targets, ro.batch_size, cfg.device)
        runs.append(SeedRun(seed, predict(readouts[k], task, feats[layer][0], train_targets, ro.batch_size, cfg.device,
                                          rows=seen_at), pred_test, histories[k], selection))
    return task, runs, sha, subset(train_targets, seen_at)


def score_heads(cfg: DictConfig, task: Task, feats: dict, train_targets: dict, test_targets: dict,
                val_rows: np.ndarray | None, readouts: list, heads: list[Head],
                depth: int) -> tuple[int, dict, dict | None]:
    """(index of the head chosen on the held-out rows, the record's ``selection`` block, the chosen
    head's test predictions); (0, {}, None) for one head. The held-out score of every head decides;
    its test score is recorded beside it for the layer curves, and the head best on the test split
    only for comparison."""
    if val_rows is None:
        return 0, {}, None
    ro, metric, higher = cfg.readout, task.primary_metric, task.higher_is_better
    val_targets = subset(train_targets, val_rows)
    val = [task.metrics(predict(r, task, feats[h.layer][0], train_targets, ro.batch_size, cfg.device, rows=val_rows),
                        val_targets)[metric] for r, h in zip(readouts, heads)]
    chosen, test, kept = choose(val, higher), [], None
    for i, (r, h) in enumerate(zip(readouts, heads)):  # one head's test predictions in memory at a time
        pred = predict(r, task, feats[h.layer][1], test_targets, ro.batch_size, cfg.device)
        test.append(task.metrics(pred, test_targets)[metric])
        kept = pred if i == chosen else kept
    rows = [{**h.settings(solver(cfg)), "depth": h.layer / depth if depth else 0.0, "val": float(v), "test": float(t)}
            for h, v, t in zip(heads, val, test)]
    return chosen, {"metric": metric, "higher_is_better": higher, "val_fraction": float(cfg.select.val_fraction),
                    "val_clips": len(val_rows), "heads": rows, "chosen": chosen,
                    "best_on_test": choose(test, higher)}, kept


def per_clip_record(task: Task, pred: dict, target: dict, primary: float) -> dict[str, list[float]]:
    """The record's ``per_clip`` block, checked against the split's primary metric."""
    values, weights = task.per_clip(pred, target)
    pooled = float(np.sum(values * weights) / np.sum(weights))
    if not np.isclose(pooled, primary, rtol=1e-6, atol=1e-9, equal_nan=True):  # NaN: write_record refuses it
        raise RuntimeError(f"task {task.name!r}: per_clip gives {task.primary_metric}={pooled} but metrics gives "
                           f"{primary}; per_clip must reproduce the primary metric as a weighted mean")
    return {"values": [float(v) for v in values], "weights": [float(w) for w in weights]}


def evaluate(cfg: DictConfig, results: str | Path | None = None) -> list[ResultRecord]:
    """The whole evaluation; returns the records it wrote, one per readout seed, under ``results``
    (default ``paths.results``: a study stages its records elsewhere before publishing them)."""
    start = time.time()
    check_config(cfg)
    flush_denormals()
    task_cls = TASKS.get(cfg.task.name)
    train, test = load_datasets(cfg, task_cls)
    keys = [k for k in task_cls.requires if k != "video"]
    train_targets, test_targets = train.arrays(keys), test.arrays(keys)
    task, runs, sha, seen = read_out(cfg, task_cls, train, test, train_targets, test_targets)
    wall = round((time.time() - start) / len(runs), 2)  # seeds trained together share the time evenly
    records = [record_of(cfg, task, run, sha, seen, {k: np.asarray(v) for k, v in test_targets.items()}, wall)
               for run in runs]
    for record in records:
        report(record, write_record(record, results or cfg.paths.results))
    if cfg.visualize:
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        for f in task.visualize(runs[0].pred_test, {**test_targets, **test.arrays(["video"])}, out_dir):
            print(f"  visualisation: {f}")
    return records


def record_of(cfg: DictConfig, task: Task, run: SeedRun, sha: str, seen: dict, test: dict,
              wall_time_s: float) -> ResultRecord:
    """The result record of one readout seed: metrics of both splits, per-clip values, loss tail, flags."""
    metrics, train_metrics = task.metrics(run.pred_test, test), task.metrics(run.pred_seen, seen)
    primary, higher = task.primary_metric, task.higher_is_better
    tail = loss_tail(run.history)
    config = OmegaConf.to_container(cfg, resolve=True)
    return ResultRecord(
        task=task.name, dataset=cfg.data.name, split=cfg.splits.test, model=cfg.model.name,
        checkpoint_sha256=sha, readout=cfg.readout.kind, seed=run.seed, metrics=metrics,
        directions=task.directions(), primary_metric=primary, higher_is_better=higher,
        config={**config, "seed": run.seed}, wall_time_s=wall_time_s,
        per_clip=per_clip_record(task, run.pred_test, test, metrics[primary]),
        train_metrics=train_metrics, loss_tail=tail,
        flags=fit_flags(tail, train_metrics[primary], metrics[primary], higher), task_version=task.version,
        selection=run.selection, **environment())


def report(record: ResultRecord, path: Path) -> None:
    print(f"{record.task} | {record.model} | {record.readout} | seed {record.seed}")
    for name, value in record.metrics.items():
        arrow = "↑" if record.directions.get(name, record.higher_is_better) else "↓"
        star = " (primary)" if name == record.primary_metric else ""
        print(f"  {name:>16} {arrow} {value:.4f}{star}")
    gap = record.train_metrics.get(record.primary_metric)
    if gap is not None:
        print(f"  {'train split':>16}   {gap:.4f} ({record.primary_metric})")
    if record.flags:
        print(f"  flags: {', '.join(record.flags)}")
    print(f"  record: {path}")


TASKS.names()  # import built-in and plugin tasks: their ConfigStore nodes must exist before hydra composes
store_configs()
register_schemas()


@hydra.main(config_path="configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except UserError as exc:  # a bad input: one line; anything else is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def hydra_error(exc: CompactHydraException) -> str:
    """Hydra's multi-line composition error (unknown task/model/readout/data, bad override) as one line."""
    text = str(exc).split("Config search path:")[0]
    lines = [ln.strip().rstrip(".") for ln in text.splitlines() if ln.strip()]
    if isinstance(exc, MissingConfigException) and exc.options:
        lines = [lines[0], f"available: {', '.join(exc.options)}"]
    if isinstance(exc, MissingConfigException) and str(exc.missing_cfg_file).startswith("model/timm/"):
        lines.append("model=timm/<arch> covers DINOv2, DINOv3, SigLIP and vit_*_patch16_224; "
                     "any other timm ViT is model.name=timm/<arch>")
    if exc.__cause__ is not None:
        lines.append(str(exc.__cause__).strip().splitlines()[0])
    return "; ".join(lines)


def cli() -> None:
    """``main`` with hydra's config errors reported like ours: one line on stderr, exit status 2.

    HYDRA_FULL_ERROR=1 makes hydra raise instead of printing its own multi-line report; a bug
    (anything not a user error) still ends in a full traceback.
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"
    warnings.formatwarning = lambda message, category, *_: f"warning: {message}\n"  # one line, like errors
    signal.signal(signal.SIGTERM, interrupted)
    try:
        main()
    except CompactHydraException as exc:
        print(f"error: {hydra_error(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: partial outputs were removed while unwinding
        number = exc.args[0] if exc.args else signal.SIGINT
        print(f"interrupted by {signal.Signals(number).name}: no partial record or cache entry is kept; "
              f"the same command starts again (finished cache entries are reused)", file=sys.stderr)
        sys.exit(128 + number)


def interrupted(number: int, _frame: Any) -> None:
    """SIGTERM (a scheduler, a closed terminal) unwinds like Ctrl-C."""
    raise KeyboardInterrupt(number)


if __name__ == "__main__":
    cli()
