"""Registries: decorator registration, unknown names listing the known ones, plugin failures."""
import pytest

from bench.registry import Registry, UnknownNameError, TASKS


def test_unknown_name_lists_known_ones():
    reg: Registry = Registry("widget")
    reg.register("a")(object)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'b'; known: a"):
        reg.get("b")


def test_double_registration_is_an_error():
    reg: Registry = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(float)


def test_builtin_tasks_are_discovered():
    assert "depth" in TASKS.names()
