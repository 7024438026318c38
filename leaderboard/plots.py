"""Leaderboard plots as deterministic PNG bytes (no pyplot, no global backend, no timestamps).

- ``plots/<task>__<dataset>.png``: the primary metric per model, one bar per readout, error bars
  = the 95% bootstrap interval (the sample std over seeds where records have no per-clip values);
  the models first, then the reference rows as hatched grey bars labelled ``(ref.)``;
- ``plots/headline.png``: every row on every task at once, one panel per task (its first readout:
  the attentive one where there is one), the primary metric with its 95% interval as a horizontal
  bar per row; the models on top in colour, the references below a dashed line in grey;
- ``plots/params.png``: the primary metric of each task against encoder parameter count (log
  scale), for the models whose parameter count is known (references labelled ``(ref.)``);
- ``plots/layers__<task>__<dataset>.png``: layer curves where records hold probe grids over
  layers, one panel per readout: each model's held-out (dashed) and test (solid) score against
  relative depth, at each depth the head best on the held-out clips.

Figures are drawn under matplotlib's default style (not the user's matplotlibrc), with a fixed
``svg.hashsalt`` and PNG metadata without the Software key, so identical inputs give identical bytes.
"""
from __future__ import annotations

import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from leaderboard.aggregate import Group, Leaderboard, TaskColumn
from leaderboard.tables import HEADLINE, arrow, slug, task_label

RC = {"svg.hashsalt": "frozen4d-leaderboard", "font.size": 9, "axes.titlesize": 10}
DPI = 100
REFERENCE_FACE, REFERENCE_HATCH = "0.85", "//"  # reference bars: grey, hatched, edged in the readout's colour


def _compact(n: float, _pos: object = None) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _label(lb: Leaderboard, model: str) -> str:
    return f"{model} (ref.)" if model in lb.references else model


def error_bar(group: Group, primary: str) -> tuple[float, float]:
    """(below, above) the primary mean: its 95% interval, else the sample std over seeds."""
    s = group.metrics[primary]
    if group.ci is None:
        return s.std, s.std
    return max(0.0, s.mean - group.ci[0]), max(0.0, group.ci[1] - s.mean)


