"""Locks (issue 12): one procedure run per (site, instrument, runbook), with real processes.

The holder is either a real `runbook run local-restart` waiting at its first confirmation
(its stdin is a pipe that the test answers), or a `python -c` that takes the lock through
`engine.locks` and waits on its stdin. Every wait polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import locks
from engine.store import Store

RUNBOOK = str(Path(sys.executable).parent / "runbook")
DEADLINE = 30.0


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(folder))
    Store.open()
    return folder


def _until(what: str, ready: Callable[[], object], deadline: float = DEADLINE) -> object:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = ready()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {deadline:.0f} s: {what}")


def _holders() -> list[locks.Holder]:
    return locks.holders(Store.open())


def _argv(tmp_path: Path, *extra: str, runbook: str = "local-restart") -> list[str]:
    return [RUNBOOK, "run", runbook, "--site", "local", "-i", "LAB",
            "-p", f"state_file={tmp_path / 'service'}", *extra]


def _start_run(tmp_path: Path) -> subprocess.Popen[str]:
    """A real run that holds the lock while it waits for its first answer."""
    proc = subprocess.Popen(_argv(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _until("the first run holds the lock",
           lambda: any(h.pid == proc.pid for h in _holders()) or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()[0]
    return proc


_HOLD = """
import sys
from engine import locks
from engine.store import Store
try:
    h = locks.acquire(Store.open(), site=sys.argv[1], instrument=sys.argv[2] or None,
                      family=sys.argv[3], run_id=sys.argv[4], user="holder")
except locks.LockHeld:
    print("held", flush=True)
    sys.exit(3)
