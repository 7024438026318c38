"""The base class of every error a user can cause and fix: a config value, a file, a name.

The command lines catch exactly ``UserError`` (one ``error:`` line naming the input, exit status
2); anything else — a plain ``ValueError`` from numpy or from our own code — is a bug and keeps its
full traceback. ``ConfigError`` (a value outside what a key allows) is raised everywhere and lives
here; the other errors live beside the code that raises them (``DatasetError``,
``CheckpointError``, ...). Each also derives from the builtin it refines, so ``except ValueError``
written against the standard library keeps working.
"""
from __future__ import annotations


class UserError(Exception):
    """An input the user can fix; the message names the input, the bad value and what is allowed."""


class ConfigError(UserError, ValueError):
    """A configuration value outside what its key allows: names the key, the value and the rule."""
