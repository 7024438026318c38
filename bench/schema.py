"""Typed hydra nodes derived from the Python that consumes them.

A task's options are the keyword arguments of its ``__init__``; a dataset's options are those of
its constructor (and of the base class it forwards ``**common`` to); the synthetic world's are the
fields of ``WorldConfig``. ``signature_node`` turns such a signature into a dataclass that hydra
stores as a structured node, so every key has a type checked when the config is composed
(``task.patch_px=abc`` is refused, naming the key) and the defaults are written once, in the
signature. ``Literal`` annotations become ``str`` keys whose choices ``literal_choices`` reports,
and ``Annotated[int, integer(1)]`` annotations carry the rule of a key's range (``rule_of``), so
``check_config`` can refuse a bad value before any work starts.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import pathlib
import types
import typing
from collections import abc
from typing import Annotated, Any, Callable, Dict, List, Literal, Optional, Union

import numpy as np

SIMPLE = (bool, int, float, str)
Rule = tuple[Callable[[Any], bool], str]  # (test, what the key allows)
INT64_MAX = 2**63 - 1  # seeds reach torch and numpy as int64
FLOAT32_MAX = float(np.finfo(np.float32).max)  # a Python float: comparing with it never overflows a cast
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32: smaller is 0 in a readout


def integer(at_least: int, at_most: int = INT64_MAX) -> Rule:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and at_least <= v <= at_most,
            f"an integer in [{at_least}, {at_most}]")


def number(above: float = 0.0, strict: bool = True) -> Rule:
    """A finite number above ``above`` (or equal, not ``strict``) that float32 holds: within its range,
    and a positive one not below its smallest normal value."""
    def ok(v: Any) -> bool:
        real = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        in_float32 = real and abs(v) <= FLOAT32_MAX and (v == 0 or abs(v) >= FLOAT32_TINY)
        return in_float32 and (v > above if strict else v >= above)
    relation = ">" if strict else ">="
    return ok, f"a finite number {relation} {above:g} that float32 holds (magnitude in [1.2e-38, 3.4e38])"


def choice(options: tuple[Any, ...]) -> Rule:
    return (lambda v: v in options, f"one of {list(options)}")


def rule_of(hint: Any) -> Rule | None:
    """The rule a hint carries: its ``Annotated`` rule, else the choices of a ``Literal``, else None."""
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, tuple) and len(m) == 2 and callable(m[0])),
                    None) or rule_of(typing.get_args(hint)[0])
    choices = literal_choices(hint)
    return choice(choices) if choices else None


def node_type(hint: Any) -> Any:
    """The OmegaConf type of a Python type hint: simple types as they are, ``X | None`` as
    ``Optional[X]``, ``Literal`` and paths as ``str``, mappings and sequences as containers of
    ``Any``; anything OmegaConf cannot express (``int | Sequence[int]``) as ``Any``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return node_type(args[0])
    if hint in SIMPLE:
        return hint
    if hint is pathlib.Path or origin is Literal:
        return str
    if origin in (Union, types.UnionType):
        inner = [node_type(a) for a in args if a is not type(None)]
        kind = inner[0] if len(set(inner)) == 1 else Any
        return Optional[kind] if type(None) in args and kind is not Any else kind
    if origin in (dict, abc.Mapping) or hint is dict:
        return Dict[str, Any]
    if origin in (list, tuple, abc.Sequence) or hint in (list, tuple):
        return List[Any]
    return Any


def literal_choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` hint (also inside ``Optional`` or ``Annotated``), else None."""
    if typing.get_origin(hint) is Annotated:
        return literal_choices(typing.get_args(hint)[0])
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        found = [c for a in typing.get_args(hint) if (c := literal_choices(a))]
        return found[0] if found else None
    return None


def options(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """{name: (type hint, default)} of ``fn``'s named parameters, minus ``skip``, ``self`` and the
    ``*args``/``**kwargs`` catch-alls; a parameter without a default gets ``dataclasses.MISSING``."""
    hints = typing.get_type_hints(fn, include_extras=True)
    found = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = dataclasses.MISSING if p.default is p.empty else p.default
        found[p.name] = (hints.get(p.name, Any), default)
    return found


def signature_node(name: str, fields: dict[str, tuple[Any, Any]], /, **constants: Any) -> type:
    """A dataclass named ``name`` with one typed field per entry of ``fields`` (``options`` output)
    plus ``constants`` (str fields such as the task's ``name``), for hydra's ConfigStore."""
    spec = [(k, str, dataclasses.field(default=v)) for k, v in constants.items()]
    for key, (hint, default) in fields.items():
        if default is dataclasses.MISSING:
            spec.append((key, node_type(hint)))
        elif isinstance(default, (list, dict)):
            spec.append((key, node_type(hint), dataclasses.field(default_factory=lambda d=default: type(d)(d))))
        else:
            spec.append((key, node_type(hint), dataclasses.field(default=default)))
    spec.sort(key=lambda f: len(f) == 2, reverse=True)  # fields without a default come first
    return dataclasses.make_dataclass(name, spec)
