"""What the kill-and-resume tests share: a `runbook` process fed its answers, the journal
read from outside while it writes (WAL), and the JSON report after the prompts."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

ANSWERS = "y\n" * 30


def answering(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `argv` with every question answered yes (stdin written, left open), in a
    process group of its own for `kill_all`."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(ANSWERS)
    proc.stdin.flush()
    return proc


def kill_all(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the walk and the commands that it started, as a crash of the operator's
    session does: a command left running would finish its effect behind the resume's back
    (CI: an orphaned `sleep 30; echo b` wrote after resume had found no b)."""
    os.killpg(proc.pid, signal.SIGKILL)


def rows(state: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """A query on the state folder's journal; nothing before the run created it."""
    path = state / "runbook.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        db.close()


def report(out: str) -> dict[str, Any]:
    """The `-f json` report that follows the prompts on stdout."""
    found: dict[str, Any] = json.loads(out[out.index('{\n  "runbook": '):])
    return found
