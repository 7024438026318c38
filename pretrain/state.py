"""The full training state on disk: atomic ``torch.save``, ``weights_only`` load, RNG capture.

Everything is stored as tensors and plain Python types so that ``torch.load(weights_only=True)``
reads it back (no pickled objects are ever trusted). Writes go to a temp file in the same
directory, are fsynced and renamed into place: a crash (even SIGKILL) mid-write leaves the
previous state intact.
"""
from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import ConfigError


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def check_resumable(path: Path, state: Mapping[str, Any], name: str, version: int,
                    saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse (ConfigError naming the file and every differing setting) to resume from a ``state``
    that is not of the run ``name`` at ``version``, or whose settings ``saved`` are not this
    config's ``current`` ones."""
    if state.get("version") != version or state.get("name") != name:
        raise ConfigError(f"{path}: state of {state.get('name')!r} (version {state.get('version')}), not of "
                          f"{name!r} (version {version}); remove it or pass resume=false")
    differ = sorted(k for k in {*saved, *current} if saved.get(k) != current.get(k))
    if differ:
        what = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
        raise ConfigError(f"{path}: saved run differs from this config ({what}); remove the run directory "
                          "or pass resume=false to start over")


def capture_rng() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python global RNG states, as plain data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
