"""The full training state on disk: atomic ``torch.save``, ``weights_only`` load, RNG capture.

Everything is stored as tensors and plain Python types so that ``torch.load(weights_only=True)``
reads it back (no pickled objects are ever trusted). Writes go to a temp file in the same
directory, are fsynced and renamed into place: a crash (even SIGKILL) mid-write leaves the
previous state intact. A failed write, an unreadable state and a diverged run are one-line user
errors (``StateWriteError``, ``StateError``, ``DivergedError``); none of them writes a state.
"""
from __future__ import annotations

import pickle
import random
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import ConfigError, UserError
from bench.files import atomic_stream, atomic_write_bytes
from bench.models.checkpoint import torch_load_problem


class StateError(UserError, RuntimeError):
    """A training state that cannot be resumed from: unreadable, truncated, or holding objects other than tensors."""


class StateWriteError(UserError, OSError):
    """A file of a run that could not be written (disk full, permissions); the earlier file is unchanged."""


class DivergedError(UserError, FloatingPointError):
    """The loss or the weights became NaN or Inf: the learning rate is too high for the run."""


@contextmanager
def writing(path: Path, what: str, kept: str = "") -> Iterator[None]:
    """Re-raise a failed write of ``path`` (an OSError, or torch's writer error on a full disk) as one
    StateWriteError line naming the file and what of it is ``kept`` (default: an atomic write keeps
    any earlier file)."""
    try:
        yield
    except UserError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except RuntimeError as exc:
        if "inline_container.cc" not in str(exc) and "PytorchStreamWriter" not in str(exc):
            raise
        reason = f"torch.save failed: {str(exc).split('] . ')[-1].splitlines()[0]}; is the disk full?"
    else:
        return
    raise StateWriteError(f"{path}: cannot write the {what} ({reason}); "
                          f"{kept or f'any earlier {what} there is unchanged'}")


def atomic_torch_save(obj: Any, path: Path, what: str = "training state") -> None:
    """``torch.save`` through a fsynced temp file renamed into place; a failure leaves no temp file."""
    with writing(Path(path), what), atomic_stream(path) as f:
        torch.save(obj, f)


def atomic_write(path: Path, data: bytes, what: str) -> None:
    """``atomic_write_bytes`` with a failure as one StateWriteError line naming the file."""
    with writing(path, what):
        atomic_write_bytes(path, data)


START_OVER = "delete it (or pass resume=false) to start over"


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state saved at ``path``, read without running any pickled code; a file that does
    not hold one is a StateError naming it."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise StateError(f"{path}: cannot read the training state ({exc.strerror or exc})") from exc
    except Exception as exc:  # torch raises assorted types for a damaged file; none is our bug
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
            raise StateError(f"{path}: holds objects other than tensors, refused without running them: "
                             f"{torch_load_problem(exc)}; {START_OVER}") from exc
        raise StateError(f"{path}: truncated or corrupt training state ({load_failure(exc)}); {START_OVER}") from exc
    if not isinstance(state, dict):
        raise StateError(f"{path}: holds a {type(state).__name__}, not a training state; {START_OVER}")
    return state


def load_failure(exc: Exception) -> str:
    """The exception type and the first sentence of what ``torch.load`` said."""
    first = str(exc).strip().split(". ")[0].splitlines()
    return f"{type(exc).__name__}: {first[0]}" if first and first[0] else type(exc).__name__


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every parameter of ``model`` is finite (checked before a state is saved)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def diverged(name: str, what: str, step: int, lr: float, state_path: Path, saved_step: int | None) -> DivergedError:
    """The error of run ``name`` when ``what`` ("the loss became nan", ...) at update ``step``; the state
    this run last saved (at the start of update ``saved_step``, None: none) predates it and stays as it was."""
    rerun = "rerun with a lower train.lr"
    if saved_step is not None:
        rerun += f" and resume=false ({state_path} holds the last good state, at the start of step {saved_step})"
    return DivergedError(f"{name}: {what} at step {step}: training diverged at train.lr={lr:g}; {rerun}")


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
