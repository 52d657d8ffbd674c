"""Issue 12, "a dry run that cannot mutate", against the twin: every runbook of the catalog,
planned with `--probe` and (the diagnosis trees) diagnosed, on the healthy twin and on the
twin with the DAQ in IGNORE (10.2), leaves the twin's mutation log (`sim.mutations`) as it
was.  And the log is not blind: a slot call and a set from a client appear in it.  The
trees that need the webservice and the offline access points (NOT_ON_TWIN) are walked the
same way on their own twin, in tests/twin/test_offline_chain.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from checks._karabo import KaraboClient
from engine.context import Resources
from engine.registry import MutationRefused, mutations_allowed
from engine.runs import Session
from engine.runs import walk as run_walk
from sim import mutations
from tests.twin._kit import IDS, dev, flowing, inject, wait
from tests.twin.test_diagnose_e2e import CATALOG, NOT_ON_TWIN, PARAMS, TREES

pytestmark = pytest.mark.twin

#: what the procedures need beyond --instrument to be planned on the twin
PLAN_PARAMS: dict[str, list[str]] = {
    **PARAMS,
    "bridge-single-module": ["module=5"],
    "bridge-single-module-revert": ["module=5"],
    "disable-constants": ["physical_device=AGIPD", "start_from=2020-01-01",
                          "start_to=2020-01-02", "why=dry run test"],
    "dark-characterization": ["detector=SPB_DET_AGIPD1M-1", "runs=1,2,3", "proposal=700000"],
    "request-dark": ["detector=SPB_DET_AGIPD1M-1", "runs=1,2,3", "proposal=700000"],
    "restart-webservice": ["reason=dry run test", "down_since=2020-01-01T00:00:00"],
    "no-report": ["detector=SPB_DET_AGIPD1M-1", "runs=1,2,3", "proposal=700000"],
    "report-errors": ["detector=SPB_DET_AGIPD1M-1", "runs=1,2,3", "proposal=700000"],
}
#: the diagnosis trees that the session twin cannot walk are not planned either
SKIP = {rid for rid, reason in TREES if reason is not None} | set(NOT_ON_TWIN)


def _walks() -> list[tuple[str, str]]:
    out = []
    for rid, lr in sorted(CATALOG.runbooks.items()):
        if rid in SKIP or lr.runbook.status == "draft" or "examples" in lr.path.parts:
            continue
        out.append(("plan", rid))
        if lr.runbook.kind == "diagnosis":
            out.append(("diagnose", rid))
    return out


WALKS = _walks()


def walk(session: Session, shared: Resources, mode: str, rid: str) -> dict[str, Any]:
    """`plan <rid> --probe` or `diagnose <rid>` through `engine.runs.walk`, as the CLI
    does, in this process: one Karabo client and one SSH pool serve every walk (a CLI
    process per walk would start both again, ~4 s of CPU each time)."""
    params = dict(p.split("=", 1) for p in PLAN_PARAMS.get(rid, []))
    try:
        report, _ = run_walk(session, mode, rid, params, instrument="SPB",  # type: ignore[arg-type]
                             probe=mode == "plan", resources=shared)
    except Exception as exc:  # noqa: BLE001 - the test lists what crashed
        return {"walk": f"{mode} {rid}", "error": f"{type(exc).__name__}: {exc}"}
    return {"walk": f"{mode} {rid}", "report": report}


def walk_all(walks: list[tuple[str, str]] = WALKS) -> list[dict[str, Any]]:
    session = Session.load("sim")
    shared = Resources()
    try:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda w: walk(session, shared, *w), walks))
    finally:
        shared.close()


def refused(results: list[dict[str, Any]]) -> list[str]:
    """Walks where a transport refused something: a check that tried to change the twin
    (a refusal inside a check becomes an unknown with that reason)."""
    return [f"{r['walk']}: {u.id}: {u.reason}" for r in results if "report" in r
            for u in r["report"].unknowns if "refused to" in u.reason]


def crashed(results: list[dict[str, Any]]) -> list[str]:
    return [f"{r['walk']}: {r['error']}" for r in results if "error" in r]


def test_dry_runs_change_nothing_on_a_healthy_twin_12(running):
    before = len(mutations.read(running))
    results = walk_all()
    assert mutations.read(running)[before:] == []
    assert crashed(results) == []
    assert refused(results) == []


def test_dry_runs_change_nothing_with_the_daq_ignoring_12(running):
    inject(running, kind="daq_not_monitoring")
    try:
        wait(lambda: str(dev("run_controller").state) == "IGNORING", 30)
        before = len(mutations.read(running))
        results = walk_all()
        after = mutations.read(running)[before:]
    finally:
        flowing(running)
    assert after == []
    assert crashed(results) == []
    assert refused(results) == []


def test_the_mutation_log_sees_a_clients_slot_call_and_set_12(spb):
    manager = IDS["cal_manager"]
    client = KaraboClient(str(spb.broker_url), spb.topics["SPB"])
    try:
        before = len(mutations.read(spb))
        timeout = float(client.get(manager, ["initTimeout"], 10)["initTimeout"])
        client.set(manager, {"initTimeout": timeout}, 10)
        client.call(manager, "verifyConfig", [], 10)
        token = mutations_allowed().set(False)   # as in a plan or diagnose walk
        try:
            with pytest.raises(MutationRefused):
                client.call(manager, "verifyConfig", [], 10)
        finally:
            mutations_allowed().reset(token)
    finally:
        client.close()
    seen = [(e["kind"], e["target"], e["what"]) for e in mutations.read(spb)[before:]]
    assert seen == [("set", manager, "initTimeout"), ("slot", manager, "verifyConfig")]
    callers = {e["caller"] for e in mutations.read(spb)[before:]}
    assert len(callers) == 1 and callers.pop().startswith("runbook-")
