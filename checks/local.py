"""Checks on this machine: commands and files. They let the engine be tested end to end
with real processes before any facility transport is involved."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from engine.context import Context
from engine.registry import action, check, guard_transport
from engine.result import Result

from ._expect import OutputExpectation

__all__ = ["LocalCommand", "LocalFile", "local_command", "local_file", "local_run"]

_TAIL = 2000


class LocalCommand(OutputExpectation):
    """A command as an argument list (never a shell string), and what its result must be."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)
    timeout: float = Field(default=30.0, gt=0)
    cwd: str | None = None


def _run(p: LocalCommand, *, read_only: bool) -> Result:
    """`read_only` as for the SSH transport: a command not marked so is refused inside a
    plan or diagnose walk."""
    shown = shlex.join(p.argv)
    if not read_only:
        guard_transport(f"run {shown!r} (not marked read-only)")
    try:
        proc = subprocess.run(p.argv, capture_output=True, text=True, timeout=p.timeout,
                              cwd=p.cwd, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Result.unknown(f"command not found: {p.argv[0]}", evidence=f"$ {shown}")
    except subprocess.TimeoutExpired:
        return Result.unknown(f"no answer within {p.timeout:g} s", evidence=f"$ {shown}")
    out = proc.stdout
    evidence = f"$ {shown}\n{out[-_TAIL:]}{proc.stderr[-_TAIL:]}".rstrip()
    observed = {"exit": proc.returncode, "stdout": out[-_TAIL:]}
    problems = p.problems(proc.returncode, out)
    if problems:
        return Result(outcome="fail", evidence=evidence, observed=observed,
                      reason="; ".join(problems))
    return Result(outcome="ok", evidence=evidence, observed=observed)


@check("local.command")
def local_command(p: LocalCommand, ctx: Context) -> Result:
    return _run(p, read_only=True)


@action("local.run")
def local_run(p: LocalCommand, ctx: Context) -> Result:
    """The same as local.command, but it may change something, so only `run` calls it."""
    return _run(p, read_only=False)


class LocalFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    exists: bool = True
    min_size: int | None = Field(default=None, ge=0)
    max_age: float | None = Field(default=None, gt=0, description="seconds since modification")


@check("local.file")
def local_file(p: LocalFile, ctx: Context) -> Result:
    path = Path(os.path.expanduser(p.path))
    try:
        st = path.stat()
    except FileNotFoundError:
        if p.exists:
            return Result.fail(f"{path}: no such file", exists=False)
        return Result.ok(f"{path}: absent, as expected", exists=False)
    except OSError as exc:
        return Result.unknown(f"{path}: {exc.strerror}")
    age = time.time() - st.st_mtime
    observed = {"exists": True, "size": st.st_size, "age": round(age, 3)}
    evidence = f"{path}: {st.st_size} bytes, modified {age:.0f} s ago"
    if not p.exists:
        return Result.fail(evidence + " (should be absent)", **observed)
    if p.min_size is not None and st.st_size < p.min_size:
        return Result.fail(evidence + f" (smaller than {p.min_size})", **observed)
    if p.max_age is not None and age > p.max_age:
        return Result.fail(evidence + f" (older than {p.max_age:g} s)", **observed)
    return Result.ok(evidence, **observed)
