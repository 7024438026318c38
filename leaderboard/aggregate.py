"""Result records -> leaderboard numbers: seeds aggregated per group, ranks per task.

One record counts per evaluation (task and its options, dataset, model, readout, seed): of several
copies, the one in the file of its canonical name (``ResultRecord.filename``) wins, else the first
by path, and the others are skipped and named, so a stray copy never changes a number.

A group is (task, dataset, model, readout). Records of one task scored under different task options
(``config.task``, e.g. depth ``align=median`` against ``align=none``) are different tasks: they get
columns of their own, labelled by the options that differ (``depth[align=median]``), so a
leaderboard never ranks numbers measured under different protocols against each other. Each metric of a group is summarised over its seeds
as mean, sample standard deviation (ddof=1) and n; one seed gives std 0 (tables show "(n=1)").
A task column is (task, dataset): its primary metric and directions come from its records.

Uncertainty (``leaderboard.intervals``): a group whose records carry per-clip values (schema 2)
gets the 95% bootstrap interval of its primary metric, and the references of its table (task,
dataset, readout) it is significantly better than: ``blind`` and ``random_<its size>`` (a model
without a size: every ``random_*`` row), paired clip by clip on the same split. Also the
train-split primary metric over its seeds and the union of its records' flags.

References (``bench.registry.resolve_model(name).reference``: blind, pixels, random_*, supervised_*) are
shown but not ranked. Ranks: per task column and readout, the other models evaluated with that
readout are ranked by the primary metric's mean, best = 1 (direction-aware); equal means share
the average rank. A model's mean rank averages its ranks over the task columns it has results
for; the overview lists models with results on more task columns first. Means are
compared at 10 significant digits, so float noise from summation never breaks a tie.

Optional per-model extras: parameter count (from a zoo name's architecture, else a
``param_count`` / ``num_params`` / ``params`` / ``n_params`` number in the record's config or its
``model`` node) and collapse monitors (``feat_std`` / ``eff_rank`` in the record config's
``collapse`` or ``pretrain`` node, the latter as copied from a checkpoint sidecar).
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ConfigError
from bench.models.family import REFERENCE_KINDS
from bench.registry import resolve_model
from bench.results import ResultRecord, is_number, read_records
from leaderboard.heads import NO_FEATURES, Curve, CurveKey, heads_label, layer_curves
from leaderboard.intervals import Bootstrap, bootstrap, compare

PARAM_KEYS = ("param_count", "num_params", "params", "n_params")
COLLAPSE_KEYS = ("feat_std", "eff_rank")
COLLAPSE_NODES = ("collapse", "pretrain")
GroupKey = tuple[str, str, str, str]  # task, dataset, model, readout


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int


@dataclass
class Group:
    task: str
    dataset: str
    model: str
    readout: str
    seeds: tuple[int, ...]
    metrics: dict[str, Stat]
    ci: tuple[float, float] | None = None   # 95% bootstrap interval of the primary metric
    beats: tuple[str, ...] = ()             # references of its table it is significantly better than
    train_primary: Stat | None = None       # the primary metric on the train split
    flags: tuple[str, ...] = ()             # warnings of any of its records, sorted
    head: str = ""                          # the readout head its records were read with (leaderboard.heads)


@dataclass
class TaskColumn:
    """One (task, dataset): its metrics (primary first, then by name) and their directions."""

    task: str
    dataset: str
    primary: str
    metrics: list[str]
    higher: dict[str, bool]

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.dataset)


@dataclass
class OverviewRow:
    model: str
    readout: str
    primary: dict[tuple[str, str], Stat]   # task key -> primary metric stat
    ranks: dict[tuple[str, str], float]    # task key -> rank among models with this readout ({}: reference)
    mean_rank: float | None                # None: a reference row


@dataclass
class Leaderboard:
    groups: list[Group]
    tasks: list[TaskColumn]
    readouts: list[str]
    models: list[str]
    params: dict[str, int] = field(default_factory=dict)
    collapse: dict[str, dict[str, float]] = field(default_factory=dict)
    n_records: int = 0
    n_selected: int = 0  # records whose head was chosen from a probe grid on held-out clips
    curves: dict[CurveKey, dict[str, Curve]] = field(default_factory=dict)  # layer curves of probe grids
    references: dict[str, str] = field(init=False)  # reference model -> its kind (blind, random, ...)

    def __post_init__(self) -> None:
        self._index = {(g.task, g.dataset, g.model, g.readout): g for g in self.groups}
        self.references = {m: kind for m in self.models if (kind := resolve_model(m).reference) is not None}

    def group(self, task: TaskColumn, model: str, readout: str) -> Group | None:
        return self._index.get((task.task, task.dataset, model, readout))

    def task_readouts(self, task: TaskColumn) -> list[str]:
        return sorted({g.readout for g in self.groups if (g.task, g.dataset) == task.key})

    def readout_tasks(self, readout: str) -> list[TaskColumn]:
        """The task columns with results under ``readout`` (a training-free task has no attentive
        column, and the trained tasks none under ``propagation``)."""
        keys = {(g.task, g.dataset) for g in self.groups if g.readout == readout}
        return [t for t in self.tasks if t.key in keys]

    def reference_order(self, models: Iterable[str]) -> list[str]:
        """The references among ``models``: blind, pixels, random_*, supervised_*, then by name."""
        refs = [m for m in models if m in self.references]
        return sorted(refs, key=lambda m: (REFERENCE_KINDS.index(self.references[m]), m))

    def task_models(self, task: TaskColumn, readout: str) -> list[str]:
        """Models with results for ``task`` × ``readout``: ranked ones best primary mean first (ties: by
        name), then the references."""
        models = [g.model for g in self.groups if (g.task, g.dataset, g.readout) == (*task.key, readout)]
        ranks = self.task_ranks(task, readout)
        ranked = sorted((m for m in models if m not in self.references), key=lambda m: (ranks.get(m, math.inf), m))
        return ranked + self.reference_order(models)

    def task_ranks(self, task: TaskColumn, readout: str) -> dict[str, float]:
        """Ranks of the non-reference models by the primary metric's mean."""
        values = {}
        for g in self.groups:
            if ((g.task, g.dataset, g.readout) == (*task.key, readout) and task.primary in g.metrics
                    and g.model not in self.references):
                values[g.model] = g.metrics[task.primary].mean
        return average_ranks(values, task.higher[task.primary])

    def overview(self, readout: str) -> list[OverviewRow]:
        """One row per model evaluated with ``readout``: models with results on more tasks first, then
        by mean rank, then by name (a model evaluated on one task never outranks complete ones);
        then the references, unranked."""
        ranks = {t.key: self.task_ranks(t, readout) for t in self.tasks}
        rows = []
        for model in sorted({g.model for g in self.groups if g.readout == readout}):
            primary, model_ranks = {}, {}
            for t in self.readout_tasks(readout):
                g = self.group(t, model, readout)
                if g is not None and t.primary in g.metrics:
                    primary[t.key] = g.metrics[t.primary]
                    if model in ranks[t.key]:
                        model_ranks[t.key] = ranks[t.key][model]
            if not primary:
                continue
            mean_rank = math.fsum(model_ranks.values()) / len(model_ranks) if model_ranks else None
            rows.append(OverviewRow(model, readout, primary, model_ranks, mean_rank))
        models = sorted((r for r in rows if r.mean_rank is not None),
                        key=lambda r: (-len(r.ranks), rank_key(r.mean_rank), r.model))
        by_name = {r.model: r for r in rows}
        return models + [by_name[m] for m in self.reference_order(by_name)]


