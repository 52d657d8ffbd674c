"""Audit log (issue 12): the table and the append-only JSONL agree, carry who, when, where,
the step, the exact command, the outcome and the confirmation, and no secret of the site."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine._cli_ops import parse_since
from engine.cli import EXIT_USAGE, app
from engine.store import Store, os_user

RUNBOOK = str(Path(sys.executable).parent / "runbook")
PASSWORD = "hunter2-Pa55"
TOKEN = "tok-9f8e7d6c5b4a"


@pytest.fixture
def site(tmp_path, monkeypatch) -> dict[str, str]:
    """The `local` site with a password and a token, and a state folder of this test."""
    folder = tmp_path / "sites" / "secret"
    folder.mkdir(parents=True)
    folder.joinpath("site.yaml").write_text(textwrap.dedent(f"""\
        site: secret
        extends: local
        vars:
          db_password: "{PASSWORD}"
          api_token: "{TOKEN}"
        """))
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    return dict(os.environ)


def _run(tmp_path: Path, env: dict[str, str], *extra: str,
         answers: str = "y\ny\n") -> subprocess.CompletedProcess[str]:
    # The secret reaches the command line and the manual text through the state file.
    state_file = tmp_path / f"service-{PASSWORD}"
    return subprocess.run([RUNBOOK, "run", "local-restart", "--site", "secret", "-i", "LAB",
                           "-p", f"state_file={state_file}", *extra],
                          input=answers, capture_output=True, text=True, env=env, timeout=120)


def _jsonl() -> list[dict[str, object]]:
    return [json.loads(line) for line in Store.open().audit_log.read_text().splitlines()]


def _table() -> list[dict[str, object]]:
    return sorted(Store.open().audit(limit=1000), key=lambda r: int(r["id"]))  # type: ignore[call-overload]


def test_a_run_writes_matching_jsonl_lines_and_table_rows(site, tmp_path):
    t0 = time.time()
    result = _run(tmp_path, site)
    assert result.returncode == 0, result.stdout + result.stderr
    rows, lines = _table(), _jsonl()
    assert rows == lines  # the same entries, field for field, in the same order
    assert [(r["step"], r["outcome"], r["confirmation"]) for r in rows] == [
        ("before", "confirmed", "yes: Has the data source stopped?"),
        ("restart", "done", "yes: danger step"),
    ]
    run_ids = {r["run_id"] for r in rows}
    [stored] = Store.open().runs()
    assert run_ids == {stored["id"]}
    for r in rows:
        assert (r["user"], r["site"], r["instrument"]) == (os_user(), "secret", "LAB")
        assert t0 - 1 <= float(r["at"]) <= time.time()  # type: ignore[arg-type]
    what = str(rows[1]["what"])
    assert what.startswith("local.run ") and json.loads(what.split(" ", 1)[1]) == {
        "argv": ["sh", "-c", 'echo ACTIVE > "$0"', str(tmp_path / "service-***")]}
    assert str(rows[0]["what"]).startswith("Stop the data source that feeds ")


def test_no_secret_is_written_to_the_jsonl_or_the_table(site, tmp_path):
    assert _run(tmp_path, site).returncode == 0
    text = Store.open().audit_log.read_text()
    with sqlite3.connect(Store.open().path) as db:
        dumped = "\n".join(db.iterdump())
    assert "***" in text and "***" in dumped
    for secret in (PASSWORD, TOKEN):
        assert secret not in text and secret not in dumped


@pytest.mark.parametrize("extra, answers, expected", [
    pytest.param(("--yes",), "y\n", [("before", "confirmed", "yes: Has the data source "
                                      "stopped?"), ("restart", "done", "yes: --yes given")],
                 id="yes-flag"),
    pytest.param((), "n\n", [("before", "declined", "no: Has the data source stopped?")],
                 id="declined-manual"),
    pytest.param((), "y\nn\n", [("before", "confirmed", "yes: Has the data source stopped?"),
                                ("restart", "declined", "no: danger step")],
                 id="declined-danger"),
])
def test_the_confirmation_given_is_kept(site, tmp_path, extra, answers, expected):
    _run(tmp_path, site, *extra, answers=answers)
    rows = _table()
    assert [(r["step"], r["outcome"], r["confirmation"]) for r in rows] == expected
    assert rows == _jsonl()


def test_the_jsonl_is_only_appended_to(site, tmp_path):
    assert _run(tmp_path, site).returncode == 0
    log = Store.open().audit_log
    before, inode = log.read_bytes(), log.stat().st_ino
    assert log.stat().st_mode & 0o777 == 0o600
    assert _run(tmp_path, site, "--yes", answers="y\n").returncode == 0
    after = log.read_bytes()
    assert after.startswith(before) and len(after.splitlines()) == 4
    assert log.stat().st_ino == inode
    assert all(line.endswith(b"}") for line in after.splitlines())


def _entries(store: Store) -> None:
    now = time.time()
    for instrument, hours in (("SPB", 0.5), ("SPB", 3), ("MID", 1), ("MID", 50)):
        store.add_audit(site="xfel", instrument=instrument, run_id="r", step=f"s{hours}",
                        what="karabo.call {}", outcome="done", at=now - hours * 3600)


def _audit(*args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(app, ["audit", "--format", "json", *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_audit_filters_by_instrument_and_since(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path))
    _entries(Store.open())
    assert [r["step"] for r in _audit()] == ["s0.5", "s3", "s1", "s50"][::-1]
    assert [r["step"] for r in _audit("--instrument", "SPB")] == ["s3", "s0.5"]
    assert [r["step"] for r in _audit("-i", "mid")] == ["s50", "s1"]
    assert [r["step"] for r in _audit("--since", "2h")] == ["s1", "s0.5"]
    assert [r["step"] for r in _audit("-i", "MID", "--since", "3d")] == ["s50", "s1"]
    day = datetime.fromtimestamp(time.time() - 4 * 3600).isoformat(timespec="minutes")
    assert {r["step"] for r in _audit("--since", day)} == {"s0.5", "s3", "s1"}
    text = CliRunner().invoke(app, ["audit", "-i", "SPB"], catch_exceptions=False)
    assert text.exit_code == 0 and "karabo.call" in text.output


def test_a_bad_since_is_one_line_and_exit_3(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["audit", "--since", "yesterday"])
    assert result.exit_code == EXIT_USAGE
    assert "--since wants a date" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("text, ago", [
    pytest.param("45s", 45, id="seconds"),
    pytest.param("30m", 1800, id="minutes"),
    pytest.param("2h", 7200, id="hours"),
    pytest.param("3d", 3 * 86400, id="days"),
    pytest.param("1w", 7 * 86400, id="weeks"),
    pytest.param("1.5h", 5400, id="fraction"),
])
def test_since_spans(text, ago):
    assert parse_since(text, now=1_000_000.0) == 1_000_000.0 - ago


def test_since_dates():
    assert parse_since("2026-12-01") == datetime(2026, 12, 1).timestamp()
    assert parse_since("2026-12-01T08:30") == datetime(2026, 12, 1, 8, 30).timestamp()
