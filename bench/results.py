"""Result records: one JSON file per (task, dataset, model, readout, seed), written atomically.

Schema (version 2): schema_version, task, dataset, split, model, checkpoint_sha256, readout,
seed, metrics {name: float}, directions {name: higher_is_better}, primary_metric,
higher_is_better, config (resolved), git_commit (``-dirty`` when tracked files differ from it),
wall_time_s, hardware, versions (python, frozen4d and its declared dependencies), created; and,
new in version 2, what a reader needs to trust the number:
- ``per_clip`` {"values": [...], "weights": [...]}: the primary metric of every test clip, in
  split order, such that the primary metric is the weighted mean Σ w·v / Σ w (weights are the
  clip's share of a pooled metric: valid pixels, scored box pairs; 1 for per-clip means). The
  leaderboard bootstraps over these clips; two records on one split pair clip by clip.
  A version-2 record always has them: a run that scored no clip is not written.
- ``train_metrics``: the same metrics on the first train clips (as many as the test split has,
  at most 256): the train–test gap;
- ``loss_tail``: the readout's training loss, averaged per tenth of the run (empty: no SGD);
- ``flags``: warnings about the fit ('loss_still_falling', 'train_test_gap');
- ``task_version``: the task's ``version`` (``bench.task.Task``; 1 when absent), bumped when a
  change alters what its metrics mean, so old and new numbers are never pooled;
- ``selection`` (a run of a probe grid, ``bench.grid``; empty for one head): ``metric``,
  ``higher_is_better``, ``val_fraction``, ``val_clips``, ``heads`` (each head's layer, relative
  depth, hyperparameters, held-out score ``val`` and test score ``test``), ``chosen`` (the head
  whose test metrics the record holds: best on the held-out clips) and ``best_on_test`` (for
  comparison with protocols that choose on the reported split; never used to rank).
Version-1 records (no per-clip values) are still read.

Every number a record holds (metrics, train metrics, per-clip values and weights) is finite and
within ±``MAX_MAGNITUDE``: ``write_record`` refuses a degenerate run's record (and keeps the earlier
one), ``read_record`` refuses such a file.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench.errors import UserError
from bench.files import atomic_write_bytes

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
# No metric is this large; below it the squares and weighted sums the leaderboard takes stay finite in float64.
MAX_MAGNITUDE = 1e100


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
    per_clip: dict[str, list[float]] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    loss_tail: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    task_version: int = 1  # the task's ``version``: the leaderboard never pools records of two versions
    selection: dict[str, Any] = field(default_factory=dict)  # how a grid's head was chosen (empty: one head)

    @property
    def filename(self) -> str:
        return record_filename(self.task, self.dataset, self.model, self.readout, self.seed)


def record_filename(task: str, dataset: str, model: str, readout: str, seed: int) -> str:
    """One flat file per evaluation; the ``/`` of ``timm/<arch>`` model names becomes ``-``."""
    return f"{task}__{dataset}__{model.replace('/', '-')}__{readout}__seed{seed}.json"


class RecordError(UserError, ValueError):
    """A record that is not valid: a file that does not parse, or numbers that cannot be trusted."""


class RecordWriteError(UserError, OSError):
    """A record that could not be written (disk full, permissions); the old file is untouched."""


REQUIRED = ("task", "dataset", "split", "model", "checkpoint_sha256", "readout", "seed", "metrics",
            "directions", "primary_metric", "higher_is_better")


def git_commit() -> str:
    """HEAD of the checkout this code runs from, with ``-dirty`` if tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return f"{commit}-dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else commit
    except (OSError, subprocess.SubprocessError):
        return ""


def package_versions() -> dict[str, str]:
    """Python, frozen4d and every runtime dependency frozen4d declares (those installed)."""
    try:
        requires = metadata.requires("frozen4d") or []
        versions = {"frozen4d": metadata.version("frozen4d")}
    except metadata.PackageNotFoundError:  # running from a checkout that was never pip-installed
        requires, versions = ["torch", "numpy"], {}
    versions["python"] = platform.python_version()
    for req in requires:
        name = re.match(r"[A-Za-z0-9_.-]+", req)
        if name and "extra ==" not in req:
            try:
                versions[name.group()] = metadata.version(name.group())
            except metadata.PackageNotFoundError:
                continue
    versions["torch"] = torch.__version__  # with its build label (+cu130, +cpu): the metadata drops it
    return versions


