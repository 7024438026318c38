"""The probe-grid side of a board: which head each row was read with, and the layer curves.

A record of a probe grid (``bench.grid``) keeps every head's held-out and test score, the head
chosen on the held-out clips and the head best on the test split. The board shows the chosen head
by the grid axes that vary (layer, learning rate, L2 weight), names the test-best head beside it
where it differs (for comparison with protocols that pick on the test set, never ranked), and
draws, per (task, dataset, readout), each model's score against relative depth.
"""
from __future__ import annotations

from statistics import fmean

from bench.grid import choose
from bench.results import ResultRecord

CurveKey = tuple[str, str, str]  # task, dataset, readout
Curve = list[tuple[float, float, float]]  # (relative depth, held-out score, test score), by depth
SCORES = ("val", "test", "depth")  # a head's entries that are not grid axes
AXES = ("layer", "lr", "weight_decay", "alpha")  # the order a head is named in (other axes after, by name)
FIXED = "fixed"  # the label of a record read with the one head of its config, nothing chosen
NO_FEATURES = "—"  # the label of a row without features (``blind``): no head to choose


def head_text(head: dict, axes: list[str]) -> str:
    """``layer 6, lr 0.003``: one head by the grid axes that vary."""
    return ", ".join(f"{axis} {head[axis]:g}" for axis in axes)


def grid_axes(heads: list[dict]) -> list[str]:
    """The settings that differ between a grid's heads, layer first (``AXES``)."""
    order = {axis: i for i, axis in enumerate(AXES)}
    keys = sorted((k for k in heads[0] if k not in SCORES), key=lambda k: (order.get(k, len(AXES)), k))
    return [k for k in keys if len({repr(h.get(k)) for h in heads}) > 1]


def head_label(record: ResultRecord) -> str:
    """The head ``record`` was read with: the chosen head of its grid, with the test-best head in
    parentheses where that differs; ``FIXED`` for a record of one head."""
    selection = record.selection
    if not selection:
        return FIXED
    heads = selection["heads"]
    axes = grid_axes(heads)
    chosen = head_text(heads[selection["chosen"]], axes) or "the one head"
    if selection["best_on_test"] == selection["chosen"]:
        return chosen
    return f"{chosen} (best on test: {head_text(heads[selection['best_on_test']], axes)})"


def heads_label(records: list[ResultRecord]) -> str:
    """A group's heads: one label when its seeds agree, else each seed's, in seed order."""
    labels = [head_label(r) for r in records]
    return labels[0] if len(set(labels)) == 1 else " / ".join(labels)


def layer_curve(records: list[ResultRecord]) -> Curve:
    """One group's layer curve from its records' probe grids: at each relative depth, the held-out
    and test score of the head best on the held-out clips at that depth, averaged over seeds; []
    when its grids vary no layer."""
    points: dict[float, list[tuple[float, float]]] = {}
    for r in records:
        heads, higher = r.selection.get("heads", []), r.selection.get("higher_is_better", r.higher_is_better)
        for depth in sorted({h["depth"] for h in heads}):
            at = [h for h in heads if h["depth"] == depth]
            best = at[choose([h["val"] for h in at], higher)]
            points.setdefault(depth, []).append((best["val"], best["test"]))
    if len(points) < 2:
        return []
    return [(d, fmean(v for v, _ in vt), fmean(t for _, t in vt)) for d, vt in sorted(points.items())]


def layer_curves(grouped: dict[tuple[str, str, str, str], list[ResultRecord]]) -> dict[CurveKey, dict[str, Curve]]:
    """{(task, dataset, readout): {model: its layer curve}} of every group whose grid varies the layer."""
    curves: dict[CurveKey, dict[str, Curve]] = {}
    for (task, dataset, model, readout), records in grouped.items():
        if curve := layer_curve(records):
            curves.setdefault((task, dataset, readout), {})[model] = curve
    return curves
