"""Registration is declarative and checked before anything is registered."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from engine.context import Context
from engine.registry import Registry, RegistryError, check
from engine.result import Result


class P(BaseModel):
    x: int = 0


@check("demo.one")
def one(p: P, ctx: Context) -> Result:
    return Result.ok()


@check("demo.one")
def one_again(p: P, ctx: Context) -> Result:
    return Result.ok()


@check("demo.bad")
def bad(p: int, ctx: Context) -> Result:
    return Result.ok()


@check("demo.two")
def two(p: P, ctx: Context) -> Result:
    return Result.ok()


def test_duplicates_name_both_places():
    reg = Registry()
    with pytest.raises(RegistryError) as info:
        reg.register_functions([one, one_again])
    message = str(info.value)
    assert "duplicate check 'demo.one'" in message
    assert message.count("test_registry.py:") == 2


def test_nothing_is_registered_when_one_is_bad():
    reg = Registry()
    with pytest.raises(RegistryError, match="first parameter must be a pydantic model"):
        reg.register_functions([two, bad])
    assert "demo.two" not in reg


def test_a_name_registered_earlier_is_a_duplicate_too():
    reg = Registry()
    reg.register_functions([one])
    with pytest.raises(RegistryError, match="duplicate"):
        reg.register_functions([one_again])
    assert reg.get("demo.one").fn is one


def test_entry_points_bring_the_builtin_checks():
    reg = Registry()
    reg.load_entry_points()
    assert {"local.command", "local.file", "value.compare"} <= set(reg.names("check"))
    assert "local.run" in reg.names("action")