print("won", flush=True)
sys.stdin.read()
locks.release(Store.open(), h)
"""


def _holder(site: str, instrument: str, family: str, run_id: str) -> subprocess.Popen[str]:
    """A `python -c` that takes one lock, says 'won' or 'held', and keeps it until EOF."""
    return subprocess.Popen([sys.executable, "-c", _HOLD, site, instrument, family, run_id],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _held(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()  # the child answers at once, or exits


def _refused(result: subprocess.CompletedProcess[str], run_id: str, pid: int) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("local-restart for LAB on site local is being run by "), err
    assert f"run {run_id}" in err and f"pid {pid}" in err and "since 20" in err, err
    assert "wait for it" in err


def test_second_run_is_refused_while_the_first_holds_the_lock(state, tmp_path):
    first = _start_run(tmp_path)
    try:
        [holder] = _holders()
        assert (holder.site, holder.instrument, holder.family) == ("local", "LAB",
                                                                   "local-restart")
        second = subprocess.run(_argv(tmp_path, "--yes"), input="y\n", capture_output=True,
                                text=True, timeout=60)
        _refused(second, holder.run_id, first.pid)
        assert holder.user and f"by {holder.user} " in second.stderr
    finally:
        out, _ = first.communicate("y\ny\n", timeout=60)
    assert first.returncode == 0, out
    assert _holders() == []  # released on success
    again = subprocess.run(_argv(tmp_path, "--yes"), input="y\n", capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_sigkilled_owners_lock_is_taken_over(state, tmp_path):
    first = _start_run(tmp_path)
    first.kill()
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    assert [h.pid for h in _holders()] == [first.pid]  # left behind, its owner gone
    second = subprocess.run(_argv(tmp_path, "--yes"), input="y\n", capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _holders() == []


def test_a_stale_heartbeat_is_taken_over_though_its_pid_lives(state, tmp_path):
    holder = _holder("local", "LAB", "local-restart", "hung")
    try:
        assert _held(holder) == "won"
        refused = subprocess.run(_argv(tmp_path, "--yes"), input="y\n", capture_output=True,
                                 text=True, timeout=60)
        _refused(refused, "hung", holder.pid)
        with sqlite3.connect(Store.open().path) as db:  # a hung owner: its beat stopped
            db.execute("UPDATE locks SET beat_at = beat_at - ?", (locks.STALE_S + 1,))
        taken = subprocess.run(_argv(tmp_path, "--yes"), input="y\n", capture_output=True,
                               text=True, timeout=60)
        assert taken.returncode == 0, taken.stdout + taken.stderr
        assert holder.poll() is None  # the hung owner still lives; its lock was not its own
    finally:
        holder.communicate("", timeout=30)
    assert _holders() == []


def test_a_reused_pid_is_not_the_owner(state, tmp_path):
    """A row whose PID is alive but was started at another time belongs to a dead run."""
    mine = locks.acquire(Store.open(), site="local", instrument="LAB",
                         family="local-restart", run_id="old", user="someone")
    with sqlite3.connect(Store.open().path) as db:
        db.execute("UPDATE locks SET pid = ?, pid_start = '1'", (os.getppid(),))
    assert locks.process_start(os.getppid()) not in (None, "1")
    taken = subprocess.run(_argv(tmp_path, "--yes"), input="y\n", capture_output=True,
                           text=True, timeout=60)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    locks.release(Store.open(), mine)  # no longer its row: nothing happens
    assert _holders() == []


@pytest.mark.parametrize("instrument, family", [
    pytest.param("OTHER", "local-restart", id="other-instrument"),
    pytest.param("LAB", "another-procedure", id="other-runbook"),
])
def test_other_instruments_and_runbooks_do_not_block(state, tmp_path, instrument, family):
    holder = _holder("local", instrument, family, "elsewhere")
    try:
        assert _held(holder) == "won"
        run = subprocess.run(_argv(tmp_path, "--yes"), input="y\n", capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        holder.communicate("", timeout=30)


def test_plan_and_diagnose_take_no_lock(state, tmp_path):
    holders = [_holder("local", "LAB", "local-restart", "busy"),
               _holder("local", "LAB", "local-disk", "busy")]
    try:
        assert [_held(h) for h in holders] == ["won", "won"]
        plan = subprocess.run([RUNBOOK, "plan", "local-restart", "--site", "local",
                               "-i", "LAB"], capture_output=True, text=True, timeout=60)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        marker = tmp_path / "marker"
        marker.write_text("x")
        diag = subprocess.run([RUNBOOK, "diagnose", "local-disk", "--site", "local", "-i",
                               "LAB", "-p", f"marker={marker}", "-p", f"folder={tmp_path}"],
                              capture_output=True,
                              text=True, timeout=60)
        assert diag.returncode == 0, diag.stdout + diag.stderr
    finally:
        for h in holders:
            h.communicate("", timeout=30)


def test_only_one_of_several_contenders_takes_a_dead_lock(state):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    locks.acquire(Store.open(), site="local", instrument="LAB", family="race",
                  run_id="dead", user="gone")
    with sqlite3.connect(Store.open().path) as db:
        db.execute("UPDATE locks SET pid = ?", (dead.pid,))
    contenders = [_holder("local", "LAB", "race", f"c{i}") for i in range(4)]
    try:
        answers = sorted(_held(c) for c in contenders)
    finally:
        for c in contenders:
            c.communicate("", timeout=30)
    assert answers == ["held", "held", "held", "won"]


@pytest.mark.parametrize("answer, how", [
    pytest.param("n\n", "declined", id="declined"),
    pytest.param(None, "sigint", id="ctrl-c"),
])
def test_the_lock_is_released_on_every_exit(state, tmp_path, answer, how):
    first = _start_run(tmp_path)
    if how == "sigint":
        first.send_signal(signal.SIGINT)
    out, _ = first.communicate(answer, timeout=60)
    assert first.returncode not in (0, -signal.SIGINT), out
    assert "Traceback" not in out
    assert _holders() == []


def test_holder_check_in_process():
    """The alive test itself: own PID and start time alive; a gone PID dead."""
    me = locks.process_start(os.getpid())
    assert me is not None and me != "?"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    assert locks.process_start(gone.pid) is None
