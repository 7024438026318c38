"""Name -> object registries for tasks, model families, datasets and readouts, timm-style.

Built-ins register themselves by decorator when their module is imported; a model name resolves
here, once, through the family that claims it (:func:`resolve_model`); third-party tasks
are discovered through the entry-point group ``frozen4d.tasks`` (each entry point names a
module, or an object, whose import registers the task). A plugin that fails to import is
reported by name with its error and the other tasks stay usable.
"""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from bench.errors import UserError

T = TypeVar("T")

ENTRY_POINT_GROUP = "frozen4d.tasks"


class UnknownNameError(UserError, KeyError):
    """Raised for a name no registry entry answers to; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one readable line
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of constructors, filled by the ``register`` decorator."""

    def __init__(self, kind: str, packages: tuple[str, ...] = (), on_register: Callable[[T], Any] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._packages = packages  # these modules, and every public module (not subpackage) of these packages
        self._loaded = False
        self._on_register = on_register  # e.g. store a task's typed config node

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (default: its ``name`` attribute, else its
        ``__name__``)."""
        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            if self._on_register is not None:
                self._on_register(obj)
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for package in self._packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
                if not info.name.startswith("_") and not info.ispkg:
                    importlib.import_module(f"{package}.{info.name}")
        if self.kind == "task":
            load_plugins()

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def values(self) -> list[T]:
        self._load()
        return [self._entries[name] for name in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


PLUGIN_ERRORS: dict[str, str] = {}


def load_plugins() -> dict[str, str]:
    """Import every ``frozen4d.tasks`` entry point; return {plugin name: error} for failures."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in PLUGIN_ERRORS:
            continue
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not take the built-in tasks down
            PLUGIN_ERRORS[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"frozen4d task plugin {ep.name!r} ({ep.value}) failed to import: "
                          f"{PLUGIN_ERRORS[ep.name]}", RuntimeWarning, stacklevel=2)
    return PLUGIN_ERRORS


def _store_task_config(task_cls: Any) -> None:
    """A registered task's typed hydra node ``task/<name>`` (imported here: bench.task imports this module)."""
    importlib.import_module("bench.task").register_task_config(task_cls)


def _store_readout_config(readout_cls: Any) -> None:
    """A registered readout's typed hydra node ``readout/<name>`` (bench.readouts imports this module)."""
    importlib.import_module("bench.readouts").register_readout_config(readout_cls)


TASKS: Registry[Any] = Registry("task", packages=("tasks",), on_register=_store_task_config)
DATASETS: Registry[Any] = Registry("dataset", packages=("bench.data",))
READOUTS: Registry[Any] = Registry("readout", packages=("bench.readouts", "bench.propagation"),
                                   on_register=_store_readout_config)
MODELS: Registry[Any] = Registry("model family", packages=("bench.models",))


def model_families() -> list[Any]:
    """One instance of each registered model family, in the order they claim names."""
    return sorted((family() for family in MODELS.values()), key=lambda family: (family.order, family.name))


def resolve_model(name: Any) -> Any:
    """The :class:`bench.models.family.Model` that ``name`` means: the first family (by ``order``)
    that claims it; every model name in the harness, pretraining and the leaderboard resolves here."""
    name = str(name)  # hydra parses model.name=1 or =inf as a number
    for family in model_families():
        if (model := family.parse(name)) is not None:
            return model
    raise UnknownNameError(f"unknown model {name!r}: no model family claims it")
