"""End to end: the diagnosis trees of the whole catalog against the twin (10, 11).

- A healthy twin (pipeline ACTIVE, every module flowing, the DAQ recording a run that
  reaches disk) gives no finding and no unknown in any diagnosis tree that can run on the
  twin; trees added later are included, because the list comes from the catalog.
- Two independent causes of 10.2 at once give both findings, and the symptom they share
  (APPENDERs not updating) is not a third.
- A stopped broker makes every Karabo check `unknown`, naming the broker, never a finding.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest

from engine.loader import REPO, load_catalog
from sim.operate import online
from tests.twin._kit import IDS, Diagnosis, dev, diagnose, flowing, inject, wait

pytestmark = pytest.mark.twin

CATALOG = load_catalog()
#: parameters a tree needs on the twin, beyond --instrument
PARAMS: dict[str, list[str]] = {
    "no-data-on-disk": ["min_module_size=1M"],  # twin runs are a few trains, not gigabytes
    "faulty-constants": ["physical_device=AGIPD"],  # every SPB module (fuzzy, as 7.2#3)
}
#: diagnosis trees that cannot run on the twin, with the reason (reported as skipped)
_OFFLINE = ("the session twins run no webservice (one twin per machine may: they share its "
            "process table); tests/twin/test_offline_4_8_9.py runs it on a twin of its own")
_OWN = ("a dark request's trail: tests/twin/test_offline_faults.py walks it on a twin with "
        "the webservice, for a request of its own")
_MAX_WEB = ("the offline access points run with the webservice only; "
            "tests/twin/test_offline_chain.py walks it on its full twin")
NOT_ON_TWIN: dict[str, str] = {
    "health-webservice": _OFFLINE, "offline-status": _OFFLINE, "overview-checks": _OFFLINE,
    "no-report": _OWN, "report-errors": _OWN,
    "caldb-remote-logs": _MAX_WEB, "caldb-remote-errors": _MAX_WEB,
}
#: trees known to report a finding on a healthy twin (xfail, with the reason); remove the
#: entry once the tree is fixed
KNOWN: dict[str, str] = {}
EXAMPLES = REPO / "runbooks" / "examples"


def _trees() -> list[tuple[str, str | None]]:
    out = []
    for rid, lr in sorted(CATALOG.runbooks.items()):
        if lr.runbook.kind != "diagnosis":
            continue
        reason = NOT_ON_TWIN.get(rid)
        if lr.path.resolve().is_relative_to(EXAMPLES):
            reason = "a local example (runbooks/examples), walked with --site local"
        elif lr.runbook.status == "draft":
            reason = "a draft cannot be walked"
        out.append((rid, reason))
    return out


TREES = _trees()
RUNNABLE = [rid for rid, reason in TREES if reason is None]


@pytest.fixture(scope="module")
def healthy(spb) -> dict[str, Diagnosis]:
    """Every runnable tree, diagnosed at once on the healthy twin while the DAQ records."""
    from karabo.middlelayer import State

    corrected = dev("corrected_appender")
    if not (str(dev("cal_manager").state) == "ACTIVE" and corrected.updateRate > 0
            and corrected.modulesReceived == 16):
        online(spb, "SPB")
    rc = dev("run_controller")
    rc.record()
    try:
        wait(lambda: rc.state == State.ACQUIRING, 10)
        run = f"r{int(rc.runNumber):04d}"
        wait(lambda: str(rc.lastRunPath).endswith(run), 30)  # a few trains of 16 modules
        # Four at a time: each `runbook diagnose` is a process that needs about 2 s of CPU to
        # start, and all 25 at once on 2 cores starved their checks past 30 s timeouts.
        with ThreadPoolExecutor(4) as pool:
            reports = pool.map(lambda rid: diagnose(rid, "SPB", *PARAMS.get(rid, [])), RUNNABLE)
            found = dict(zip(RUNNABLE, reports, strict=True))
    finally:
        rc.monitor()
        wait(lambda: rc.state == State.MONITORING, 60)
    return found


def _marks(rid: str, reason: str | None) -> list[pytest.MarkDecorator]:
    if reason:
        return [pytest.mark.skip(reason=reason)]
    if rid in KNOWN:
        return [pytest.mark.xfail(reason=KNOWN[rid], strict=False)]
    return []


@pytest.mark.parametrize("tree", [pytest.param(rid, id=rid, marks=_marks(rid, reason))
                                  for rid, reason in TREES])
def test_healthy_twin_gives_no_findings_10_11(healthy, tree):
    needed = [n for n, p in CATALOG.get(tree).runbook.params.items()
              if p.type != "instrument" and p.required and p.default is None]
    given = {p.split("=", 1)[0] for p in PARAMS.get(tree, [])}
    assert set(needed) <= given, f"{tree} needs {needed}: add them to PARAMS"
    d = healthy[tree]
    assert not d.report.get("aborted"), d.report["aborted"]
    assert [(f["id"], f["subject"]) for f in d.findings] == []
    assert [(u["id"], u["reason"]) for u in d.unknowns] == []
    assert d.code == 0


def test_two_causes_at_once_give_both_findings_10_2(running):
    inject(running, kind="daq_not_monitoring")
    inject(running, kind="detector_not_sending", cause="stopped")
    try:
        raw = dev("raw_appender")
        wait(lambda: raw.updateRate == 0 and not dev("detector").sending, 30)
        d = diagnose("no-online-data")
    finally:
        flowing(running)
    assert d.code == 1
    assert d.finding("daq-not-monitoring")["subject"] == IDS["run_controller"]
    assert d.finding("detector-not-sending")["subject"] == IDS["detector"]
    assert sorted(f["id"] for f in d.findings) == ["daq-not-monitoring",
                                                   "detector-not-sending"]


def _port_open(url: str) -> bool:
    where = urlparse(url)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((where.hostname or "127.0.0.1", where.port or 5672)) == 0


def test_stopped_broker_gives_unknowns_not_findings_10_2(spb, tmp_path, monkeypatch):
    """The twin's SPB site with a broker that ran and was stopped (started here, beside
    the session twin, so that no whole twin starts for it)."""
    from sim.broker import Broker, free_port

    broker = Broker.start(tmp_path, port=free_port())
    url = broker.url
    broker.stop()  # by PID: the node's group, then its epmd
    assert not _port_open(url)
    site = tmp_path / "sites" / "stopped" / "site.yaml"
    site.parent.mkdir(parents=True)
    site.write_text(f"site: stopped\nextends: sim\ntransport:\n  karabo:\n"
                    f"    broker: \"{url}\"\ninstruments:\n  SPB:\n    karabo:\n"
                    f"      broker: \"{url}\"\n")
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))
    d = diagnose("no-online-data", site="stopped")
    assert d.code == 2 and d.findings == []
    checks = [s for s in d.steps if s["kind"] == "check"]
    assert checks and all(s["outcome"] == "unknown" for s in checks), checks
    assert all("broker" in s["reason"] for s in checks), [s["reason"] for s in checks]
    assert {u["id"] for u in d.unknowns} == {"daq-state", "detector-sending",
                                             "pipeline-active", "appender-updating"}
