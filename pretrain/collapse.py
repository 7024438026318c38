"""Collapse monitors on a fixed probe batch: feature standard deviation and effective rank.

Both are computed with the tokens of every probe clip as rows: ``feats`` [B, N, C] -> [B*N, C],
on the readout-depth features (what the benchmark's readouts see: ``feat_std``, ``eff_rank``)
and on the output of every block (``block_feat_std[i]``, ``block_eff_rank[i]`` for block
``i + 1``, 1-based), so that an analysis can tell which depths collapse and when. The second
half compares runs from their metrics logs (``python -m pretrain.analyze collapse``).

- feature std: per-channel standard deviation over tokens, averaged over channels; a
  collapsed encoder maps every token to (nearly) the same vector and this goes to 0.
- effective rank (Roy & Vetterli, 2007): ``exp(H(p))`` with ``p_k = s_k / sum(s)`` the
  normalised singular values of the (uncentred) feature matrix; between 1 and C.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from bench.errors import ConfigError
from bench.models.vit import VideoViT
from pretrain.metrics_log import read_metrics, write_table


def feature_std(feats: torch.Tensor) -> float:
    x = feats.reshape(-1, feats.shape[-1]).double()
    return float(x.std(dim=0).mean())


def effective_rank(feats: torch.Tensor, eps: float = 1e-12) -> float:
    x = feats.reshape(-1, feats.shape[-1]).double()
    s = torch.linalg.svdvals(x)
    p = s / (s.sum() + eps)
    entropy = -(p * torch.log(p + eps)).sum()
    return float(torch.exp(entropy))


@torch.no_grad()
def collapse_metrics(encoder: VideoViT, video: torch.Tensor) -> dict[str, float | list[float]]:
    """{feat_std, eff_rank} of the encoder's readout-depth features on a normalised clip batch,
    and {block_feat_std, block_eff_rank}: the same per block output (one forward pass)."""
    was_training = encoder.training
    encoder.eval()
    outs = [h.float() for h in encoder.forward_all(video)]
    encoder.train(was_training)
    readout = outs[encoder.readout_index]
    return {"feat_std": feature_std(readout), "eff_rank": effective_rank(readout),
            "block_feat_std": [feature_std(h) for h in outs[1:]],
            "block_eff_rank": [effective_rank(h) for h in outs[1:]]}


# ---------------------------------------------------------------------------- comparing runs
COMPARED = ("mae_t", "layerlock_t", "latent_nofreeze_t")
METRICS = {"feat_std": "feature std", "eff_rank": "effective rank"}


def read_runs(runs_dir: Path, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The metrics records of each named run under ``runs_dir`` (``<runs_dir>/<name>/metrics.jsonl``)."""
    runs = {}
    for name in names:
        path = Path(runs_dir) / name / "metrics.jsonl"
        if not path.parent.is_dir():
            raise ConfigError(f"run dir {path.parent} not found: pretrain it with "
                              f"`python -m pretrain.run model={name}` or pass --runs DIR")
        runs[name] = read_metrics(path) if path.exists() else []
        if not runs[name]:
            raise ConfigError(f"{path}: no metrics logged yet")
    return runs


def depths(runs: dict[str, list[dict[str, Any]]]) -> list[str | int]:
    """Feature depths to show: "readout" (always logged), then blocks 1..D where logged (runs
    started before per-block logging existed have only the readout)."""
    n = max((len(r.get("block_feat_std", ())) for records in runs.values() for r in records), default=0)
    return ["readout", *range(1, n + 1)]


def depth_label(depth: str | int) -> str:
    return depth if depth == "readout" else f"block {depth}"


def value(record: dict[str, Any], metric: str, depth: str | int) -> float | None:
    """``metric`` of a record at ``depth`` ("readout" or a 1-based block), None if not logged."""
    if depth == "readout":
        return record[metric]
    per_block = record.get(f"block_{metric}", [])
    return per_block[depth - 1] if depth <= len(per_block) else None


def plot_collapse(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Rows: feature std, effective rank; columns: readout features, then each block;
    a curve per run, against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = depths(runs)
    fig, axes = plt.subplots(len(METRICS), len(columns), figsize=(2.6 * len(columns) + 1, 5.5), squeeze=False,
                             sharex=True)
    for row, (metric, label) in enumerate(METRICS.items()):
        for col, depth in enumerate(columns):
            ax = axes[row, col]
            for name, records in runs.items():
                points = [(r["step"], v) for r in records if (v := value(r, metric, depth)) is not None]
                steps, values = zip(*points) if points else ((), ())
                ax.plot(steps, values, label=name)
            if row == 0:
                ax.set_title(depth_label(depth), fontsize=9)
            ax.set_ylabel(label if col == 0 else "")
            ax.set_xlabel("step" if row == len(METRICS) - 1 else "")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(runs: dict[str, list[dict[str, Any]]], out: Path) -> str:
    """``collapse.png`` and the table of end values (``collapse.csv`` / ``.md``); returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    plot_collapse(runs, out / "collapse.png")
    columns = depths(runs)
    header = ["model", "metric", "step", *map(depth_label, columns)]
    rows = [[name, metric, records[-1]["step"], *[value(records[-1], metric, d) for d in columns]]
            for name, records in runs.items() for metric in METRICS]
    return write_table(header, rows, out / "collapse")
