"""Result records -> leaderboard numbers: seeds aggregated per group, ranks per task.

A group is (task, dataset, model, readout). Each metric of a group is summarised over its seeds
as mean, sample standard deviation (ddof=1) and n; one seed gives std 0 (tables show "(n=1)").
A task column is (task, dataset): its primary metric and directions come from its records.

Ranks: per task column and readout, the models evaluated with that readout are ranked by the
primary metric's mean, best = 1 (direction-aware); equal means share the average rank. A
model's mean rank averages its ranks over the task columns it has results for; the overview
lists models with results on more task columns first. Means are
compared at 10 significant digits, so float noise from summation never breaks a tie.

Optional per-model extras: parameter count (from the zoo name via ``bench.models.zoo``, else a
``param_count`` / ``num_params`` / ``params`` / ``n_params`` number in the record's config or its
``model`` node) and collapse monitors (``feat_std`` / ``eff_rank`` in the record config's
``collapse`` or ``pretrain`` node, the latter as copied from a checkpoint sidecar).
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import RecordError, ResultRecord, read_record

PARAM_KEYS = ("param_count", "num_params", "params", "n_params")
COLLAPSE_KEYS = ("feat_std", "eff_rank")
COLLAPSE_NODES = ("collapse", "pretrain")


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
    ranks: dict[tuple[str, str], float]    # task key -> rank among models with this readout
    mean_rank: float


@dataclass
class Leaderboard:
    groups: list[Group]
    tasks: list[TaskColumn]
    readouts: list[str]
    models: list[str]
    params: dict[str, int] = field(default_factory=dict)
    collapse: dict[str, dict[str, float]] = field(default_factory=dict)
    n_records: int = 0

    def __post_init__(self) -> None:
        self._index = {(g.task, g.dataset, g.model, g.readout): g for g in self.groups}

    def group(self, task: TaskColumn, model: str, readout: str) -> Group | None:
        return self._index.get((task.task, task.dataset, model, readout))

    def task_readouts(self, task: TaskColumn) -> list[str]:
        return sorted({g.readout for g in self.groups if (g.task, g.dataset) == task.key})

    def task_models(self, task: TaskColumn, readout: str) -> list[str]:
        """Models with results for ``task`` × ``readout``, best primary mean first (ties: by name)."""
        models = [g.model for g in self.groups if (g.task, g.dataset, g.readout) == (*task.key, readout)]
        ranks = self.task_ranks(task, readout)
        return sorted(models, key=lambda m: (ranks.get(m, math.inf), m))

    def task_ranks(self, task: TaskColumn, readout: str) -> dict[str, float]:
        values = {}
        for g in self.groups:
            if (g.task, g.dataset, g.readout) == (*task.key, readout) and task.primary in g.metrics:
                values[g.model] = g.metrics[task.primary].mean
        return average_ranks(values, task.higher[task.primary])

    def overview(self, readout: str) -> list[OverviewRow]:
        """One row per model evaluated with ``readout``: models with results on more tasks first, then
        by mean rank, then by name (a model evaluated on one task never outranks complete ones)."""
        ranks = {t.key: self.task_ranks(t, readout) for t in self.tasks}
        rows = []
        for model in sorted({g.model for g in self.groups if g.readout == readout}):
            primary, model_ranks = {}, {}
            for t in self.tasks:
                g = self.group(t, model, readout)
                if g is not None and t.primary in g.metrics:
                    primary[t.key] = g.metrics[t.primary]
                    model_ranks[t.key] = ranks[t.key][model]
            if not model_ranks:
                continue
            mean_rank = math.fsum(model_ranks.values()) / len(model_ranks)
            rows.append(OverviewRow(model, readout, primary, model_ranks, mean_rank))
        return sorted(rows, key=lambda r: (-len(r.ranks), rank_key(r.mean_rank), r.model))


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


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate(record: ResultRecord) -> str | None:
    """What makes a parsed record unusable for the leaderboard, or None."""
    for name in ("task", "dataset", "model", "readout", "primary_metric"):
        if not isinstance(getattr(record, name), str) or not getattr(record, name):
            return f"field {name!r} is not a non-empty string"
    if not isinstance(record.seed, int) or isinstance(record.seed, bool):
        return f"seed {record.seed!r} is not an integer"
    if not isinstance(record.higher_is_better, bool):
        return f"higher_is_better {record.higher_is_better!r} is not a boolean"
    if not isinstance(record.directions, dict) or not all(isinstance(v, bool) for v in record.directions.values()):
        return "directions is not a mapping of metric -> boolean"
    bad = sorted(k for k, v in record.metrics.items() if not _number(v))
    if bad:
        return f"metrics {bad} are not finite numbers"
    return None


def load(results_dir: str | Path) -> tuple[list[tuple[str, ResultRecord]], list[str]]:
    """Every usable record under ``results_dir`` (recursively, sorted by path) as (relative path,
    record), and one-line messages naming each file that was skipped and why."""
    root = Path(results_dir)
    records, errors = [], []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        try:
            record = read_record(path)
        except RecordError as exc:
            msg = str(exc)
            errors.append(f"{rel}: {msg[len(path.name) + 2:]}" if msg.startswith(f"{path.name}: ") else f"{rel}: {msg}")
            continue
        except Exception as exc:  # e.g. a JSON object whose fields do not fit the dataclass
            errors.append(f"{rel}: not a valid record ({type(exc).__name__}: {exc})")
            continue
        problem = validate(record)
        if problem:
            errors.append(f"{rel}: {problem}")
            continue
        records.append((rel, record))
    return records, errors


@functools.lru_cache(maxsize=None)
def zoo_param_count(model: str) -> int | None:
    """Encoder parameters of a zoo ``<family>_<size>`` name (default resolution), else None."""
    from bench.models.zoo import arch_for

    try:
        cfg = arch_for(model)
    except ValueError:
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
                if _number(node.get(key)) and node[key] > 0:
                    return int(node[key])
    return None


def config_collapse(config: Any) -> dict[str, float]:
    if not isinstance(config, dict):
        return {}
    for node in COLLAPSE_NODES:
        sub = config.get(node)
        if isinstance(sub, dict):
            found = {k: float(sub[k]) for k in COLLAPSE_KEYS if _number(sub.get(k))}
            if found:
                return found
    return {}


def aggregate(records: list[tuple[str, ResultRecord]]) -> tuple[Leaderboard, list[str]]:
    """Group records, summarise seeds, collect task columns; also warnings (duplicate seeds)."""
    warnings: list[str] = []
    by_group: dict[tuple[str, str, str, str], dict[int, tuple[str, ResultRecord]]] = {}
    for rel, r in records:
        seeds = by_group.setdefault((r.task, r.dataset, r.model, r.readout), {})
        if r.seed in seeds:
            warnings.append(f"{rel}: duplicate of {seeds[r.seed][0]} (same task, dataset, model, readout, "
                            f"seed {r.seed}); ignored")
            continue
        seeds[r.seed] = (rel, r)

    groups = []
    for key in sorted(by_group):
        seeds = dict(sorted(by_group[key].items()))
        names = sorted({m for _, r in seeds.values() for m in r.metrics})
        stats = {m: summarize([float(r.metrics[m]) for _, r in seeds.values() if m in r.metrics]) for m in names}
        groups.append(Group(*key, seeds=tuple(seeds), metrics=stats))

    kept = [r for seeds in by_group.values() for _, r in seeds.values()]
    tasks = []
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
                     params=params, collapse=collapse, n_records=len(kept))
    return lb, warnings
