"""`runbook health` without the twin: health runbooks over local files, a real SMTP sink,
and the history that decides whether a digest goes out."""

from __future__ import annotations

import textwrap

import pytest

from engine.health import health, health_checks
from engine.inventory import load_site
from engine.loader import load_catalog
from engine.registry import default_registry
from engine.runs import Session
from engine.store import Store
from sim.mailbox import messages, start_sink, wait_for_messages

MARKER = """\
id: health-marker
title: "Health: the marker file is there"
kind: diagnosis
source: "10.1"
params:
  instrument: {type: instrument}
start: marker
steps:
  marker:
    source: "10.1"
    check: local.file
    with: {path: "{{ vars.marker }}"}
    on: {ok: end, fail: missing, unknown: end}
  missing:
    source: "10.1"
    finding: "The marker {{ vars.marker }} is missing"
    remedy: Put it back.
"""


@pytest.fixture
def lab(tmp_path, monkeypatch):
    sink = start_sink(tmp_path / "mail")
    site = tmp_path / "sites" / "labmail"
    site.mkdir(parents=True)
    marker = tmp_path / "marker"
    marker.write_text("here")
    site.joinpath("site.yaml").write_text(textwrap.dedent(f"""\
        site: labmail
        extends: local
        transport:
          smtp: {{host: 127.0.0.1, port: {sink.port}, security: plain}}
        vars: {{marker: "{marker}"}}
        instruments:
          LAB: {{mail: [lab-instrument@example.org]}}
        """))
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))
    (tmp_path / "runbooks" / "health").mkdir(parents=True)
    (tmp_path / "runbooks" / "health" / "marker.yaml").write_text(MARKER)
    (tmp_path / "runbooks" / "other.yaml").write_text(MARKER.replace("health-marker", "other"))
    registry = default_registry()
    session = Session(load_catalog([tmp_path / "runbooks"], registry), registry,
                      load_site("labmail"))
    try:
        yield session, Store.open(tmp_path / "state.sqlite"), marker, sink.folder
    finally:
        sink.stop()


def test_only_runbooks_under_health_are_health_checks(lab):
    session = lab[0]
    assert [lr.runbook.id for lr in health_checks(session)] == ["health-marker"]
    assert [lr.runbook.id for lr in health_checks(session, ["marker"])] == ["health-marker"]
    with pytest.raises(Exception, match="unknown health check 'other'; known: health-marker"):
        health_checks(session, ["other"])


def test_digest_on_change_only_then_resolved(lab):
    session, store, marker, mail = lab

    [run] = health(session, ["LAB"], store, email=True)
    assert run.worst == "ok" and run.mailed is None and messages(mail) == []

    marker.unlink()
    [run] = health(session, ["LAB"], store, email=True)
    assert run.worst == "fail" and run.new == [f"The marker {marker} is missing ({marker})"]
    [digest] = wait_for_messages(mail, 1)
    assert set(digest.rcpt_tos) == {"lab-instrument@example.org", "det-support@example.org"}
    assert digest.subject == "[LAB] detector health: FAIL (1 new)"
    assert "[FAIL   ] Health: the marker file is there (section 10.1)" in digest.part("plain")
    assert "remedy: Put it back." in digest.part("plain")
    assert "New since the last run" in digest.part("html")

    [run] = health(session, ["LAB"], store, email=True)
    assert run.worst == "fail" and not run.changed and run.mailed is None
    assert len(messages(mail)) == 1

    [run] = health(session, ["LAB"], store, email=True, always=True)
    assert len(wait_for_messages(mail, 2)) == 2  # --always: mailed though nothing changed

    marker.write_text("back")
    [run] = health(session, ["LAB"], store, email=True)
    assert run.worst == "ok" and run.resolved and run.mailed
    resolved = wait_for_messages(mail, 3)[2]
    assert resolved.subject == "[LAB] detector health: OK (1 resolved)"
    assert "Resolved since the last run" in resolved.part("plain")

    history = store.health("labmail", "LAB")
    assert [h["worst"] for h in history] == ["ok", "fail", "fail", "fail", "ok"]
    assert [bool(h["mailed"]) for h in history] == [True, True, False, True, False]
    assert store.runs(limit=10)[0]["runbook"] == "health-marker"  # each walk is kept too
