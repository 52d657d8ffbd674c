"""Checks and actions that only the tests register: each one does something real that a
test can observe (a barrier, a sleep, a file), so no result is hard-coded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engine.context import Context
from engine.registry import action, check
from engine.result import Result

_barriers: dict[str, threading.Barrier] = {}
_lock = threading.Lock()


class Barrier(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parties: int
    wait: float = 5.0


@check("test.barrier")
def barrier(p: Barrier, ctx: Context) -> Result:
    """ok only if `parties` checks reach the barrier at the same time."""
    with _lock:
        b = _barriers.setdefault(p.name, threading.Barrier(p.parties, timeout=p.wait))
    try:
        b.wait()
    except threading.BrokenBarrierError:
        return Result.fail(f"fewer than {p.parties} checks ran at once")
    return Result.ok(f"{p.parties} checks met at {p.name}")


class Sleep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float
    outcome: str = "ok"


@check("test.sleep")
def sleep(p: Sleep, ctx: Context) -> Result:
    time.sleep(p.seconds)
    return Result(outcome=p.outcome, evidence=f"slept {p.seconds}")  # type: ignore[arg-type]


class Touch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


@action("test.touch")
def touch(p: Touch, ctx: Context) -> Result:
    Path(p.path).write_text("touched")
    return Result.ok(f"wrote {p.path}")


class Crash(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = "boom"


@check("test.crash")
def crash(p: Crash, ctx: Context) -> Result:
    raise ValueError(p.message)
