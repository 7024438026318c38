"""Metrics of a pretraining run: a JSONL log (one record per logged step), a summary plot, and
the CSV + Markdown tables that the analysis tools (``pretrain.analyze``) write.

A log record averages each metric over the steps since the previous record (the trainer's
``Window``). The trainers save their window in the training state, so that a resumed run logs
the same averages, and the same lines, as an uninterrupted one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pretrain.state import atomic_write, writing

Window = dict[str, list[float]]  # metric -> its values at each step since the last log record


class MetricsLog:
    """Append-only JSONL; on resume, records past the resumed step are dropped (they belong to
    the part of the run that was lost, as does a last line that a kill cut before its newline) so
    the log of a resumed run equals an uninterrupted one."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        keep: list[str] = []
        if resume_step is not None and self.path.exists():
            text = self.path.read_text()
            keep = [line for line in text[:text.rfind("\n") + 1].splitlines()
                    if line.strip() and json.loads(line)["step"] < resume_step]
        atomic_write(self.path, "".join(line + "\n" for line in keep).encode(), "metrics log")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kept = "its records so far are kept (a resumed run drops a cut line)"
        with writing(self.path, "metrics log", kept), open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def saved_window(state: Mapping[str, Any], path: Path, rank: int = 0, world_size: int = 1) -> Window:
    """This rank's window from a training state saved at ``path`` (``state["metrics_window"]``: one
    per rank). A state without one for this world size (saved by an older version, or by another
    number of ranks) resumes with an empty window, and says so on stderr: the first record logged
    after the resume then averages only the steps since."""
    windows = state.get("metrics_window")
    if windows is not None and len(windows) == world_size:
        return {k: list(v) for k, v in windows[rank].items()}
    if rank == 0:
        why = "it predates them" if windows is None else f"saved by {len(windows)} rank(s), resumed by {world_size}"
        print(f"warning: {path} holds no unlogged metrics for this run ({why}); the first metrics.jsonl record "
              f"after step {state['step']} averages only the steps since the resume", file=sys.stderr)
    return {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss (log scale), frozen blocks, and effective rank / feature std against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    loss = [r["loss"] for r in records]
    axes[0].plot(steps, loss, color="C0")
    if all(v > 0 and math.isfinite(v) for v in loss):
        axes[0].set_yscale("log")
    axes[0].set_ylabel("loss")
    axes[1].step(steps, [r["frozen"] for r in records], where="post", color="C1", label="frozen blocks")
    axes[1].step(steps, [r["target_block"] for r in records], where="post", color="C2", linestyle="--",
                 label="target block (-1: pixels)")
    axes[1].set_ylabel("blocks")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].plot(steps, [r["eff_rank"] for r in records], color="C3")
    axes[2].set_ylabel("effective rank", color="C3")
    twin = axes[2].twinx()
    twin.plot(steps, [r["feat_std"] for r in records], color="C4", linestyle=":")
    twin.set_ylabel("feature std", color="C4")
    axes[2].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, png.getvalue(), "metrics plot")


def write_table(header: list[str], rows: list[list[Any]], stem: Path) -> str:
    """Write ``rows`` as ``<stem>.csv`` and ``<stem>.md`` (floats to 4 significant digits, None
    as empty / "-") and return the Markdown, for analysis tools that print what they save."""

    def cell(v: Any, missing: str) -> str:
        return missing if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([header, *[[cell(v, "") for v in row] for row in rows]])
    lines = [header, ["---"] * len(header), *[[cell(v, "-") for v in row] for row in rows]]
    markdown = "".join("| " + " | ".join(line) + " |\n" for line in lines)
    stem.with_suffix(".md").write_text(markdown)
    return markdown
