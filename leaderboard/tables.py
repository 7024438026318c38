"""Leaderboard tables as data (cells with text, sort value, bold), and their Markdown and CSV forms.

The same :class:`Table` objects are rendered to Markdown here and to HTML in ``leaderboard.page``.
Cells show ``mean ± std`` (sample std over seeds, 4 decimals); a single seed shows
``mean (n=1)``; a metric with fewer seeds than its row shows ``(n=k)``.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from leaderboard.aggregate import Leaderboard, Stat, TaskColumn, best_of, rank_key

UP, DOWN = "↑", "↓"

NOTES = (
    "Each cell is the mean ± sample standard deviation (ddof=1) over readout seeds; a single seed "
    "shows `(n=1)` (its std is 0 in the CSV), and a metric with fewer seeds than its row shows `(n=k)`. "
    f"{UP} higher is better, {DOWN} lower is better; **bold** marks the best mean of each column "
    "(ties are all bold). Ranks are per task by its primary metric among the models evaluated with "
    "the same readout (best = 1, ties share the average rank); the mean rank averages a model's "
    "ranks over the tasks it has results for; the overview lists models with results on more tasks "
    "first and bolds the best mean rank among those with the most tasks."
)


@dataclass(frozen=True)
class Column:
    label: str
    numeric: bool = False
    higher_is_better: bool | None = None  # None: not a score (first click sorts ascending)


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | str | None = None  # None: missing (sorts last)
    bold: bool = False


@dataclass
class Table:
    title: str
    anchor: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)
    kind: str = "task"  # "overview" | "task"


def arrow(higher_is_better: bool) -> str:
    return UP if higher_is_better else DOWN


def fmt_value(x: float) -> str:
    return f"{x:.4f}"


def fmt_stat(stat: Stat, row_n: int | None = None) -> str:
    if stat.n == 1:
        return f"{fmt_value(stat.mean)} (n=1)"
    text = f"{fmt_value(stat.mean)} ± {fmt_value(stat.std)}"
    return text if row_n is None or stat.n == row_n else f"{text} (n={stat.n})"


def fmt_params(n: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


def slug(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() or c in "._" else "_" for c in p) for p in parts)


def task_label(lb: Leaderboard, task: TaskColumn) -> str:
    """'depth', or 'depth (scannet)' when the task has results on several datasets."""
    several = sum(t.task == task.task for t in lb.tasks) > 1
    return f"{task.task} ({task.dataset})" if several else task.task


def _bold_best(rows: list[list[Cell]], col: int, higher_is_better: bool) -> None:
    best = best_of([c.sort for r in rows if isinstance((c := r[col]).sort, float)], higher_is_better)
    for r in rows:
        c = r[col]
        if best is not None and isinstance(c.sort, float) and rank_key(c.sort) == best:
            r[col] = Cell(c.text, c.sort, True)


def overview_tables(lb: Leaderboard) -> list[Table]:
    """One overview table per readout: model, params, each task's primary metric, mean rank, collapse."""
    tables = []
    collapse_keys = sorted({k for v in lb.collapse.values() for k in v})
    for readout in lb.readouts:
        rows_data = lb.overview(readout)
        models = [r.model for r in rows_data]
        show_params = any(m in lb.params for m in models)
        columns = [Column("model")]
        if show_params:
            columns.append(Column("params", numeric=True))
        for t in lb.tasks:
            hib = t.higher[t.primary]
            columns.append(Column(f"{task_label(lb, t)}: {t.primary} {arrow(hib)}", numeric=True, higher_is_better=hib))
        columns.append(Column(f"mean rank {DOWN}", numeric=True, higher_is_better=False))
        shown_collapse = [k for k in collapse_keys if any(k in lb.collapse.get(m, {}) for m in models)]
        columns += [Column(k.replace("_", " "), numeric=True) for k in shown_collapse]

        rows = []
        for r in rows_data:
            row = [Cell(r.model, r.model)]
            if show_params:
                p = lb.params.get(r.model)
                row.append(Cell(fmt_params(p), float(p)) if p is not None else Cell("—"))
            for t in lb.tasks:
                s = r.primary.get(t.key)
                row.append(Cell(fmt_stat(s), s.mean) if s is not None else Cell("—"))
            text = f"{r.mean_rank:.2f}"
            if len(r.ranks) < len(lb.tasks):
                text += f" ({len(r.ranks)}/{len(lb.tasks)} tasks)"
            row.append(Cell(text, r.mean_rank))
            for k in shown_collapse:
                v = lb.collapse.get(r.model, {}).get(k)
                row.append(Cell(f"{v:.4g}", v) if v is not None else Cell("—"))
            rows.append(row)
        for i, col in enumerate(columns[:-1 - len(shown_collapse)]):
            if col.higher_is_better is not None:
                _bold_best(rows, i, col.higher_is_better)
        # mean rank: the best among the models with the most tasks (a partial model is not "best")
        most = max((len(r.ranks) for r in rows_data), default=0)
        full = [row for row, r in zip(rows, rows_data) if len(r.ranks) == most]
        _bold_best(full, len(columns) - 1 - len(shown_collapse), higher_is_better=False)
        tables.append(Table(f"{readout} readout", slug("overview", readout), columns, rows, kind="overview"))
    return tables


