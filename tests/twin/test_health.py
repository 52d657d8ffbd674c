"""Scheduled health checks against the twin: the scheduler runs `health` on its own, one
digest reaches SPB's addresses and det-support when a fault appears (11.1#2: a karabo
webserver down), nothing more while nothing changes, and a "resolved" digest once the
fault is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.store import Store
from sim import karabo_env as kenv
from sim import mailbox
from tests.twin._kit import poll, spbonc

pytestmark = pytest.mark.twin

HOST = "spb-br-sys-cal-3"
CHECKS = ["pipeline", "karabo"]
TO = {"spb-instrument@xfel.eu", "det-support@xfel.eu"}




def _health(store: Store) -> list[dict]:
    return list(reversed(store.health("sim", "SPB", limit=100)))  # oldest first


@pytest.fixture
def scheduler(running, tmp_path):
    """`runbook schedule serve` on a schedule of every 3 s, with a state file of its own."""
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(f"site: sim\nemail: true\nmisfire_grace: 2\nschedules:\n"
                         f"  spb:\n    instrument: SPB\n    cron: '*/3 * * * * *'\n"
                         f"    checks: [{', '.join(CHECKS)}]\n")
    env = {**os.environ, "RUNBOOK_STATE_DIR": str(tmp_path / "state")}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(Path(sys.executable).parent / "runbook"), "schedule",
                             "serve", "--file", str(schedules)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        yield Store.open(tmp_path / "state" / "runbook.sqlite"), tmp_path / "serve.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _digests(twin, since: int) -> list[mailbox.Delivered]:
    return [m for m in mailbox.messages(twin.mail_dir)[since:]
            if "detector health" in str(m.message["Subject"])]


def test_scheduled_digest_on_change_only_then_resolved_11_1(running, scheduler):
    store, log = scheduler
    twin = running
    already = len(mailbox.messages(twin.mail_dir))
    karabo = spbonc(twin, HOST)
    first = poll("a first scheduled health run", lambda: _health(store), 90)[0]
    assert first["worst"] == "ok", (first, log.read_text()[-2000:])
    assert first["mailed"] is None  # a first run that is all ok says nothing

    kenv.svc(karabo, "-d", "webserver")
    try:
        failing = poll("a health run that sees the webserver down",
                         lambda: [h for h in _health(store) if h["worst"] == "fail"], 90)[0]
        [digest] = mailbox.wait_for_messages(twin.mail_dir, already + 1, timeout=30)[already:]
        msg = digest.message
        assert set(digest.rcpt_tos) == TO and failing["mailed"]
        assert msg["Subject"].startswith("[SPB] detector health: FAIL (1 new)")
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert f"Karabo or its webserver is not running on {HOST}" in text
        assert "New since the last run" in text and "11.1" in text
        assert f"<code>{HOST}</code>" in html and "FAIL" in html
        # The next runs see the same fault: no second mail.
        poll("two more health runs after the failing one",
               lambda: len([h for h in _health(store) if h["id"] > failing["id"]]) >= 2, 60)
        assert len(_digests(twin, already)) == 1
        assert all(h["mailed"] is None for h in _health(store) if h["id"] > failing["id"])
    finally:
        kenv.svc(karabo, "-u", "webserver")
    resolved = poll("a health run after the fault is gone",
                      lambda: [h for h in _health(store) if h["resolved"]], 90)[0]
    assert resolved["worst"] == "ok" and resolved["mailed"]
    mails = poll("the resolved digest", lambda: _digests(twin, already)[1:], 30)
    assert mails[0].message["Subject"].startswith("[SPB] detector health: OK (1 resolved)")
    assert "Resolved since the last run" in mails[0].message.get_body(("plain",)).get_content()
    runs = _health(store)
    starts = [h["started"] for h in runs]
    for a, b in zip(runs, runs[1:], strict=False):  # no overlap of the job with itself
        assert b["started"] >= a["finished"] - 0.01, (a, b)
    assert starts == sorted(starts)


@pytest.mark.browser
def test_dashboard_shows_the_fault_and_diagnoses_it_in_a_browser_9_11_1(running, tmp_path):
    """The overview of section 9 against the twin: `runbook health` saw a webserver down,
    the SPB card shows the finding, "Diagnose now" runs 11.1's tree and shows its report."""
    from playwright.sync_api import expect, sync_playwright

    from engine.runs import Session
    from engine.web import create_app
    from tests.web._kit import CHROMIUM, CHROMIUM_ARGS, artifacts, serving

    env = {**os.environ, "RUNBOOK_STATE_DIR": str(tmp_path / "state")}
    store = Store.open(tmp_path / "state" / "runbook.sqlite")
    karabo = spbonc(running, HOST)
    kenv.svc(karabo, "-d", "webserver")
    try:
        res = subprocess.run([str(Path(sys.executable).parent / "runbook"), "health",
                              "--site", "sim", "-i", "SPB", "-c", "karabo"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1, res.stdout + res.stderr
        shots = artifacts()
        app = create_app(store, lambda: Session.load("sim"))
        with serving(app) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(30_000)
                page.goto(url + "/")
                card = page.locator("#health-SPB")
                expect(card.locator(".title").filter(
                    has_text=f"Karabo or its webserver is not running on {HOST}")
                ).to_be_visible()
                page.screenshot(path=shots / "dashboard-twin-overview.png", full_page=True)
                card.get_by_label("diagnosis for SPB").select_option("restart-servers-stalls")
                card.get_by_role("button", name="Diagnose now").click()
                page.wait_for_url("**/runs/*", timeout=120_000)
                expect(page.get_by_text(
                    f"The karabo webserver on {HOST} is not running").first).to_be_visible()
                page.screenshot(path=shots / "dashboard-twin-diagnosis.png", full_page=True)
            finally:
                browser.close()
    finally:
        kenv.svc(karabo, "-u", "webserver")
    assert [r["runbook"] for r in store.runs(limit=1)] == ["restart-servers-stalls"]
    print(f"screenshots: {shots}/dashboard-twin-overview.png, dashboard-twin-diagnosis.png")
