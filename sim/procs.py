"""Background processes of the twin: start them in their own session, find them, stop them.

Every twin process is a session leader (``setsid``), so stopping its process group also
stops whatever it spawned (svscan's supervise children, RabbitMQ's epmd when it stays in
the group).  A PID is recorded together with the kernel's start time of that process, so
that a later ``down`` never signals an unrelated process that reused the number.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import RunbookError

__all__ = [
    "TwinError",
    "Proc",
    "start",
    "alive",
    "group_members",
    "stop",
    "stop_all",
    "start_time",
    "wait_for",
    "wait_port",
    "port_open",
    "free_port",
]


class TwinError(RunbookError):
    """The twin could not be started, reached or stopped; the message names the log to read."""


@dataclass(frozen=True)
class Proc:
    """A process that the twin started; get one from `start` or `Proc.from_dict`."""

    name: str
    pid: int
    start: int  # /proc/<pid>/stat field 22, in clock ticks since boot
    log: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Proc:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),  # type: ignore[call-overload]
            start=int(data["start"]),  # type: ignore[call-overload]
            log=str(data["log"]),
        )


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, starttime) of a process, None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[2]


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def alive(pid: int, start: int | None = None) -> bool:
    """True while `pid` runs (zombies count as gone); with `start`, only if it is that process."""
    _reap(pid)
    st = _stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[2] == start


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def start(
    argv: Sequence[str],
    *,
    name: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> Proc:
    """Start `argv` in a new session with stdout+stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
        except OSError as exc:
            raise TwinError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    begun = start_time(popen.pid)
    if begun is None:  # exited (and was reaped) already
        begun = -1
    # Popen's own bookkeeping reaps it if the object is collected while running.
    return Proc(name=name, pid=popen.pid, start=begun, log=str(log))


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: Proc, *, timeout: float = 5.0) -> None:
    """SIGTERM the process group of `proc`, wait up to `timeout`, then SIGKILL what remains.

    The group is signalled only when its leader is `proc` itself or has gone: a PID that
    now belongs to a different process is left alone.
    """
    st = _stat(proc.pid)
    if st is not None and proc.start >= 0 and st[2] != proc.start:
        return  # the number was reused by someone else's process
    _signal_group(proc.pid, signal.SIGTERM)
    if alive(proc.pid, proc.start if proc.start >= 0 else None):
        try:
            os.kill(proc.pid, signal.SIGTERM)  # a leader that left its group (setsid again)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(proc.pid) and not group_members(proc.pid):
            return
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)
    if alive(proc.pid, proc.start if proc.start >= 0 else None):
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not alive(proc.pid) and not group_members(proc.pid):
            return
        time.sleep(0.05)
    raise TwinError(f"{proc.name} (pid {proc.pid}) survived SIGKILL; see {proc.log}")


def stop_all(procs: Sequence[Proc], *, timeout: float = 5.0) -> None:
    """Stop many processes, SIGTERM to all first so that their grace periods overlap."""
    for proc in procs:
        st = _stat(proc.pid)
        if st is None or proc.start < 0 or st[2] == proc.start:
            _signal_group(proc.pid, signal.SIGTERM)
    errors = []
    for proc in procs:
        try:
            stop(proc, timeout=timeout)
        except TwinError as exc:
            errors.append(str(exc))
    if errors:
        raise TwinError("; ".join(errors))


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: Proc | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `predicate` until it holds; fail early if `proc` dies, and at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if proc is not None and not alive(proc.pid):
            raise TwinError(f"{proc.name} exited while waiting for {what}; see {proc.log}")
        if time.monotonic() >= deadline:
            where = f"; see {proc.log}" if proc is not None else ""
            raise TwinError(f"timed out after {timeout:g} s waiting for {what}{where}")
        time.sleep(interval)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, *, timeout: float, proc: Proc | None = None) -> None:
    wait_for(lambda: port_open(host, port), timeout=timeout, what=f"{host}:{port}", proc=proc)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
