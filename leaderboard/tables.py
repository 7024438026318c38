"""Leaderboard tables as data (cells with text, sort value, bold), and their Markdown and CSV forms.

The same :class:`Table` objects are rendered to Markdown here and to HTML in ``leaderboard.page``.
A cell's ``text`` is ``mean ± std`` (sample std over seeds, 4 decimals); a single seed gives
``mean (n=1)``; a metric with fewer seeds than its row gives ``(n=k)``. Primary-metric cells add
the 95% bootstrap interval ``[low, high]`` (3 decimals) and marks for the references the group is
significantly better than. The pages show a stat cell by its parts instead (``Cell.value``,
``interval``, ``marks``), saying the seed count only where it differs from the count the table
states once (the overview: the board's common count; a task table: the row's seeds column).
Reference rows come after the models, labelled ``(reference)``. The published results of
``leaderboard.published`` get tables of their own, after ours. The feature pictures (:class:`Picture`)
are named and ordered here for both pages.
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from bench.registry import resolve_model
from leaderboard.aggregate import Group, Leaderboard, Stat, TaskColumn, best_of, rank_key
from leaderboard.heads import FIXED, NO_FEATURES
from leaderboard.intervals import DRAWS, LEVEL
from leaderboard.published import PUBLISHED, Published

UP, DOWN = "↑", "↓"
HEAD_COLUMN = "head (held-out choice)"
MARKS = {"blind": "†", "random": "‡"}  # reference kind -> the mark of a group significantly better than it

NOTES = (
    "Each cell is the mean ± sample standard deviation (ddof=1) over readout seeds, or the mean alone for "
    "one seed (its std is 0 in the CSV). The overview states its cells' seed count once, above its tables, "
    "and marks a cell over another count `(n=K)`; a per-task table gives each row's count in its seeds "
    "column and marks a metric over fewer seeds than its row `(n=k)`. "
    f"A primary-metric cell also shows its {LEVEL:.0%} interval `[low, high]`: a two-level bootstrap "
    f"({DRAWS} draws) resampling the test clips (the same clips for every seed) and the seeds, both with "
    "replacement; records without per-clip values (schema version 1) have none. "
    f"{MARKS['blind']} marks a result significantly better than `blind` (the task's input-blind answer), "
    f"{MARKS['random']} one significantly better than `random_<size>` (the untrained encoder of the model's "
    "size; for a checkpoint with a random twin `random_<name>` in the table, that twin; for another model "
    "without a size, a `random_*` row of the table): the "
    f"{LEVEL:.0%} bootstrap interval of the difference, paired clip by clip on the same test split, lies "
    "wholly on the better side. Reference rows (`blind`, `pixels`, `random_*`, `supervised_*`, and the "
    "external real encoders with their twins, labelled (reference)) come after the models and are neither "
    "ranked nor bolded. "
    f"{UP} higher is better, {DOWN} lower is better; **bold** marks the best mean among the models of each "
    "column (ties are all bold). Ranks are per task by its primary metric among the models evaluated with "
    "the same readout (best = 1, ties share the average rank); the mean rank averages a model's "
    "ranks over the tasks it has results for; the overview lists models with results on more tasks "
    "first and bolds the best mean rank among those with the most tasks. Per-task tables also show, where "
    "records carry them, the primary metric on the train split (against the test split: the train–test "
    "gap), the head each row was read with where a probe grid chose it on held-out train clips (the grid "
    "axes that vary, e.g. `layer 6, lr 0.003`; in parentheses the head best on the test split where that "
    "differs, shown for comparison with protocols that select on the test set and never used to rank) and "
    "the records' flags (e.g. `loss_still_falling`, `train_test_gap`)."
)
PUBLISHED_TITLE = ("Published frozen-evaluation results (reported by the model owners; not measured here, never "
                   "ranked with ours)")
PUBLISHED_NOTE = (
    "Numbers as the owners of each model report them in their repository (the source file, and the config "
    "the protocol is read from, at the commit named), on real datasets with their own probes and protocols. "
    "None was measured by this harness; they are not comparable cell by cell with the tables above and take "
    "no part in their ranks, bold or marks. The point trackers are supervised models, trained for the task: "
    "they are ceilings for a frozen readout, not frozen-probe results."
)

PICTURES_TITLE = "Feature pictures"
PICTURES_NOTE = (
    "Each row's frozen features on one clip, as `python -m bench.visualize` draws them: the clip's frames, then "
    "the first three principal components of the model's readout-layer tokens as red, green and blue, then "
    "their k-means clusters (both fitted on that clip's tokens alone, so colours compare within a picture, not "
    "across pictures). `python -m leaderboard.demo --pictures` redraws the study's rows."
)


@dataclass(frozen=True)
class Picture:
    """A feature picture under the output directory: its relative ``path``, and the ``model`` and ``clip`` it shows."""

    path: str
    model: str
    clip: str


@dataclass(frozen=True)
class Column:
    label: str
    numeric: bool = False
    higher_is_better: bool | None = None  # None: not a score (first click sorts ascending)


@dataclass(frozen=True)
class Cell:
    """A table cell: its whole ``text``, sort value and bold; a stat cell also has the parts the pages show."""

    text: str
    sort: float | str | None = None  # None: missing (sorts last)
    bold: bool = False
    value: str = ""     # a stat cell's mean (± std), "(n=K)" only where K is not its table's stated count
    interval: str = ""  # a primary cell's "[low, high]"
    marks: str = ""     # a primary cell's marks of the references it beats


@dataclass
class Table:
    title: str
    anchor: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)        # the models, ranked
    kind: str = "task"  # "overview" | "task" | "published" (not sortable, never ranked) | "pictures" (Markdown only)
    references: list[list[Cell]] = field(default_factory=list)  # the reference rows, after the models


def arrow(higher_is_better: bool) -> str:
    return UP if higher_is_better else DOWN


def fmt_value(x: float) -> str:
    return f"{x:.4f}"


def fmt_mean(stat: Stat) -> str:
    """``mean ± std``, or the mean alone for one seed."""
    return fmt_value(stat.mean) if stat.n == 1 else f"{fmt_value(stat.mean)} ± {fmt_value(stat.std)}"


def fmt_stat(stat: Stat, row_n: int | None = None) -> str:
    if stat.n == 1:
        return f"{fmt_value(stat.mean)} (n=1)"
    text = fmt_mean(stat)
    return text if row_n is None or stat.n == row_n else f"{text} (n={stat.n})"


def fmt_shown(stat: Stat, stated: int | None) -> str:
    """``fmt_mean`` with ``(n=K)`` only where K is not the seed count its table states (``stated``)."""
    return fmt_mean(stat) if stat.n == stated else f"{fmt_mean(stat)} (n={stat.n})"


def fmt_interval(group: Group) -> str:
    return f"[{group.ci[0]:.3f}, {group.ci[1]:.3f}]" if group.ci is not None else ""


def fmt_marks(lb: Leaderboard, group: Group) -> str:
    """The marks of the reference kinds ``group`` is significantly better than, e.g. ``†‡``."""
    kinds = {"random" if resolve_model(ref).untrained else lb.references.get(ref) for ref in group.beats}
    return "".join(mark for kind, mark in MARKS.items() if kind in kinds)


def fmt_primary(lb: Leaderboard, group: Group, stat: Stat, row_n: int | None = None) -> str:
    """A primary-metric cell: ``fmt_stat``, then the group's interval and marks, e.g.
    ``0.3412 ± 0.0021 [0.331, 0.352] †‡``."""
    return " ".join(part for part in (fmt_stat(stat, row_n), fmt_interval(group), fmt_marks(lb, group)) if part)


def stat_cell(lb: Leaderboard, group: Group, metric: str, primary: str, row_n: int | None = None,
              stated: int | None = None) -> Cell:
    """The cell of one metric of a group (the primary one with interval and marks); "—" if missing.
    ``stated``: the seed count its table states, which the shown value leaves unsaid."""
    s = group.metrics.get(metric)
    if s is None:
        return Cell("—")
    if metric != primary:
        return Cell(fmt_stat(s, row_n), s.mean, value=fmt_shown(s, stated))
    return Cell(fmt_primary(lb, group, s, row_n), s.mean, value=fmt_shown(s, stated), interval=fmt_interval(group),
                marks=fmt_marks(lb, group))


def shown(cell: Cell) -> str:
    """A cell as the Markdown page shows it: a stat cell by its parts (value, interval, marks), else its text."""
    if not cell.value:
        return cell.text
    return " ".join(part for part in (cell.value, cell.interval, cell.marks) if part)


def common_seeds(lb: Leaderboard) -> int:
    """The board's most common seed count per group (of equals, the smallest): the count the overview states."""
    counts = Counter(len(g.seeds) for g in lb.groups)
    return min(counts, key=lambda n: (-counts[n], n))


