"""Result records: one JSON file per (task, dataset, model, readout, seed), written atomically.

Schema (version 1): schema_version, task, dataset, split, model, checkpoint_sha256, readout,
seed, metrics {name: float}, directions {name: higher_is_better}, primary_metric,
higher_is_better, config (resolved), git_commit, wall_time_s, hardware, versions, created.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.models.checkpoint import atomic_write_bytes

SCHEMA_VERSION = 1


@dataclass
class ResultRecord:
    task: str
    dataset: str
    split: str
    model: str
    checkpoint_sha256: str
    readout: str
    seed: int
    metrics: dict[str, float]
    directions: dict[str, bool]
    primary_metric: str
    higher_is_better: bool
    config: dict[str, Any] = field(default_factory=dict)
    git_commit: str = ""
    wall_time_s: float = 0.0
    hardware: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def filename(self) -> str:
        return f"{self.task}__{self.dataset}__{self.model}__{self.readout}__seed{self.seed}.json"


class RecordError(ValueError):
    """A result file that is not a valid record."""


REQUIRED = ("task", "dataset", "split", "model", "checkpoint_sha256", "readout", "seed", "metrics",
            "directions", "primary_metric", "higher_is_better")


def environment() -> dict[str, Any]:
    """Git commit, hardware and package versions, for reproducibility."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    import numpy
    import timm

    hardware = {"machine": platform.machine(), "processor": platform.processor(),
                "cpus": torch.get_num_threads(),
                "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                "timm": timm.__version__}
    return {"git_commit": commit, "hardware": hardware, "versions": versions,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_record(record: ResultRecord, results_dir: str | Path) -> Path:
    """Atomically write ``record`` under ``results_dir``; return its path."""
    bad = {k: v for k, v in record.metrics.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise RecordError(f"result {record.filename}: non-finite metrics {bad}")
    path = Path(results_dir) / record.filename
    atomic_write_bytes(path, (json.dumps(asdict(record), indent=2, sort_keys=True) + "\n").encode())
    return path


def read_record(path: str | Path) -> ResultRecord:
    """Parse and validate one record; raises RecordError naming the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path.name}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RecordError(f"{path.name}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise RecordError(f"{path.name}: missing fields {missing}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(f"{path.name}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if not isinstance(data["metrics"], dict) or data["primary_metric"] not in data["metrics"]:
        raise RecordError(f"{path.name}: primary metric {data['primary_metric']!r} not among its metrics")
    known = set(ResultRecord.__dataclass_fields__)
    return ResultRecord(**{k: v for k, v in data.items() if k in known})


def read_records(results_dir: str | Path) -> tuple[list[ResultRecord], list[str]]:
    """Every valid record under ``results_dir`` (recursively, sorted by path) and the errors of the rest."""
    records, errors = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            records.append(read_record(path))
        except RecordError as exc:
            errors.append(str(exc))
    return records, errors
