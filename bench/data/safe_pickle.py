"""A restricted unpickler for dataset files that come as pickles (TAP-Vid).

A pickle is a program: ``pickle.load`` will call any importable function the file names
(``os.system``, ``builtins.eval``, ...). ``safe_load`` runs the file through an Unpickler whose
``find_class`` resolves only the callables numpy needs to rebuild arrays, dtypes and scalars
(plus ``_codecs.encode`` restricted to latin-1, which is how protocol 0-2 pickles spell a bytes
literal), and refuses every other global before anything is called. Containers, strings, bytes and numbers need no
global and load as usual. Persistent ids and extension codes are refused too.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bench.errors import DatasetError
from bench.data.video_io import check_file, one_line


class UnsafePickleError(DatasetError):
    """A pickle that references anything beyond numpy array reconstruction."""


def _latin1_bytes(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """What protocol 0-2 pickles written by Python 3 use to store ``bytes`` (numpy array buffers):
    ``_codecs.encode(text, 'latin1')``. Only that codec is honoured, so no codec machinery runs."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not a bytes literal")
    return text.encode("latin1")


def _numpy_callables() -> dict[tuple[str, str], Any]:
    """The allow-list: (module, name) -> object, resolved here from numpy itself (never by
    importing whatever module a file names)."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed = {
        ("multiarray", "_reconstruct"): multiarray._reconstruct,  # ndarray.__reduce__ (protocols 0-4)
        ("multiarray", "scalar"): multiarray.scalar,              # numpy scalars (np.float32(1.0), ...)
        ("numeric", "_frombuffer"): numeric._frombuffer,          # ndarray.__reduce_ex__ (protocol 5)
    }
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                       ("_codecs", "encode"): _latin1_bytes}
    for package in ("numpy.core", "numpy._core"):  # files written under numpy 1.x and 2.x
        for (module, name), obj in allowed.items():
            out[(f"{package}.{module}", name)] = obj
    return out


ALLOWED = _numpy_callables()


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals in ``ALLOWED``."""

    def __init__(self, file: BinaryIO, source: Any = "<pickle>"):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = ALLOWED.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to unpickle: the file references {module}.{name}, which is not "
                f"numpy array reconstruction (only numpy arrays, dtypes and scalars are allowed); "
                f"a dataset pickle never needs it, so the file is not what it claims to be")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing to unpickle: the file uses persistent ids")


def safe_load(path: str | Path) -> Any:
    """Unpickle a file with ``SafeUnpickler``; every failure is a one-line ``DatasetError`` naming it."""
    path = check_file(Path(path), "pickle")
    with open(path, "rb") as fh:
        return safe_loads_from(fh, path)


def safe_loads(data: bytes, source: Any = "<bytes>") -> Any:
    return safe_loads_from(io.BytesIO(data), source)


def safe_loads_from(fh: BinaryIO, source: Any) -> Any:
    try:
        return SafeUnpickler(fh, source).load()
    except DatasetError:
        raise
    except (pickle.UnpicklingError, EOFError) as exc:
        raise DatasetError(f"{source}: corrupt or truncated pickle ({one_line(exc) or type(exc).__name__})") from None
    except Exception as exc:  # malformed opcodes / arguments surface as many exception types
        raise DatasetError(f"{source}: malformed pickle ({type(exc).__name__}: {one_line(exc)})") from None
