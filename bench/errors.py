"""The base class of every error a user can cause and fix: a config value, a file, a name.

The command lines catch exactly ``UserError`` (one ``error:`` line naming the input, exit status
2); anything else — a plain ``ValueError`` from numpy or from our own code — is a bug and keeps its
full traceback. The errors that several packages raise or catch live here; an error that one module
raises lives beside it (``StateError`` in ``pretrain.state``, ``RecordError`` in ``bench.results``).
Each also derives from the builtin it refines, so ``except ValueError`` written against the
standard library keeps working.
"""
from __future__ import annotations


class UserError(Exception):
    """An input the user can fix; the message names the input, the bad value and what is allowed."""


class ConfigError(UserError, ValueError):
    """A configuration value outside what its key allows: names the key, the value and the rule."""


class DatasetError(UserError, ValueError):
    """A dataset file that is missing, empty, corrupt, truncated or malformed; the message is one
    line naming the file."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, truncated, or disagrees with its sidecar."""