def overview_key(lb: Leaderboard) -> str:
    """One Markdown line above the overview: the seed count of its cells, and what intervals, marks, bold and
    references mean (only those the board has)."""
    n = common_seeds(lb)
    seeds = "one readout seed" if n == 1 else f"mean ± sample std over {n} readout seeds"
    parts = [f"Each cell: {seeds} unless marked `(n=K)`"]
    if any(g.ci is not None for g in lb.groups):
        parts.append(f"`[low, high]`: its {LEVEL:.0%} bootstrap interval")
    if any(g.beats for g in lb.groups):
        parts.append(f"{MARKS['blind']} / {MARKS['random']}: significantly better than `blind` / the random encoder")
    parts.append("**bold**: the best model of a column; references, after the models, are neither ranked nor bolded")
    return "; ".join(parts) + "."


def model_cell(lb: Leaderboard, model: str) -> Cell:
    return Cell(f"{model} (reference)" if model in lb.references else model, model)


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
            r[col] = replace(c, bold=True)


def overview_tables(lb: Leaderboard) -> list[Table]:
    """One overview table per readout: model, params, each task's primary metric, mean rank, collapse;
    the references after the models."""
    tables = []
    collapse_keys = sorted({k for v in lb.collapse.values() for k in v})
    stated = common_seeds(lb)
    for readout in lb.readouts:
        rows_data, tasks = lb.overview(readout), lb.readout_tasks(readout)
        models = [r.model for r in rows_data]
        show_params = any(m in lb.params for m in models)
        columns = [Column("model")]
        if show_params:
            columns.append(Column("params", numeric=True))
        for t in tasks:
            hib = t.higher[t.primary]
            columns.append(Column(f"{task_label(lb, t)}: {t.primary} {arrow(hib)}", numeric=True, higher_is_better=hib))
        columns.append(Column(f"mean rank {DOWN}", numeric=True, higher_is_better=False))
        shown_collapse = [k for k in collapse_keys if any(k in lb.collapse.get(m, {}) for m in models)]
        columns += [Column(k.replace("_", " "), numeric=True) for k in shown_collapse]

        model_rows: list[list[Cell]] = []
        reference_rows: list[list[Cell]] = []
        for r in rows_data:
            row = [model_cell(lb, r.model)]
            if show_params:
                p = lb.params.get(r.model)
                row.append(Cell(fmt_params(p), float(p)) if p is not None else Cell("—"))
            for t in tasks:
                group = lb.group(t, r.model, readout)
                row.append(stat_cell(lb, group, t.primary, t.primary, stated=stated) if group is not None
                           else Cell("—"))
            if r.mean_rank is None:
                row.append(Cell("—"))
            else:
                partial = f" ({len(r.ranks)}/{len(tasks)} tasks)" if len(r.ranks) < len(tasks) else ""
                row.append(Cell(f"{r.mean_rank:.2f}{partial}", r.mean_rank))
            for k in shown_collapse:
                v = lb.collapse.get(r.model, {}).get(k)
                row.append(Cell(f"{v:.4g}", v) if v is not None else Cell("—"))
            (reference_rows if r.model in lb.references else model_rows).append(row)
        ranked = [r for r in rows_data if r.model not in lb.references]
        for i, col in enumerate(columns[:-1 - len(shown_collapse)]):
            if col.higher_is_better is not None:
                _bold_best(model_rows, i, col.higher_is_better)
        # mean rank: the best among the models with the most tasks (a partial model is not "best")
        most = max((len(r.ranks) for r in ranked), default=0)
        full = [row for row, r in zip(model_rows, ranked) if len(r.ranks) == most]
        _bold_best(full, len(columns) - 1 - len(shown_collapse), higher_is_better=False)
        tables.append(Table(f"{readout} readout", slug("overview", readout), columns, model_rows, kind="overview",
                            references=reference_rows))
    return tables