def rank_key(x: float) -> float:
    """The value compared for ranks and best-in-column: 10 significant digits."""
    return float(f"{x:.10g}")


def average_ranks(values: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank 1 = best; tied values share the mean of the ranks they span."""
    keyed = sorted(values, key=lambda k: (-rank_key(values[k]) if higher_is_better else rank_key(values[k]), k))
    ranks, i = {}, 0
    while i < len(keyed):
        j = i
        while j + 1 < len(keyed) and rank_key(values[keyed[j + 1]]) == rank_key(values[keyed[i]]):
            j += 1
        for k in keyed[i:j + 1]:
            ranks[k] = (i + 1 + j + 1) / 2
        i = j + 1
    return ranks


def best_of(values: list[float], higher_is_better: bool) -> float | None:
    """The best value (at rank precision) of a column, or None if empty."""
    keys = [rank_key(v) for v in values]
    return (max(keys) if higher_is_better else min(keys)) if keys else None


def summarize(values: list[float]) -> Stat:
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Stat(mean, std, n)


def identity(r: ResultRecord) -> tuple[Any, ...]:
    """What one evaluation is: task, its options (compared as ``split_task_variants`` compares them),
    dataset, model, readout, seed."""
    options = tuple(sorted((k, repr(v)) for k, v in task_options(r).items() if v is not None))
    return (r.task, options, r.dataset, r.model, r.readout, r.seed)


def deduplicate(records: list[tuple[str, ResultRecord]]) -> tuple[list[tuple[str, ResultRecord]], list[str]]:
    """One record per evaluation: the one in a file of its canonical name (``ResultRecord.filename``),
    else the first by path; and a message naming each other copy and the file it duplicates."""
    canonical_first = sorted(records, key=lambda item: (Path(item[0]).name != item[1].filename, item[0]))
    kept: dict[tuple[Any, ...], str] = {}
    errors = []
    for rel, r in canonical_first:
        first = kept.setdefault(identity(r), rel)
        if first != rel:
            errors.append(f"{rel}: duplicate of {first} (same task, dataset, model, readout and seed {r.seed})")
    winners = set(kept.values())
    return [(rel, r) for rel, r in records if rel in winners], sorted(errors)


def load(results_dir: str | Path) -> tuple[list[tuple[str, ResultRecord]], list[str]]:
    """Every usable record under ``results_dir`` (recursively, sorted by path; one per evaluation) as
    (relative path, record), and one-line messages naming each file that was skipped and why
    (``bench.results.read_records``, the one reader and validator of records)."""
    records, errors = read_records(results_dir)
    records, duplicates = deduplicate(records)
    return records, errors + duplicates


@functools.lru_cache(maxsize=None)
def zoo_param_count(model: str) -> int | None:
    """Encoder parameters of a zoo ``<family>_<size>`` name (default resolution), else None."""
    try:
        cfg = resolve_model(model).architecture()
    except ConfigError:
        return None
    import torch

    from bench.models.vit import VideoViT

    with torch.device("meta"):
        encoder = VideoViT(cfg)
    return int(sum(p.numel() for p in encoder.parameters()))


def config_param_count(config: Any) -> int | None:
    for node in (config, config.get("model") if isinstance(config, dict) else None):
        if isinstance(node, dict):
            for key in PARAM_KEYS:
                if is_number(node.get(key)) and node[key] > 0:
                    return int(node[key])
    return None


def config_collapse(config: Any) -> dict[str, float]:
    if not isinstance(config, dict):
        return {}
    for node in COLLAPSE_NODES:
        sub = config.get(node)
        if isinstance(sub, dict):
            found = {k: float(sub[k]) for k in COLLAPSE_KEYS if is_number(sub.get(k))}
            if found:
                return found
    return {}


def baselines(model: str, present: Iterable[str]) -> tuple[str, ...]:
    """The references a model is tested against in its table: ``blind`` and ``random_<its size>``,
    or its own random twin ``random_<name>`` where that row is present (a model with neither: every
    ``random_*`` row), those of them ``present``, never itself."""
    present, resolved = set(present), resolve_model(model)
    own = resolved.random_row
    # a zoo model is held to its own size's random row only; any other to its twin, else every random row
    randoms = ([own] if own is not None and (own in present or resolved.size is not None)
               else sorted(m for m in present if resolve_model(m).reference == "random"))
    return tuple(m for m in ("blind", *randoms) if m in present and m != model)


def group_bootstrap(key: GroupKey, records: list[tuple[str, ResultRecord]],
                    primary: str) -> tuple[Bootstrap | None, str | None]:
    """The bootstrap of a group's ``primary`` metric from its records' per-clip values, or None: silently
    for version-1 records (or records scoring another primary metric), with a warning when the records
    cannot be pooled or their per-clip values do not give their primary metric."""
    rs = [r for _, r in records]
    if all(not r.per_clip for r in rs) or any(r.primary_metric != primary for r in rs):
        return None, None
    name = "/".join(key)
    if not all(r.per_clip for r in rs):
        return None, f"{name}: some seeds have no per-clip values; no interval"
    if len({r.split for r in rs}) > 1 or len({len(r.per_clip["values"]) for r in rs}) > 1:
        return None, f"{name}: seeds scored on different splits or clip counts; no interval"
    values = np.array([r.per_clip["values"] for r in rs], float)
    weights = np.array([r.per_clip["weights"] for r in rs], float)
    for (rel, r), v, w in zip(records, values, weights):
        pooled = float(w @ v / w.sum())
        if not math.isclose(pooled, r.metrics[primary], rel_tol=1e-4, abs_tol=1e-6):
            return None, (f"{rel}: per-clip weighted mean {pooled!r} is not its {primary} "
                          f"{r.metrics[primary]!r}; no interval")
    return bootstrap(values, weights, stream=name), None


def significant_wins(boots: dict[GroupKey, Bootstrap], splits: dict[GroupKey, str],
                     tasks: list[TaskColumn]) -> dict[GroupKey, tuple[str, ...]]:
    """{group key: the baselines of its table it is significantly better than}, for the groups with a
    bootstrap, each compared clip by clip with the baselines scored on the same split."""
    higher = {t.key: t.higher[t.primary] for t in tasks}
    tables: dict[tuple[str, ...], list[str]] = {}
    for key in boots:
        task, dataset, model, readout = key
        tables.setdefault((task, dataset, readout, splits[key]), []).append(model)
    wins = {}
    for key, mine in boots.items():
        task, dataset, model, readout = key
        results = {ref: compare(mine, boots[(task, dataset, ref, readout)], higher[(task, dataset)])
                   for ref in baselines(model, tables[(task, dataset, readout, splits[key])])}
        wins[key] = tuple(ref for ref, result in results.items() if result is not None and result.significant)
    return wins


def make_group(key: GroupKey, records: list[ResultRecord], primary: str,
               boot: Bootstrap | None, beats: tuple[str, ...]) -> Group:
    """A group's seed summaries of every metric and of the train-split primary metric, its interval
    and wins, and its records' flags."""
    names = sorted({m for r in records for m in r.metrics})
    stats = {m: summarize([float(r.metrics[m]) for r in records if m in r.metrics]) for m in names}
    train = [float(r.train_metrics[primary]) for r in records if primary in r.train_metrics]
    return Group(*key, seeds=tuple(r.seed for r in records), metrics=stats,
                 ci=boot.interval() if boot is not None else None, beats=beats,
                 train_primary=summarize(train) if train else None,
                 flags=tuple(sorted({f for r in records for f in r.flags})),
                 head=heads_label(records) if resolve_model(key[2]).has_encoder else NO_FEATURES)


def task_columns(kept: list[ResultRecord]) -> tuple[list[TaskColumn], list[str]]:
    """The task columns of the records (primary metric: the one most records name), and warnings."""
    warnings, tasks = [], []
    for task, dataset in sorted({(r.task, r.dataset) for r in kept}):
        rs = sorted((r for r in kept if (r.task, r.dataset) == (task, dataset)),
                    key=lambda r: (r.model, r.readout, r.seed))
        counts = Counter(r.primary_metric for r in rs)
        primary = min(counts, key=lambda m: (-counts[m], m))
        if len(counts) > 1:
            warnings.append(f"task {task}/{dataset}: records disagree on the primary metric {sorted(counts)}; "
                            f"using {primary!r}")
        higher: dict[str, bool] = {}
        for r in rs:
            for m in r.metrics:
                higher.setdefault(m, r.directions.get(m, r.higher_is_better) if m != r.primary_metric
                                  else r.higher_is_better)
        metrics = [primary] + sorted(m for m in higher if m != primary)
        tasks.append(TaskColumn(task, dataset, primary, metrics, higher))
    return tasks, warnings


def task_options(r: ResultRecord) -> dict[str, Any]:
    """What a record's task was scored under: the task's version and options (its config's
    ``task`` node, name left out). Records that differ in any of them are never pooled."""
    node = r.config.get("task") if isinstance(r.config, dict) else None
    options = {k: v for k, v in node.items() if k != "name"} if isinstance(node, dict) else {}
    return {"version": r.task_version, **options}


def split_task_variants(records: list[tuple[str, ResultRecord]]) -> list[tuple[str, ResultRecord]]:
    """Relabel the records of a (task, dataset) scored under different task versions or options as
    ``task[key=value,...]`` (the keys whose values differ, e.g. ``depth[version=2]``); records that
    agree keep their name."""
    peers: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, r in records:
        peers.setdefault((r.task, r.dataset), []).append(task_options(r))
    varying = {key: sorted(k for k in {k for o in opts for k in o} if len({repr(o.get(k)) for o in opts}) > 1)
               for key, opts in peers.items()}
    out = []
    for rel, r in records:
        label = ",".join(f"{k}={task_options(r).get(k)}" for k in varying[(r.task, r.dataset)])
        out.append((rel, replace(r, task=f"{r.task}[{label}]") if label else r))
    return out


def aggregate(records: list[tuple[str, ResultRecord]]) -> tuple[Leaderboard, list[str]]:
    """Group ``records`` (one per evaluation, as ``load`` returns them), summarise seeds, bootstrap
    intervals, collect task columns; also warnings (records whose per-clip values cannot be used)."""
    warnings: list[str] = []
    by_group: dict[GroupKey, dict[int, tuple[str, ResultRecord]]] = {}
    for rel, r in split_task_variants(records):
        seeds = by_group.setdefault((r.task, r.dataset, r.model, r.readout), {})
        if r.seed in seeds:
            raise ValueError(f"{rel} and {seeds[r.seed][0]} are one evaluation; deduplicate() them first")
        seeds[r.seed] = (rel, r)
    grouped = {key: [seeds[s] for s in sorted(seeds)] for key, seeds in sorted(by_group.items())}

    kept = [r for seeds in grouped.values() for _, r in seeds]
    tasks, task_warnings = task_columns(kept)
    warnings += task_warnings
    primary = {t.key: t.primary for t in tasks}
    boots, splits = {}, {}
    for key, seeds in grouped.items():
        boot, problem = group_bootstrap(key, seeds, primary[key[:2]])
        warnings += [problem] if problem else []
        if boot is not None:
            boots[key], splits[key] = boot, seeds[0][1].split
    wins = significant_wins(boots, splits, tasks)
    groups = [make_group(key, [r for _, r in seeds], primary[key[:2]], boots.get(key), wins.get(key, ()))
              for key, seeds in grouped.items()]

    models = sorted({g.model for g in groups})
    params: dict[str, int] = {}
    collapse: dict[str, dict[str, float]] = {}
    for model in models:
        mine = sorted((r for r in kept if r.model == model), key=lambda r: (r.task, r.dataset, r.readout, r.seed))
        count = zoo_param_count(model)
        if count is None:
            count = next((c for r in mine if (c := config_param_count(r.config)) is not None), None)
        if count is not None:
            params[model] = count
        values: dict[str, list[float]] = {}
        for r in mine:
            for k, v in config_collapse(r.config).items():
                values.setdefault(k, []).append(v)
        if values:
            collapse[model] = {k: summarize(v).mean for k, v in sorted(values.items())}

    lb = Leaderboard(groups=groups, tasks=tasks, readouts=sorted({g.readout for g in groups}), models=models,
                     params=params, collapse=collapse, n_records=len(kept),
                     n_selected=sum(bool(r.selection) for r in kept),
                     curves=layer_curves({key: [r for _, r in seeds] for key, seeds in grouped.items()}))
    return lb, warnings