def environment() -> dict[str, Any]:
    """Git commit, hardware and package versions, for reproducibility."""
    hardware = {"machine": platform.machine(), "processor": platform.processor(), "platform": platform.platform(),
                "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return {"git_commit": git_commit(), "hardware": hardware, "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_record(record: ResultRecord, results_dir: str | Path) -> Path:
    """Atomically write ``record`` under ``results_dir``; return its path.

    A record with a number that cannot be trusted (see ``record_problem``) raises ``RecordError``
    and a failed write ``RecordWriteError``, both one line naming the file; either way any earlier
    record with the same name stays as it was.
    """
    path = Path(results_dir) / record.filename
    data = asdict(record)
    problem = record_problem(data)
    if problem:
        raise RecordError(f"{path}: refusing to write the record: {problem}; any earlier record there is unchanged")
    try:
        atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise RecordWriteError(f"{path}: cannot write the result record ({exc.strerror or exc}); "
                               f"any earlier record there is unchanged") from exc
    return path


def is_number(x: Any) -> bool:
    """An int or float (not a bool), finite and within ±MAX_MAGNITUDE (NaN fails every comparison)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) <= MAX_MAGNITUDE


def numbers_problem(name: str, mapping: Any) -> str | None:
    """What is wrong with a {metric: number} block of a record, or None."""
    if not isinstance(mapping, dict):
        return f"{name} is {type(mapping).__name__}, expected a mapping of metric -> number"
    bad = {k: v for k, v in mapping.items() if not is_number(v)}
    return f"{name} {bad} are not finite numbers within ±{MAX_MAGNITUDE:g}" if bad else None


def per_clip_problem(per_clip: Any, required: bool) -> str | None:
    """What is wrong with a record's ``per_clip`` block, or None ({} is fine unless ``required``:
    a version-1 record has none)."""
    if per_clip == {}:
        return "per_clip is missing: a version-2 record holds the primary metric of every test clip" if required else None
    if not isinstance(per_clip, dict) or set(per_clip) != {"values", "weights"}:
        return "per_clip must be {'values': [...], 'weights': [...]}"
    values, weights = per_clip["values"], per_clip["weights"]
    if not (isinstance(values, list) and isinstance(weights, list)) or len(values) != len(weights):
        return "per_clip values and weights must be lists of equal length"
    if not values:
        return "per_clip is empty: the run scored no test clip"
    for name, xs in (("values", values), ("weights", weights)):
        i = next((i for i, x in enumerate(xs) if not is_number(x) or (name == "weights" and x < 0)), None)
        if i is not None:
            allowed = "non-negative " if name == "weights" else ""
            return f"per_clip {name}[{i}] is {xs[i]!r}, expected a finite {allowed}number within ±{MAX_MAGNITUDE:g}"
    if sum(weights) <= 0:
        return "per_clip weights are all 0: no clip counts"
    return None


def fields_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the types of a record's identifying fields, or None."""
    for name in ("task", "dataset", "split", "model", "readout", "primary_metric"):
        if not isinstance(data[name], str) or not data[name]:
            return f"field {name!r} is not a non-empty string"
    for name in ("seed", "task_version"):
        if not isinstance(data.get(name, 1), int) or isinstance(data.get(name), bool):
            return f"{name} {data[name]!r} is not an integer"
    if not isinstance(data["higher_is_better"], bool):
        return f"higher_is_better {data['higher_is_better']!r} is not a boolean"
    if not isinstance(data["directions"], dict) or not all(isinstance(v, bool) for v in data["directions"].values()):
        return "directions is not a mapping of metric -> boolean"
    flags = data.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        return "flags is not a list of strings"
    return None


def record_problem(data: dict[str, Any]) -> str | None:
    """What makes ``data`` (a record as a JSON object) not a valid record, or None: the one
    validator of records, for ``write_record``, ``read_record`` and the leaderboard."""
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        return f"missing fields {missing}"
    if data.get("schema_version") not in READABLE_VERSIONS:
        return f"schema_version {data.get('schema_version')!r}, expected one of {list(READABLE_VERSIONS)}"
    if problem := fields_problem(data):
        return problem
    problem = numbers_problem("metrics", data["metrics"]) or numbers_problem("train_metrics",
                                                                             data.get("train_metrics", {}))
    if problem:
        return problem
    if not isinstance(data["primary_metric"], str) or data["primary_metric"] not in data["metrics"]:
        return f"primary metric {data['primary_metric']!r} not among its metrics"
    return (per_clip_problem(data.get("per_clip", {}), required=data["schema_version"] >= 2)
            or selection_problem(data.get("selection", {})))


def selection_problem(selection: Any) -> str | None:
    """What is wrong with a record's ``selection`` block, or None ({}: a one-head run)."""
    if selection == {}:
        return None
    heads = selection.get("heads") if isinstance(selection, dict) else None
    if not isinstance(heads, list) or not heads or not all(isinstance(h, dict) for h in heads):
        return "selection must hold a non-empty list of heads"
    for i, head in enumerate(heads):
        if problem := numbers_problem(f"selection head {i}", head):
            return problem
    for key in ("chosen", "best_on_test"):
        index = selection.get(key)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(heads):
            return f"selection {key} {index!r} is not the index of one of its {len(heads)} heads"
    return None


def read_record(path: str | Path, name: str | None = None) -> ResultRecord:
    """Parse and validate one record; raises RecordError naming the file (``name``, default its
    file name) and the problem."""
    path = Path(path)
    name = name or path.name
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{name}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RecordError(f"{name}: expected a JSON object")
    problem = record_problem(data)
    if problem:
        raise RecordError(f"{name}: {problem}")
    known = set(ResultRecord.__dataclass_fields__)
    return ResultRecord(**{k: v for k, v in data.items() if k in known})


def read_records(results_dir: str | Path) -> tuple[list[tuple[str, ResultRecord]], list[str]]:
    """Every valid record under ``results_dir`` (recursively, sorted by path) as (path relative to
    ``results_dir``, record), and a one-line message naming each file that is not one and why."""
    root = Path(results_dir)
    records, errors = [], []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).as_posix()
        try:
            records.append((rel, read_record(path, rel)))
        except RecordError as exc:
            errors.append(str(exc))
    return records, errors