def task_tables(lb: Leaderboard) -> list[Table]:
    """One table per task × dataset × readout: rank, model, seeds, every metric of the task, and (where
    records carry them) the train-split primary metric, the head chosen from a probe grid and the
    flags; the references after the models."""
    tables = []
    for t in lb.tasks:
        for readout in lb.task_readouts(t):
            models = lb.task_models(t, readout)
            groups = [lb.group(t, m, readout) for m in models]
            show_train = any(g.train_primary is not None for g in groups)
            show_flags = any(g.flags for g in groups)
            show_head = any(g.head not in (FIXED, NO_FEATURES) for g in groups)
            columns = [Column("rank", numeric=True), Column("model"), Column("seeds", numeric=True)]
            columns += [Column(f"{m} {arrow(t.higher[m])}" + (" (primary)" if m == t.primary else ""),
                               numeric=True, higher_is_better=t.higher[m]) for m in t.metrics]
            if show_train:
                columns.append(Column(f"train {t.primary} {arrow(t.higher[t.primary])}", numeric=True))
            if show_head:
                columns.append(Column(HEAD_COLUMN))
            if show_flags:
                columns.append(Column("flags"))
            ranks = lb.task_ranks(t, readout)
            model_rows: list[list[Cell]] = []
            reference_rows: list[list[Cell]] = []
            for model, g in zip(models, groups):
                rank = ranks.get(model)
                row = [Cell(f"{rank:g}", rank) if rank is not None else Cell("—"), model_cell(lb, model),
                       Cell(str(len(g.seeds)), float(len(g.seeds)))]
                row += [stat_cell(lb, g, m, t.primary, len(g.seeds), len(g.seeds)) for m in t.metrics]
                if show_train:
                    train = g.train_primary
                    row.append(Cell(fmt_stat(train, len(g.seeds)), train.mean, value=fmt_shown(train, len(g.seeds)))
                               if train is not None else Cell("—"))
                if show_head:
                    row.append(Cell(g.head, g.head))
                if show_flags:
                    row.append(Cell(", ".join(g.flags), ", ".join(g.flags) or None))
                (reference_rows if model in lb.references else model_rows).append(row)
            for i, col in enumerate(columns):
                if col.higher_is_better is not None:
                    _bold_best(model_rows, i, col.higher_is_better)
            title = f"{t.task} · {t.dataset} · {readout} readout"
            tables.append(Table(title, slug("task", t.task, t.dataset, readout), columns, model_rows,
                                references=reference_rows))
    return tables


