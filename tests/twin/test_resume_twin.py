"""Issue 12's kill-and-resume trials: `runbook run restart-online` against the twin, killed
with SIGKILL at random steps and continued with `runbook resume`. Every run ends as an
uninterrupted one does (the same steps and outcomes, the pipeline ACTIVE), and the twin's
mutation log shows each side effect once: one RESTART.restart(), one INIT.start_pipeline(),
each calibration server killed once.

20 kills in 2 runs: a full restart costs about half a minute here, so each run takes 10
kills, each at a later random step than the one before, and each kill is followed by a
resume (20 resumes in all). The seed is in the failure message."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sim import mutations
from tests._journal import answering, kill_all, report, rows
from tests.twin._kit import IDS, dev, stop_detector, wait

pytestmark = pytest.mark.twin

RUNBOOK = str(Path(sys.executable).parent / "runbook")
RUNS, KILLS = 2, 10
SEED = 20261207
SERVERS = {f"mlspb_spb_cal_{i}" for i in range(8)}
# The last steps (defaults kept, push data, all green, lower filters) take milliseconds
# together: a kill there races the walk's own end, so kills land in the steps before.
LAST_QUICK = 4


def _run(env: dict[str, str]) -> subprocess.Popen[str]:
    return answering([RUNBOOK, "run", "restart-online", "--site", "sim", "-i", "SPB",
                      "--yes", "-f", "json"], env)


def _resume(env: dict[str, str], run_id: str) -> subprocess.Popen[str]:
    return answering([RUNBOOK, "resume", run_id, "-f", "json"], env)


def _begun(state: Path) -> int:
    return len(rows(state, "SELECT key FROM journal_steps"))


def _finish(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (what, out[-2000:], err[-3000:])
    return report(out)


def _taken(proc: subprocess.Popen[str], state: Path) -> bool:
    """The process has opened (or taken over) the run: a kill now interrupts a walk."""
    return bool(rows(state, "SELECT 1 FROM journal WHERE pid = ?", proc.pid))


def _kill_at(proc: subprocess.Popen[str], state: Path, at: int, what: str) -> None:
    """SIGKILL once step `at` began and this process walks (an earlier attempt may have
    gone past `at` already: then the kill lands where this one resumed)."""
    deadline = time.monotonic() + 300
    while _begun(state) < at or not _taken(proc, state):
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the walk ended (exit {proc.returncode}) before "
                                 f"step {at} began: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: step {at} did not begin within 300 s")
        time.sleep(0.02)
    kill_all(proc)
    proc.communicate(timeout=60)


def _effects(entries: list[dict[str, Any]]) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """Slot calls from outside the twin, and the servers that the webservers killed."""
    slots = Counter((e["target"], e["what"]) for e in entries
                    if e["kind"] == "slot" and not mutations.is_internal(e.get("caller")))
    kills = Counter(str(e["target"]) for e in entries if e["kind"] == "kill")
    return slots, kills


def _outcomes(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["id"], s["outcome"]) for s in report["steps"]]


def _settled(what: str) -> None:
    from karabo.middlelayer import State

    init, manager = dev("init"), dev("cal_manager")
    wait(lambda: init.state == State.ACTIVE and manager.state == State.ACTIVE, 60)
    assert dev("restart").status == "All servers restarted!", what


@pytest.mark.timeout(900)
def test_sigkill_at_random_steps_then_resume_ends_as_an_uninterrupted_run_12(
        spb, tmp_path):
    rng = random.Random(SEED)
    want_slots = Counter({(IDS["restart"], "restart"): 1, (IDS["init"], "start_pipeline"): 1})

    stop_detector()  # 3.2
    env = {**os.environ, "RUNBOOK_STATE_DIR": str(tmp_path / "reference")}
    mark = len(mutations.read(spb))
    reference = _finish(_run(env), "the uninterrupted run")
    steps = _begun(tmp_path / "reference")
    slots, kills = _effects(mutations.read(spb)[mark:])
    assert slots == want_slots, slots
    assert set(kills) >= SERVERS and all(kills[s] == 1 for s in SERVERS), kills
    _settled("reference")

    for run in range(RUNS):
        stop_detector()
        state = tmp_path / f"run{run}"
        env = {**os.environ, "RUNBOOK_STATE_DIR": str(state)}
        at = sorted(rng.sample(range(1, steps - LAST_QUICK + 1), KILLS))
        what = f"run {run} (seed {SEED}), kills after steps {at} of {steps}"
        mark = len(mutations.read(spb))
        proc = _run(env)
        for n, step in enumerate(at):
            _kill_at(proc, state, step, f"{what}, kill {n + 1}")
            [row] = rows(state, "SELECT run_id FROM journal")
            proc = _resume(env, row["run_id"])
        report = _finish(proc, what)
        assert _outcomes(report) == _outcomes(reference), what
        assert report["findings"] == [] and report["unknowns"] == [], what
        [row] = rows(state, "SELECT state, resumes FROM journal")
        assert (row["state"], row["resumes"]) == ("finished", KILLS), what
        slots, kills = _effects(mutations.read(spb)[mark:])
        assert slots == want_slots, (what, slots)
        assert all(kills[s] == 1 for s in SERVERS), (what, kills)
        _settled(what)
