"""11.1: the restart-servers script stalls; each cause, its diagnosis by the runbook
`restart-servers-stalls`, and its documented remedy."""

from __future__ import annotations

import re

import pytest

from tests.twin._kit import (
    IDS,
    Diagnosis,
    dev,
    diagnose,
    finishes,
    heal,
    inject,
    karabo_check,
    spbonc,
    stalls_at,
)

pytestmark = pytest.mark.twin

TREE = "restart-servers-stalls"
HOSTS = [f"spb-br-sys-cal-{i}" for i in range(8)]


def found(d: Diagnosis) -> list[tuple[str, str]]:
    """(finding step, subject) of every finding, sorted."""
    return sorted((f["id"], f["subject"]) for f in d.findings)


def evidence(d: Diagnosis, check_id: str, subject: str) -> str:
    """The evidence text of the check `check_id` on `subject` (one foreach branch)."""
    for step in d.steps:
        if step["id"] == check_id and step["subject"] == subject:
            return str(step["evidence"])
    raise AssertionError(f"{check_id} did not run on {subject}")


def test_new_server_not_omitted_stalls_restart_11_1(spb):
    inject(spb, kind="new_server", host="spb-br-sys-cal-4")
    try:
        stalls_at("Restarting mlspb_spb_new_4 on spb-br-sys-cal-4")
        d = diagnose(TREE)
        assert found(d) == [("new-server-not-omitted", "spb-br-sys-cal-4")]
        assert "not omitted from restart: mlspb_spb_new_4" in evidence(
            d, "new-servers", "spb-br-sys-cal-4")
        assert "Restarting mlspb_spb_new_4 on spb-br-sys-cal-4" in evidence(
            d, "restart-status", IDS["restart"])
        dev("restart").omitFromRestart = "webserver, _new_"  # the documented remedy
        finishes()
    finally:
        heal(spb, "SPB")
    assert "mlspb_spb_new_4" not in "".join(karabo_check(spbonc(spb, "spb-br-sys-cal-4")))


def test_webserver_down_stalls_restart_11_1(spb):
    inject(spb, kind="webserver_down", host="spb-br-sys-cal-3")
    try:
        lines = karabo_check(spbonc(spb, "spb-br-sys-cal-3"))
        assert any(re.match(r"webserver: down \d+ seconds", x) for x in lines), lines
        stalls_at("Restarting servers on spb-br-sys-cal-3")
        d = diagnose(TREE)
        assert found(d) == [("webserver-not-running", "spb-br-sys-cal-3")]
        finding = next(f for f in d.report["findings"] if f["id"] == "webserver-not-running")
        assert finding["contact"] == "CAS OCD"
        assert re.search(r"webserver: down \d+ seconds",
                         evidence(d, "webserver-up", "spb-br-sys-cal-3"))
    finally:
        heal(spb, "SPB")
    finishes()


def test_webserver_filter_mismatch_stalls_restart_11_1(spb):
    inject(spb, kind="webserver_filter", host="spb-br-sys-cal-2")
    try:
        run = (spbonc(spb, "spb-br-sys-cal-2") / "var/service/webserver/run").read_text()
        assert run.rstrip().endswith("--filter cppspb_spb_cal_2 pyspb_spb_cal_2 mlspb_spb_cal_")
        stalls_at("Restarting mlspb_spb_cal_2 on spb-br-sys-cal-2")
        d = diagnose(TREE)
        assert found(d) == [("webserver-filter-wrong", "spb-br-sys-cal-2")]
        assert "--filter does not name mlspb_spb_cal_2" in evidence(
            d, "filter-covers", "spb-br-sys-cal-2")
    finally:
        heal(spb, "SPB")
    finishes()
    # Healed and restarted: every hypothesis holds on every host.
    healthy = diagnose(TREE)
    assert (healthy.code, found(healthy), healthy.unknowns) == (0, [], [])
    assert sorted(s["subject"] for s in healthy.steps if s["id"] == "filter-covers") == HOSTS


def test_bad_webserver_template_stalls_restart_11_1(spb):
    inject(spb, kind="bad_webserver_template", template="http://{host}:8008")
    try:
        stalls_at("Restarting servers on spb-br-sys-cal-0")
        d = diagnose(TREE)
        assert found(d) == [("webserver-template-wrong", h) for h in HOSTS]
        assert "port 8008, the webserver listens on --port 8080" in evidence(
            d, "template-addresses", "spb-br-sys-cal-0")
    finally:
        heal(spb, "SPB")
    finishes()