def task_tables(lb: Leaderboard) -> list[Table]:
    """One table per task × dataset × readout: rank, model, seeds, every metric of the task."""
    tables = []
    for t in lb.tasks:
        for readout in lb.task_readouts(t):
            columns = [Column("rank", numeric=True), Column("model"), Column("seeds", numeric=True)]
            columns += [Column(f"{m} {arrow(t.higher[m])}" + (" (primary)" if m == t.primary else ""),
                               numeric=True, higher_is_better=t.higher[m]) for m in t.metrics]
            ranks = lb.task_ranks(t, readout)
            rows = []
            for model in lb.task_models(t, readout):
                g = lb.group(t, model, readout)
                rank = ranks.get(model)
                row = [Cell(f"{rank:g}", rank) if rank is not None else Cell("—"), Cell(model, model),
                       Cell(str(len(g.seeds)), float(len(g.seeds)))]
                for m in t.metrics:
                    s = g.metrics.get(m)
                    row.append(Cell(fmt_stat(s, len(g.seeds)), s.mean) if s is not None else Cell("—"))
                rows.append(row)
            for i, col in enumerate(columns):
                if col.higher_is_better is not None:
                    _bold_best(rows, i, col.higher_is_better)
            title = f"{t.task} · {t.dataset} · {readout} readout"
            tables.append(Table(title, slug("task", t.task, t.dataset, readout), columns, rows))
    return tables


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def table_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(_md_escape(c.label) for c in table.columns) + " |",
             "|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|"]
    for row in table.rows:
        cells = [f"**{_md_escape(c.text)}**" if c.bold else _md_escape(c.text) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def overview_markdown(lb: Leaderboard) -> str:
    return "\n".join(f"### Overview — {t.title}\n\n{table_markdown(t)}" for t in overview_tables(lb))


def markdown(lb: Leaderboard, plots: list[str]) -> str:
    """The whole ``leaderboard.md``; ``plots`` are PNG paths relative to it."""
    parts = ["# frozen4d leaderboard\n",
             f"Built by `python -m leaderboard.build` from {lb.n_records} result records "
             f"({len(lb.groups)} task × model × readout groups).\n", NOTES + "\n", "## Overview\n",
             overview_markdown(lb), "## Tasks\n"]
    for t in task_tables(lb):
        parts.append(f"### {t.title}\n\n{table_markdown(t)}")
    if plots:
        parts.append("## Plots\n")
        parts += [f"![{p}]({p})\n" for p in plots]
    return "\n".join(parts)


def tidy_csv(lb: Leaderboard) -> str:
    """task, dataset, readout, model, metric, mean, std, n — one row per group × metric."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "dataset", "readout", "model", "metric", "mean", "std", "n"])
    rows = [(g.task, g.dataset, g.readout, g.model, m, repr(s.mean), repr(s.std), s.n)
            for g in lb.groups for m, s in g.metrics.items()]
    writer.writerows(sorted(rows, key=lambda r: r[:5]))
    return buf.getvalue()