def _task_bars(lb: Leaderboard, task: TaskColumn) -> bytes:
    readouts = lb.task_readouts(task)
    present = {m for r in readouts for m in lb.task_models(task, r)}
    models = sorted(present - set(lb.references)) + lb.reference_order(present)
    fig = Figure(figsize=(max(4.0, 0.9 * len(models) * max(1, len(readouts)) + 1.5), 3.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(readouts)
    for i, readout in enumerate(readouts):
        xs, ys, below, above, refs = [], [], [], [], []
        for j, model in enumerate(models):
            g = lb.group(task, model, readout)
            if g is not None and task.primary in g.metrics:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(g.metrics[task.primary].mean)
                low, high = error_bar(g, task.primary)
                below.append(low)
                above.append(high)
                refs.append(model in lb.references)
        bars = ax.bar(xs, ys, width=width * 0.95, yerr=[below, above], capsize=3, label=f"{readout} readout",
                      color=f"C{i}", edgecolor=f"C{i}")
        for bar, ref in zip(bars, refs):
            if ref:
                bar.set(facecolor=REFERENCE_FACE, hatch=REFERENCE_HATCH)
    n_models = len(models) - len(lb.reference_order(present))
    if 0 < n_models < len(models):
        ax.axvline(n_models - 0.5, color="0.5", linestyle=":", linewidth=1)
    labels = [_label(lb, m) for m in models]
    tilt = len(models) > 3
    ax.set_xticks(range(len(models)), labels, rotation=20 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel(f"{task.primary} {arrow(task.higher[task.primary])}")
    ax.set_title(f"{task.task} ({task.dataset}): {task.primary}, mean with 95% CI (or ± std over seeds)")
    handles, _ = ax.get_legend_handles_labels()
    if n_models < len(models):
        handles.append(Patch(facecolor=REFERENCE_FACE, edgecolor="0.4", hatch=REFERENCE_HATCH,
                             label="reference (not ranked)"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _params_plot(lb: Leaderboard) -> bytes | None:
    tasks = _params_tasks(lb)
    if not tasks:
        return None
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for i, readout in enumerate(lb.task_readouts(task)):
            pts = []
            for model in lb.task_models(task, readout):
                g = lb.group(task, model, readout)
                if model in lb.params and task.primary in g.metrics:
                    pts.append((lb.params[model], g, model))
            if not pts:
                continue
            pts.sort(key=lambda p: (p[0], p[2]))
            errors = list(zip(*(error_bar(g, task.primary) for _, g, _ in pts)))
            ax.errorbar([x for x, _, _ in pts], [g.metrics[task.primary].mean for _, g, _ in pts], yerr=errors,
                        fmt="o", capsize=3, color=f"C{i}", label=f"{readout} readout")
            for x, g, model in pts:
                ax.annotate(_label(lb, model), (x, g.metrics[task.primary].mean), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        xs = [lb.params[g.model] for g in lb.groups if (g.task, g.dataset) == task.key and g.model in lb.params]
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_compact))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("encoder parameters")
        ax.set_ylabel(f"{task.primary} {arrow(task.higher[task.primary])}")
        ax.set_title(task_label(lb, task))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    return _png(fig)


def _layer_plot(lb: Leaderboard, task: TaskColumn) -> bytes | None:
    panels = [(r, lb.curves[(*task.key, r)]) for r in lb.task_readouts(task) if (*task.key, r) in lb.curves]
    if not panels:
        return None
    fig = Figure(figsize=(4.6 * len(panels), 3.6), layout="constrained")
    fig.suptitle("score of the best held-out head at each layer: test (solid), held-out clips (dashed)", fontsize=9)
    for k, (readout, curves) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for i, (model, curve) in enumerate(sorted(curves.items())):
            depth, val, test = zip(*curve)
            ax.plot(depth, test, "o-", color=f"C{i}", label=_label(lb, model))
            ax.plot(depth, val, "s--", color=f"C{i}", alpha=0.6, markersize=4)
        ax.set_xlabel("relative depth of the layer read (blocks applied / blocks)")
        ax.set_ylabel(f"{task.primary} {arrow(task.higher[task.primary])}")
        ax.set_title(f"{task.task} ({task.dataset}), {readout} readout")
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    return _png(fig)


def layer_plot_path(task: TaskColumn) -> str:
    return f"plots/layers__{slug(task.task)}__{slug(task.dataset)}.png"


def headline_rows(lb: Leaderboard) -> list[str]:
    """The headline's rows, top to bottom: the models by the first overview's order, then the references."""
    order = [r.model for readout in lb.readouts for r in lb.overview(readout)]
    models = list(dict.fromkeys(order + lb.models))
    return [m for m in models if m not in lb.references] + lb.reference_order(models)


def _headline(lb: Leaderboard) -> bytes | None:
    panels = [(t, lb.task_readouts(t)[0]) for t in lb.tasks if lb.task_readouts(t)]
    rows = headline_rows(lb)
    if not panels or not rows:
        return None
    n_models = sum(m not in lb.references for m in rows)
    fig = Figure(figsize=(min(13.5, 2.0 * len(panels) + 1.8), 0.32 * len(rows) + 1.3), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (task, readout) in zip(axes, panels):
        for y, model in enumerate(rows):
            g = lb.group(task, model, readout)
            if g is None or task.primary not in g.metrics:
                continue
            ref = model in lb.references
            low, high = error_bar(g, task.primary)
            ax.errorbar(g.metrics[task.primary].mean, y, xerr=[[low], [high]], fmt="s" if ref else "o", capsize=2,
                        color="0.55" if ref else "C0", markersize=4)
        if 0 < n_models < len(rows):
            ax.axhline(n_models - 0.5, color="0.5", linestyle="--", linewidth=0.8)
        ax.set_title(f"{task.task} ({readout})\n{task.primary} {arrow(task.higher[task.primary])}", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_yticks(range(len(rows)), [_label(lb, m) for m in rows], fontsize=8)
    axes[0].invert_yaxis()
    return _png(fig)


def task_plot_path(task: TaskColumn) -> str:
    return f"plots/{slug(task.task)}__{slug(task.dataset)}.png"


def _params_tasks(lb: Leaderboard) -> list[TaskColumn]:
    return [t for t in lb.tasks if any(g.model in lb.params for g in lb.groups if (g.task, g.dataset) == t.key)]


def plot_paths(lb: Leaderboard) -> list[str]:
    """The paths :func:`plots` produces, without drawing anything."""
    headline = [HEADLINE] if lb.tasks and headline_rows(lb) else []
    layers = [layer_plot_path(t) for t in lb.tasks if any((*t.key, r) in lb.curves for r in lb.task_readouts(t))]
    return sorted([task_plot_path(t) for t in lb.tasks] + headline + layers
                  + (["plots/params.png"] if _params_tasks(lb) else []))


def plots(lb: Leaderboard) -> dict[str, bytes]:
    """{relative path under the output directory: PNG bytes}, sorted by path."""
    out: dict[str, bytes] = {}
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC)
        for task in lb.tasks:
            out[task_plot_path(task)] = _task_bars(lb, task)
            if (layers := _layer_plot(lb, task)) is not None:
                out[layer_plot_path(task)] = layers
        if (headline := _headline(lb)) is not None:
            out[HEADLINE] = headline
        params = _params_plot(lb)
        if params is not None:
            out["plots/params.png"] = params
    return dict(sorted(out.items()))
