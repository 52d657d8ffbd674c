"""One procedure run at a time per (site, instrument, runbook family).

The lock is a row of the store's ``locks`` table, taken in one ``BEGIN IMMEDIATE``
transaction, so that two processes that both find a dead owner cannot both take over.
The family is the runbook id: a runbook is the unit that the guidelines tell one person
to run; different runbooks on one instrument (a restart and a dark run) may overlap.

An owner is dead when its PID is gone, when that PID now belongs to another process (its
start time in ``/proc/<pid>/stat`` differs from the one recorded), or when its heartbeat
is older than ``stale_after`` seconds (a hung or stopped owner, or one on another host,
whose PID we cannot see). Get one with `hold(store, ...)`, a context manager that also
keeps the heartbeat going and releases on every exit path.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RunbookError

if TYPE_CHECKING:
    from .store import Store

__all__ = ["LockHeld", "Holder", "hold", "acquire", "release", "holders", "alive", "process_start",
           "HEARTBEAT_S", "STALE_S"]

HEARTBEAT_S = 5.0
STALE_S = 60.0  # twelve missed heartbeats: a live owner is never that late

SCHEMA = """
CREATE TABLE IF NOT EXISTS locks (
    key TEXT PRIMARY KEY, site TEXT NOT NULL, instrument TEXT, family TEXT NOT NULL,
    run_id TEXT NOT NULL, user TEXT, host TEXT NOT NULL, pid INTEGER NOT NULL,
    pid_start TEXT, started REAL NOT NULL, beat_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Holder:
    """A row of the ``locks`` table: `holders(store)` lists them."""

    key: str
    site: str
    instrument: str | None
    family: str
    run_id: str
    user: str | None
    host: str
    pid: int
    pid_start: str | None
    started: float
    beat_at: float

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return (f"{self.family} for {self.instrument or 'the site'} on site {self.site} is "
                f"being run by {self.user} (run {self.run_id}, pid {self.pid}{where}, "
                f"since {since})")


class LockHeld(RunbookError):
    """Another live process runs the same procedure on the same instrument and site."""

    def __init__(self, holder: Holder) -> None:
        self.holder = holder
        where = "" if holder.host == socket.gethostname() else f" on {holder.host}"
        super().__init__(f"{holder.describe()}; wait for it, or, if it hangs, end that "
                         f"process (kill {holder.pid}{where}) and run again: the lock of "
                         "an ended process is taken over")


def lock_key(site: str, instrument: str | None, family: str) -> str:
    return f"{site}/{instrument or '-'}/{family}"


def process_start(pid: int) -> str | None:
    """The start time of `pid` (clock ticks since boot, from /proc), or None if it is gone
    or a zombie. Where /proc does not exist, '?' for a PID that signals, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and ')'
    if fields[0] in ("Z", "X"):  # a zombie has ended; its parent has not reaped it yet
        return None
    return fields[19]  # field 22 of proc(5); fields[0] is field 3


def _alive(holder: Holder, now: float, stale_after: float) -> bool:
    if now - holder.beat_at > stale_after:
        return False
    if holder.host != socket.gethostname():
        return True  # its PID is not ours to look at: the heartbeat decides
    start = process_start(holder.pid)
    if start is None:
        return False
    return start == "?" or holder.pid_start in (None, "?") or start == holder.pid_start


def _connect(store: Store) -> sqlite3.Connection:
    db = sqlite3.connect(store.path, timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db


def _holder(row: sqlite3.Row | None) -> Holder | None:
    return None if row is None else Holder(**dict(row))


def acquire(store: Store, *, site: str, instrument: str | None, family: str, run_id: str,
            user: str, stale_after: float = STALE_S) -> Holder:
    """Take the lock or raise `LockHeld`; a dead owner's lock is taken over."""
    key = lock_key(site, instrument, family)
    pid = os.getpid()
    now = time.time()
    mine = Holder(key, site, instrument, family, run_id, user, socket.gethostname(), pid,
                  process_start(pid), now, now)
    db = _connect(store)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            current = _holder(db.execute("SELECT * FROM locks WHERE key = ?",
                                         (key,)).fetchone())
            if current is not None and _alive(current, now, stale_after):
                raise LockHeld(current)
            db.execute("INSERT OR REPLACE INTO locks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (mine.key, mine.site, mine.instrument, mine.family, mine.run_id,
                        mine.user, mine.host, mine.pid, mine.pid_start, mine.started,
                        mine.beat_at))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()
    return mine


def _beat(store: Store, holder: Holder) -> bool:
    """Refresh the heartbeat; False when the lock is no longer ours (taken over)."""
    db = _connect(store)
    try:
        cur = db.execute("UPDATE locks SET beat_at = ? WHERE key = ? AND run_id = ?",
                         (time.time(), holder.key, holder.run_id))
        return cur.rowcount == 1
    finally:
        db.close()


def release(store: Store, holder: Holder) -> None:
    """Drop the lock if it is still ours (a takeover's row is left alone)."""
    db = _connect(store)
    try:
        db.execute("DELETE FROM locks WHERE key = ? AND run_id = ?",
                   (holder.key, holder.run_id))
    finally:
        db.close()


def alive(holder: Holder) -> bool:
    """Whether the holder's process still runs (as a new run taking the lock would judge)."""
    return _alive(holder, time.time(), _env_float("RUNBOOK_LOCK_STALE_S", STALE_S))


def holders(store: Store) -> list[Holder]:
    db = _connect(store)
    try:
        return [Holder(**dict(r)) for r in db.execute("SELECT * FROM locks ORDER BY key")]
    finally:
        db.close()


@contextmanager
def hold(store: Store, *, site: str, instrument: str | None, family: str, run_id: str,
         user: str, stale_after: float | None = None, heartbeat: float | None = None,
         warn: Callable[[str], None] | None = None) -> Iterator[Holder]:
    """Hold the lock for the body, with a heartbeat thread; released on any exit."""
    stale = stale_after if stale_after is not None else _env_float("RUNBOOK_LOCK_STALE_S",
                                                                   STALE_S)
    every = heartbeat if heartbeat is not None else min(HEARTBEAT_S, stale / 4)
    holder = acquire(store, site=site, instrument=instrument, family=family, run_id=run_id,
                     user=user, stale_after=stale)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                ours = _beat(store, holder)
            except sqlite3.Error:
                continue  # a busy file: the next beat tries again, well before `stale`
            if not ours:
                if warn is not None:
                    warn(f"warning: the lock of run {run_id} was taken over by another "
                         "process (this run's heartbeat was late)")
                return

    thread = threading.Thread(target=beat, name="lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield holder
    finally:
        stop.set()
        thread.join(timeout=every + 5)
        release(store, holder)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise RunbookError(f"${name} must be a number of seconds, got {raw!r}") from exc
