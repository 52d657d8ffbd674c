"""Run journal and resume (issue 12) with local processes: SIGKILL at any step, then
`runbook resume`, ends as an uninterrupted run does, with each side effect once; Ctrl-C
stops after the step under way; what may not be resumed is refused.

The side effects are lines appended to a file by `local.run` actions, so that a repeated
action is seen; the twin's version (restart-online, Karabo slots) is
tests/twin/test_resume_twin.py."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests._journal import ANSWERS, answering, kill_all, report, rows

RUNBOOK = str(Path(sys.executable).parent / "runbook")

PROCEDURE = textwrap.dedent("""\
    id: journal-demo
    title: Three changes, a confirmation and a wait
    kind: procedure
    source: "3.4"
    params:
      instrument: {type: instrument}
      dir: {type: str}
    start: ready
    steps:
      ready:
        source: "3.2"
        check: local.file
        with: {path: "{{ params.dir }}"}
        on: {ok: change-a, fail: end, unknown: end}
      change-a:
        source: "3.4"
        action: local.run
        danger: true
        with: {argv: [sh, "{{ params.dir }}/act", a]}
        postcondition:
          check: local.command
          with: {argv: [grep, -qx, a, "{{ params.dir }}/effects"]}
        next: ask
      ask:
        source: "3.4"
        manual: Look at the service.
        confirm: Go on?
        next: change-b
      change-b:
        source: "3.4"
        action: local.run
        with: {argv: [sh, "{{ params.dir }}/act", b]}
        postcondition:
          check: local.command
          with: {argv: [grep, -qx, b, "{{ params.dir }}/effects"]}
        next: settled
      settled:
        source: "3.4"
        wait: local.command
        with: {argv: [grep, -qx, b, "{{ params.dir }}/effects"]}
        timeout: 10
        interval: 0.1
        on: {ok: change-c, timeout: end}
      change-c:
        source: "3.5"
        action: local.run
        with: {argv: [sh, "{{ params.dir }}/act", c]}
        postcondition:
          check: local.command
          with: {argv: [grep, -qx, c, "{{ params.dir }}/effects"]}
        next: end
    """)

# `act X`: sleep pre-X seconds, append X to effects, sleep post-X seconds (files in dir).
ACT = textwrap.dedent("""\
    d=$(dirname "$0")
    sleep "$(cat "$d/pre-$1" 2>/dev/null || echo 0)"
    echo "$1" >> "$d/effects"
    sleep "$(cat "$d/post-$1" 2>/dev/null || echo 0.2)"
    """)
STEPS = ["ready", "change-a", "ask", "change-b", "settled", "change-c"]


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    books = tmp_path / "books"
    books.mkdir()
    (books / "journal-demo.yaml").write_text(PROCEDURE)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    return dict(os.environ)


def work(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "act").write_text(ACT)
    return d


def start(tmp_path: Path, env: dict[str, str], d: Path, *extra: str) -> subprocess.Popen[str]:
    return answering([RUNBOOK, "run", "journal-demo", "--site", "local", "-i", "LAB",
                      "--runbooks", str(tmp_path / "books"), "-p", f"dir={d}", "--yes",
                      "-f", "json", *extra], env)


def resume(tmp_path: Path, env: dict[str, str], run_id: str, *extra: str
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNBOOK, "resume", run_id, "--runbooks", str(tmp_path / "books"),
                           "-f", "json", *extra], input=ANSWERS, capture_output=True,
                          text=True, env=env, timeout=120)


def journal_rows(tmp_path: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    return rows(tmp_path / "state", sql, *args)


def until(what: str, condition, timeout: float = 60.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}: "
                                 f"{proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def begun(tmp_path: Path) -> list[str]:
    return [r["step"] for r in journal_rows(
        tmp_path, "SELECT step FROM journal_steps ORDER BY started")]


def run_id_of(tmp_path: Path) -> str:
    [row] = journal_rows(tmp_path, "SELECT run_id FROM journal")
    return str(row["run_id"])


def effects(d: Path) -> list[str]:
    path = d / "effects"
    return path.read_text().split() if path.exists() else []


def outcomes(rep: dict) -> list[tuple[str, str]]:
    return [(s["id"], s["outcome"]) for s in rep["steps"]]


def test_uninterrupted_run_journals_every_step_begun_and_ended(tmp_path, env):
    d = work(tmp_path, "once")
    proc = start(tmp_path, env, d)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert effects(d) == ["a", "b", "c"]
    rows = journal_rows(tmp_path, "SELECT * FROM journal_steps ORDER BY started")
    assert [r["step"] for r in rows] == STEPS
    assert all(r["ended"] is not None and r["ended"] >= r["started"] for r in rows)
    assert [r["key"] for r in rows][:2] == ["journal-demo:ready#0", "journal-demo:change-a#0"]
    [run] = journal_rows(tmp_path, "SELECT * FROM journal")
    assert run["state"] == "finished" and run["resumes"] == 0
    listed = subprocess.run([RUNBOOK, "runs", "-f", "json"], capture_output=True, text=True,
                            env=env, timeout=60)
    [shown] = json.loads(listed.stdout)
    assert shown["run_id"] == run["run_id"] and shown["state"] == "finished"
    assert shown["steps_done"] == len(STEPS)


def test_sigkill_at_random_steps_then_resume_ends_as_one_run(tmp_path, env):
    """Six trials, each killed after a random number of begun steps (the kill lands in
    that step or just after it), then resumed once."""
    d0 = work(tmp_path, "reference")
    ref = start(tmp_path, env, d0)
    ref_out, ref_err = ref.communicate(timeout=120)
    assert ref.returncode == 0, ref_err[-3000:]
    want = outcomes(report(ref_out))
    rng = random.Random(12)
    for trial in range(6):
        d = work(tmp_path, f"trial{trial}")
        (tmp_path / "state").rename(tmp_path / f"state-before-{trial}")
        at = rng.randrange(1, len(STEPS) + 1)
        proc = start(tmp_path, env, d)
        until(f"step {at} begun", lambda a=at: len(begun(tmp_path)) >= a, proc=proc)
        kill_all(proc)
        proc.wait(timeout=30)
        run_id = run_id_of(tmp_path)
        after_kill = effects(d)
        res = resume(tmp_path, env, run_id)
        assert res.returncode == 0, (trial, at, res.stdout[-2000:], res.stderr[-3000:])
        assert effects(d) == ["a", "b", "c"], (trial, at, after_kill)
        rep = report(res.stdout)
        assert outcomes(rep) == want, (trial, at)
        [run] = journal_rows(tmp_path, "SELECT state, resumes FROM journal")
        assert (run["state"], run["resumes"]) == ("finished", 1)
        assert {s["id"] for s in rep["steps"] if not s["replayed"]} <= set(STEPS[at - 1:])


def test_action_killed_after_its_effect_is_not_repeated(tmp_path, env):
    d = work(tmp_path, "after")
    (d / "post-b").write_text("30")
    proc = start(tmp_path, env, d)
    until("b written", lambda: effects(d) == ["a", "b"], proc=proc)
    kill_all(proc)
    proc.wait(timeout=30)
    (d / "post-b").unlink()
    res = resume(tmp_path, env, run_id_of(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert effects(d) == ["a", "b", "c"]
    assert "its postcondition holds" in res.stdout + res.stderr
    step = {s["id"]: s for s in report(res.stdout)["steps"]}["change-b"]
    assert step["outcome"] == "done" and step["evidence"].startswith("postcondition held")
    assert step["resolved"]["postcondition"]["check"] == "local.command"


def test_action_killed_before_its_effect_is_done_once_on_resume(tmp_path, env):
    d = work(tmp_path, "before")
    (d / "pre-b").write_text("30")
    proc = start(tmp_path, env, d)
    until("change-b begun", lambda: "change-b" in begun(tmp_path), proc=proc)
    kill_all(proc)
    proc.wait(timeout=30)
    (d / "pre-b").unlink()
    assert effects(d) == ["a"]
    listed = subprocess.run([RUNBOOK, "runs"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert f"journal-demo: died, 3 step(s) done  (runbook resume {run_id_of(tmp_path)})" \
        in listed.stdout, listed.stdout
    res = resume(tmp_path, env, run_id_of(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert effects(d) == ["a", "b", "c"]
    assert "its postcondition does not hold" in res.stdout + res.stderr
    audit = [json.loads(line) for line in
             (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert [(a["step"], a["outcome"]) for a in audit] == [
        ("change-a", "done"), ("ask", "confirmed"), ("change-b", "done"),
        ("change-c", "done")]


def test_ctrl_c_stops_after_the_step_and_prints_the_resume_command(tmp_path, env):
    d = work(tmp_path, "sigint")
    (d / "post-b").write_text("2")
    proc = start(tmp_path, env, d)
    until("b written", lambda: effects(d) == ["a", "b"], proc=proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    run_id = run_id_of(tmp_path)
    assert proc.returncode == 1, err[-3000:]
    assert f"runbook resume {run_id}" in out + err
    rows = {r["step"]: r for r in journal_rows(tmp_path, "SELECT * FROM journal_steps")}
    assert rows["change-b"]["outcome"] == "done"  # the step under way ended whole
    assert "settled" not in rows and effects(d) == ["a", "b"]
    [run] = journal_rows(tmp_path, "SELECT state FROM journal")
    assert run["state"] == "interrupted"
    (d / "post-b").unlink()
    res = resume(tmp_path, env, run_id)
    assert res.returncode == 0, res.stderr[-3000:]
    assert effects(d) == ["a", "b", "c"]


def test_what_cannot_be_resumed_is_refused(tmp_path, env):
    d = work(tmp_path, "refused")
    proc = start(tmp_path, env, d)
    proc.communicate(timeout=120)
    run_id = run_id_of(tmp_path)
    done = resume(tmp_path, env, run_id)
    assert done.returncode == 3 and "finished" in done.stderr
    assert "Traceback" not in done.stderr
    missing = resume(tmp_path, env, "nosuchrun")
    assert missing.returncode == 3 and "runbook runs" in missing.stderr

    (d / "effects").unlink()
    (d / "pre-b").write_text("30")
    proc = start(tmp_path, env, d)
    until("change-b begun", lambda: len(begun(tmp_path)) > len(STEPS) + 3, proc=proc)
    kill_all(proc)
    proc.wait(timeout=30)
    [killed] = journal_rows(tmp_path, "SELECT run_id FROM journal WHERE run_id != ?", run_id)
    books = tmp_path / "books" / "journal-demo.yaml"
    books.write_text(books.read_text().replace("Look at the service.", "Look again."))
    changed = resume(tmp_path, env, killed["run_id"])
    assert changed.returncode == 3 and "changed since it started" in changed.stderr
    assert effects(d) == ["a"]