def picture_clip(stem: str) -> str:
    """The clip a picture's file stem names: ``world-test-0`` is the spec ``world:test:0``, a video its stem."""
    return re.sub(r"^world-([A-Za-z]+)-(\d+)$", r"world:\1:\2", stem)


def pictures(lb: Leaderboard, paths: list[str]) -> list[Picture]:
    """The pictures ``<dir>/<model>__<clip>.png`` at ``paths`` in the row order of the first overview table
    (a model not in it after, by name), each model's clips by name."""
    found = []
    for path in paths:
        model, _, clip = PurePosixPath(path).stem.partition("__")
        found.append(Picture(path, model, picture_clip(clip)))
    order = {r.model: i for i, r in enumerate(lb.overview(lb.readouts[0]))}
    return sorted(found, key=lambda p: (order.get(p.model, len(order)), p.model, p.clip, p.path))


def pictures_table(found: list[Picture]) -> Table:
    """The pictures as a Markdown table: one row per model, one column per clip, each cell an image link."""
    clips = sorted({p.clip for p in found})
    cells = {(p.model, p.clip): Cell(f"![{p.model} on {p.clip}]({p.path})") for p in found}
    rows = [[Cell(model), *(cells.get((model, c), Cell("—")) for c in clips)]
            for model in dict.fromkeys(p.model for p in found)]
    return Table(PICTURES_TITLE, "pictures", [Column("model"), *(Column(c) for c in clips)], rows, kind="pictures")


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def table_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(_md_escape(c.label) for c in table.columns) + " |",
             "|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|"]
    for row in table.rows + table.references:
        cells = [f"**{_md_escape(shown(c))}**" if c.bold else _md_escape(shown(c)) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def overview_markdown(lb: Leaderboard) -> str:
    """The overview key, then one table per readout (also what the README embeds)."""
    return "\n".join([overview_key(lb) + "\n"] + [f"### Overview — {t.title}\n\n{table_markdown(t)}"
                                                  for t in overview_tables(lb)])


def summary(lb: Leaderboard) -> str:
    """The one sentence under the page title (Markdown)."""
    chosen = (f" In {lb.n_selected} of them each row's readout head was chosen from a probe grid on held-out train "
              "clips, never on the test split (the `head` column; layer curves under Plots); the others were read "
              "with the one head of their config (`fixed`) or have no features (`—`)." if lb.n_selected else
              " Each was read with the one head of its config (one layer, one learning rate): a fixed probe.")
    return (f"Frozen video encoders compared on the same tasks with the same readouts: {lb.n_records} result "
            f"records ({len(lb.groups)} task × model × readout groups), built by `python -m leaderboard.build`.{chosen}")


def _published_row(p: Published) -> list[Cell]:
    config = f", {p.config}" if p.config else ""
    return [Cell(p.model, p.model), Cell(p.architecture, p.architecture), Cell(p.dataset, p.dataset),
            Cell(p.metric, p.metric), Cell(repr(p.value), p.value), Cell(p.protocol, p.protocol),
            Cell(f"{p.source}{config} ({p.commit[:7]})", p.source)]


def published_tables(entries: tuple[Published, ...] | None = None) -> list[Table]:
    """The published results (``entries``, default ``PUBLISHED``) as two tables, frozen-encoder probes and
    supervised ceilings, in entry order; no rank, bold or mark (``kind="published"``)."""
    entries = PUBLISHED if entries is None else entries
    columns = [Column("model"), Column("architecture"), Column("dataset"), Column("metric"),
               Column("value", numeric=True), Column("protocol (probe; frames × clips × views; resolution)"),
               Column("source (file, protocol config, commit)")]
    tables = []
    for supervised, title in ((False, "Frozen encoders under a probe"),
                              (True, "Supervised trackers (ceilings, not frozen probes)")):
        rows = [_published_row(p) for p in entries if p.supervised == supervised]
        if rows:
            tables.append(Table(title, slug("published", "supervised" if supervised else "frozen"), list(columns),
                                rows, kind="published"))
    return tables


def published_markdown() -> str:
    """The section of published results, after our tables."""
    parts = [f"## {PUBLISHED_TITLE}\n", PUBLISHED_NOTE + "\n"]
    parts += [f"### {t.title}\n\n{table_markdown(t)}" for t in published_tables()]
    return "\n".join(parts)


HEADLINE = "plots/headline.png"  # every row on every task in one figure: shown under the overview, not with the plots


def markdown(lb: Leaderboard, plots: list[str], picture_paths: list[str] | None = None) -> str:
    """The whole ``leaderboard.md``: title and one sentence, our tables (overview first), plots, feature
    pictures, the notes, then the published results; ``plots`` and ``picture_paths`` are PNG paths relative to it."""
    parts = ["# frozen4d leaderboard\n", summary(lb) + "\n", "## Overview\n", overview_markdown(lb)]
    parts += [f"![every row on every task]({HEADLINE})\n"] if HEADLINE in plots else []
    parts.append("## Tasks\n")
    for t in task_tables(lb):
        parts.append(f"### {t.title}\n\n{table_markdown(t)}")
    if rest := [p for p in plots if p != HEADLINE]:
        parts.append("## Plots\n")
        parts += [f"![{p}]({p})\n" for p in rest]
    if picture_paths:
        grid = pictures_table(pictures(lb, picture_paths))
        parts += [f"## {PICTURES_TITLE}\n", PICTURES_NOTE + "\n", table_markdown(grid)]
    parts += ["## How to read these tables\n", NOTES + "\n", published_markdown()]
    return "\n".join(parts)


def tidy_csv(lb: Leaderboard) -> str:
    """task, dataset, readout, model, metric, mean, std, n, ci_low, ci_high, beats, reference, head — one
    row per group × metric; the interval and the beaten references (``;``-separated) on the primary
    metric's row only (empty otherwise, and where there is no interval); reference: the row's kind or
    empty; head: the readout head the group was read with (``leaderboard.heads``)."""
    primary = {t.key: t.primary for t in lb.tasks}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "dataset", "readout", "model", "metric", "mean", "std", "n",
                     "ci_low", "ci_high", "beats", "reference", "head"])
    rows = []
    for g in lb.groups:
        for m, s in g.metrics.items():
            on_primary = m == primary[(g.task, g.dataset)]
            low, high = (repr(x) for x in g.ci) if on_primary and g.ci is not None else ("", "")
            rows.append((g.task, g.dataset, g.readout, g.model, m, repr(s.mean), repr(s.std), s.n, low, high,
                         ";".join(g.beats) if on_primary else "", lb.references.get(g.model, ""), g.head))
    writer.writerows(sorted(rows, key=lambda r: r[:5]))
    return buf.getvalue()
