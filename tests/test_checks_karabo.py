"""karabo.* checks and actions against real Karabo: a private RabbitMQ and one middlelayer
server running the twin's own device classes (detector, DAQ, CAL_MANAGER, corrections,
calibrationDbRemote), on a topic of its own.  One such mini twin serves the whole module.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from checks import karabo as kc
from checks import karabo_actions
from checks._karabo import KaraboClient
from engine.context import Context, Resources
from engine.errors import TransportError
from engine.registry import MutationRefused, Registry, mutations_allowed

pytestmark = [pytest.mark.twin, pytest.mark.slow]

DET_ON, DET_OFF = "KT/DET/ON", "KT/DET/OFF"
RC, RC_ACT = "KT/DAQ/RUN_CONTROL", "KT/DAQ/RC_ACTIONS"
DA_ON, DA_OFF = "KT/DAQ/DA/00", "KT/DAQ/DA/01"
MGR_OK, MGR_BAD, MGR_GONE = "KT/CAL/MANAGER_OK", "KT/CAL/MANAGER_BAD", "KT/CAL/MANAGER_GONE"
CORR_A, CORR_B = "KT/CAL/OFFSET_CORR_Q1M1", "KT/CAL/OFFSET_CORR_Q1M2"
REMOTE = "KT_DAQ_DATA/DM/CAL_REMOTE_0"
SERVER_ID = "mlkt/kt_cal_0"


def _devices(root: Path) -> dict[str, dict[str, Any]]:
    good = [{"parameter": "memory_cells", "value": "352"},
            {"parameter": "acquisition_rate", "value": "1.1"},
            {"parameter": "bias_voltage", "value": "300"},
            {"parameter": "beam_energy", "value": ""}]
    bad = [{"parameter": "memory_cells", "value": "None"},
           {"parameter": "acquisition_rate", "value": "4.5"},
           {"parameter": "beam_energy", "value": "9.3"}]
    corr = {"classId": "TwinCorrection", "managerId": MGR_OK, "calRemotes": [REMOTE],
            "cpuInitSeconds": 0.2, "loadSeconds": 0.3}
    return {
        DET_ON: {"classId": "TwinDetector"},
        DET_OFF: {"classId": "TwinDetector"},
        RC: {"classId": "TwinRunController", "dataRoot": str(root)},
        RC_ACT: {"classId": "TwinRunController", "dataRoot": str(root)},
        DA_ON: {"classId": "TwinDataAggregator", "channel": 0, "detectorId": DET_ON,
                "runControllerId": RC},
        DA_OFF: {"classId": "TwinDataAggregator", "channel": 1, "detectorId": DET_OFF,
                 "runControllerId": RC},
        MGR_OK: {"classId": "TwinCalManager", "corrections": [CORR_A],
                 "operatingConditions": good},
        MGR_BAD: {"classId": "TwinCalManager", "corrections": [CORR_A, CORR_B],
                  "operatingConditions": bad},
        MGR_GONE: {"classId": "TwinCalManager", "corrections": [CORR_A, "KT/CAL/NOT_THERE"]},
        CORR_A: {**corr, "physicalDevice": "PD00"},
        CORR_B: {**corr, "physicalDevice": "PD01"},
        REMOTE: {"classId": "TwinCalDbRemote"},
    }


def _constants(root: Path) -> None:
    """PD00's darks at the good conditions, in the DB that the access point serves."""
    from caldb.store import CalDB
    from detectors import get_detector_type
    from detectors.dark.seed import dark_seed
    from sim import caldb_twin

    (root / "caldb").mkdir()
    conditions = caldb_twin.calcat_conditions(
        "AGIPD", {"memory_cells": "352", "acquisition_rate": "1.1", "bias_voltage": "300"})
    with CalDB.open(caldb_twin.db_url(root), caldb_twin.store_root(root)) as db:
        db.seed(dark_seed(get_detector_type("AGIPD"), "KT_DET", [0, 1], caldb_twin.PDU_SINCE,
                          pdus={0: "PD00", 1: "PD01"}))
        for name in ("Offset", "Noise", "BadPixelsDark"):
            db.inject(pdu="PD00", calibration=name, conditions=conditions,
                      begin_at=datetime(2024, 3, 12, 9, 14, 3, tzinfo=UTC),
                      data=np.zeros((2, 2), np.float32))


def _poll(what: str, predicate: Any, deadline_s: float = 60.0) -> Any:
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = predicate()
        except TransportError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {deadline_s:g} s (last: {last!r})")


class MiniTwin:
    def __init__(self, broker: str, topic: str, server: subprocess.Popen[bytes], log: Path):
        self.broker, self.topic, self.server, self.log = broker, topic, server, log
        self.shared = Resources()   # one client for the module's tests, as for one walk

    def ctx(self, *, mode: str = "diagnose", timeout: float = 20.0, broker: str | None = None,
            topic: str | None = None, call_timeout: float = 5.0) -> Context:
        karabo = {"broker": broker or self.broker, "topic": topic or self.topic,
                  "gui_server": "localhost"}
        own = broker is not None or topic is not None
        return Context(mode=mode, site="test", transport={"karabo": {"timeout": call_timeout}},
                       instrument="KT", timeout=timeout,
                       resources=Resources() if own else self.shared,
                       instrument_info={"name": "KT", "karabo": karabo})


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniTwin]:
    from sim.broker import Broker, free_port

    root = tmp_path_factory.mktemp("karabo-checks")
    _constants(root)
    broker = Broker.start(root, port=free_port())
    topic = f"kt{secrets.token_hex(4)}"
    home = root / "karabo"
    (home / "var" / "data").mkdir(parents=True)
    devices = _devices(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARABO")}
    env.update(KARABO=str(home), KARABO_BROKER=broker.url, KARABO_BROKER_TOPIC=topic,
               RUNBOOK_TWIN_DIR=str(root))
    classes = ",".join(sorted({d["classId"] for d in devices.values()}))
    log = root / "server.log"
    server = None
    try:
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [str(Path(sys.executable).parent / "karabo-middlelayerserver"),
                 f"serverId={SERVER_ID}", f"deviceClasses={classes}",
                 "init=" + json.dumps(devices)],
                env=env, cwd=home / "var" / "data", stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        twin = MiniTwin(broker.url, topic, server, log)
        _prepare(twin, set(devices))
        yield twin
        twin.shared.close()
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=5)
        broker.stop()


def _prepare(twin: MiniTwin, devices: set[str]) -> None:
    """Wait for every device; start one detector; load CORR_A's constants (not CORR_B's)."""
    client = KaraboClient(twin.broker, twin.topic)
    try:
        _poll("every device in the topology",
              lambda: devices <= set(client.topology(5)["device"]))
        # The access point opens the DB in the background: ON once it serves (11.3 at the
        # facility too: constants loaded before that are "Resource temporarily unavailable").
        _poll("the access point serving", lambda: client.get(REMOTE, ["state"], 5)["state"] == "ON")
        client.call(DET_ON, "start", [], 5)
        client.call(CORR_A, "initialize", [], 5)
        _poll("CORR_A initialized", lambda: client.get(CORR_A, ["state"], 5)["state"] == "ON")
        client.call(CORR_A, "loadConstants", [], 5)
        _poll("CORR_A constants loaded",
              lambda: client.get(CORR_A, ["state"], 5)["state"] == "ACTIVE")
        _poll("DA_ON forwarding", lambda: client.get(DA_ON, ["outputRate"], 5)["outputRate"] > 0)
    finally:
        client.close()


def run(fn: Any, twin: MiniTwin, ctx: Context | None = None, **params: Any) -> Any:
    """Call a check as the walker would: params through its model; resources closed after."""
    from engine.errors import RunbookError
    from engine.result import Result

    ctx = ctx or twin.ctx()
    model = fn.__annotations__["p"]
    if isinstance(model, str):
        model = getattr(kc, model)
    try:
        return fn(model.model_validate(params), ctx)
    except RunbookError as exc:   # what the walker does with a transport error
        return Result.unknown(str(exc))
    finally:
        if ctx.resources is not twin.shared:
            ctx.resources.close()


# ---- device_state, property ------------------------------------------------------------

@pytest.mark.parametrize(("device", "states", "outcome"), [
    pytest.param(RC, ["MONITORING", "ACQUIRING"], "ok", id="daq-monitoring-10.2"),
    pytest.param(MGR_OK, ["ACTIVE"], "fail", id="pipeline-not-started-10.2"),
])
def test_device_state(mini: MiniTwin, device: str, states: list[str], outcome: str) -> None:
    result = run(kc.device_state, mini, device=device, states=states)
    assert result.outcome == outcome
    assert result.observed["state"] == ("MONITORING" if device == RC else "PASSIVE")
    assert device in result.evidence


@pytest.mark.parametrize(("device", "prop", "expect", "outcome"), [
    pytest.param(DET_OFF, "sending", {"equals": False}, "ok", id="detector-quiet-3.2"),
    pytest.param(DET_OFF, "sending", {"equals": True}, "fail", id="detector-not-sending"),
    pytest.param(DET_ON, "sending", {"equals": True}, "ok", id="detector-sending"),
    pytest.param(DET_ON, "memoryCells", {"at_least": 300, "at_most": "352"}, "ok",
                 id="bounds-from-templates"),
    pytest.param(DET_ON, "memoryCells", {"at_most": 202}, "fail", id="above-at-most"),
    pytest.param(DET_ON, "detectorType", {"in": ["LPD", "AGIPD"]}, "ok", id="in"),
    pytest.param(DET_ON, "detectorType", {"matches": "^LPD"}, "fail", id="matches"),
    pytest.param(DET_ON, "status", {"not_empty": True}, "ok", id="not-empty"),
    pytest.param(DA_ON, "DataDispatcher.trainStride", {"equals": 1}, "ok", id="dotted-path"),
    pytest.param(DET_ON, "detectorType", {"at_least": 1}, "unknown", id="bound-on-text"),
    pytest.param(DET_ON, "noSuchProperty", {"equals": 1}, "unknown", id="no-such-property"),
])
def test_property(mini: MiniTwin, device: str, prop: str, expect: dict[str, Any],
                  outcome: str) -> None:
    result = run(kc.device_property, mini, device=device, property=prop, **expect)
    assert result.outcome == outcome, result
    if outcome == "unknown":
        assert result.reason


def test_property_needs_an_expectation() -> None:
    with pytest.raises(ValueError, match="at least one expectation"):
        kc.PropertyCheck.model_validate({"device": "X", "property": "y"})


# ---- properties_table -------------------------------------------------------------------

def test_operating_conditions_as_expected(mini: MiniTwin) -> None:
    result = run(kc.properties_table, mini, device=MGR_OK, empty=["beam_energy"],
                 equals={"memory_cells": 352, "acquisition_rate": "1.1"})
    assert result.outcome == "ok", result
    assert result.observed["rows"]["memory_cells"] == "352"


def test_operating_conditions_none_and_beam_energy_11_3(mini: MiniTwin) -> None:
    result = run(kc.properties_table, mini, device=MGR_BAD, empty=["beam_energy"],
                 equals={"acquisition_rate": 1.1}, required=["bias_voltage"])
    assert result.outcome == "fail"
    problems = " | ".join(result.observed["problems"])
    assert "memory_cells shows 'None'" in problems
    assert "beam_energy is '9.3', expected empty" in problems
    assert "acquisition_rate is '4.5'" in problems
    assert "bias_voltage is missing" in problems


# ---- devices_online ---------------------------------------------------------------------

def test_devices_online_all_present(mini: MiniTwin) -> None:
    result = run(kc.devices_online, mini, devices=[MGR_OK, CORR_A, RC])
    assert result.outcome == "ok"
    assert result.observed["where"][MGR_OK].startswith(SERVER_ID)


def test_devices_online_reports_missing(mini: MiniTwin) -> None:
    result = run(kc.devices_online, mini, devices=[MGR_OK, "KT/CAL/INIT"])
    assert result.outcome == "fail"
    assert result.observed["missing"] == ["KT/CAL/INIT"]
    assert result.observed["present"] == [MGR_OK]


@pytest.mark.parametrize(("params", "outcome"), [
    pytest.param({"pattern": "/CAL/", "host_pattern": "^exflonc"}, "ok",
                 id="no-cal-devices-on-exflonc-11.2"),
    pytest.param({"pattern": "/CAL/", "server_pattern": "kt_cal"}, "fail",
                 id="cal-devices-found"),
])
def test_devices_online_expect_none(mini: MiniTwin, params: dict[str, Any],
                                    outcome: str) -> None:
    result = run(kc.devices_online, mini, expect="none", **params)
    assert result.outcome == outcome
    if outcome == "fail":
        assert CORR_A in result.observed["present"]
        assert "KT/DET/ON" not in result.observed["present"]


# ---- rates ------------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "prop", "counter", "outcome"), [
    pytest.param(DA_ON, "outputRate", False, "ok", id="rate-updating"),
    pytest.param(DA_OFF, "outputRate", False, "fail", id="rate-zero"),
    pytest.param(DET_ON, "trainId", True, "ok", id="counter-moving"),
    pytest.param(DET_OFF, "trainId", True, "fail", id="counter-stale"),
])
def test_rates(mini: MiniTwin, device: str, prop: str, counter: bool, outcome: str) -> None:
    result = run(kc.rates, mini, device=device, property=prop, counter=counter, interval=1.2)
    assert result.outcome == outcome, result
    assert len(result.observed["samples"]) == 2
    if counter and outcome == "ok":
        assert result.observed["samples"][1] > result.observed["samples"][0]


def test_rate_below_expected_minimum(mini: MiniTwin) -> None:
    result = run(kc.rates, mini, device=DA_ON, property="outputRate", interval=0.2,
                 min_rate=50)
    assert result.outcome == "fail"
    assert result.observed["rate"] == pytest.approx(10.0)


# ---- constant_dates ---------------------------------------------------------------------

def test_constant_dates_all_set(mini: MiniTwin) -> None:
    result = run(kc.constant_dates, mini, manager=MGR_OK)
    assert result.outcome == "ok", result
    assert result.observed["dates"][CORR_A]["offsetDate"] == "2024-03-12T09:14:03"


def test_constant_dates_empty_on_one_device_11_3(mini: MiniTwin) -> None:
    result = run(kc.constant_dates, mini, manager=MGR_BAD)
    assert result.outcome == "fail"
    assert list(result.observed["empty"]) == [CORR_B]
    assert set(result.observed["empty"][CORR_B]) == {"offsetDate", "noiseDate",
                                                     "badPixelsDarkDate"}


def test_constant_dates_unreadable_device_is_unknown(mini: MiniTwin) -> None:
    result = run(kc.constant_dates, mini, manager=MGR_GONE)
    assert result.outcome == "unknown"
    assert "KT/CAL/NOT_THERE" in result.reason and "not online" in result.reason


# ---- unreachable broker, unknown device --------------------------------------------------

def test_wrong_broker_is_unknown(mini: MiniTwin) -> None:
    from sim.broker import free_port

    ctx = mini.ctx(broker=f"amqp://guest:guest@127.0.0.1:{free_port()}")
    result = run(kc.device_state, mini, ctx, device=RC, states=["MONITORING"])
    assert result.outcome == "unknown"
    assert "cannot connect to the Karabo broker" in result.reason


def test_unknown_device_is_unknown_not_timeout(mini: MiniTwin) -> None:
    result = run(kc.device_state, mini, mini.ctx(call_timeout=4), device="KT/NO/SUCH",
                 states=["ON"])
    assert result.outcome == "unknown"
    assert "KT/NO/SUCH is not online" in result.reason


def test_wrong_topic_sees_no_devices(mini: MiniTwin) -> None:
    ctx = mini.ctx(topic=f"{mini.topic}_other")
    result = run(kc.devices_online, mini, ctx, devices=[RC])
    assert result.outcome == "fail"
    assert result.observed["missing"] == [RC]


# ---- actions ----------------------------------------------------------------------------

def _registered() -> Registry:
    reg = Registry()
    reg.register_module(kc)
    reg.register_module(karabo_actions)
    return reg


@pytest.mark.parametrize(("name", "params"), [
    ("karabo.call", {"device": RC_ACT, "slot": "ignore"}),
    ("karabo.set", {"device": RC_ACT, "property": "proposal", "value": 900002}),
])
def test_actions_refused_outside_run_mode(mini: MiniTwin, name: str,
                                          params: dict[str, Any]) -> None:
    entry = _registered().get(name)
    with pytest.raises(MutationRefused):
        entry.fn(entry.model.model_validate(params), mini.ctx())
    assert run(kc.device_state, mini, device=RC_ACT, states=["MONITORING"]).outcome == "ok"
    assert run(kc.device_property, mini, device=RC_ACT, property="proposal",
               equals=900001).outcome == "ok"


def test_actions_in_run_mode(mini: MiniTwin) -> None:
    reg = _registered()
    ctx = mini.ctx(mode="run")

    def act(name: str, **params: Any) -> Any:
        entry = reg.get(name)
        return entry.fn(entry.model.model_validate(params), ctx)

    token = mutations_allowed().set(True)
    try:
        before_call = time.time()
        stale = run(kc.state_since, mini, device=RC_ACT, states=["MONITORING"],
                    since=before_call)
        assert stale.outcome == "fail" and "before the action began" in stale.evidence
        done = act("karabo.call", device=RC_ACT, slot="ignore")
        assert done.outcome == "ok", done
        waited = act("karabo.wait_state", device=RC_ACT, states=["IGNORING"], timeout=10)
        assert waited.outcome == "ok" and waited.observed["state"] == "IGNORING"
        # the resume's postcondition: this state came after the call began, not before
        since = run(kc.state_since, mini, device=RC_ACT, states=["IGNORING"],
                    since=before_call)
        assert since.outcome == "ok" and since.observed["changed"] >= before_call, since
        other = run(kc.state_since, mini, device=RC_ACT, states=["ACQUIRING"],
                    since=before_call)
        assert other.outcome == "fail" and "expected ACQUIRING" in other.evidence
        refused = act("karabo.call", device=RC_ACT, slot="record")
        assert refused.outcome == "fail"
        assert "not allowed in state" in refused.evidence
        back = act("karabo.call", device=RC_ACT, slot="monitor")
        assert back.outcome == "ok"
        too_late = act("karabo.wait_state", device=RC_ACT, states=["ACQUIRING"], timeout=1.5,
                       interval=0.3)
        assert too_late.outcome == "fail" and too_late.observed["state"] == "MONITORING"
        changed = act("karabo.set", device=RC_ACT, property="proposal", value=900002)
        assert changed.outcome == "ok" and changed.observed["value"] == 900002
    finally:
        mutations_allowed().reset(token)


# ---- through the walker -----------------------------------------------------------------

RUNBOOK = """\
id: kt-online
title: Karabo checks in a walk
kind: diagnosis
source: "10.2"
params:
  instrument: {type: instrument}
start: all
steps:
  all:
    source: "10.2"
    all: [daq, manager, ghost]
  daq:
    source: "10.2"
    check: karabo.device_state
    with: {device: "{{ instrument.devices.daq_run_controller }}", states: [MONITORING]}
    on: {ok: end, fail: daq-bad, unknown: end}
  manager:
    source: "10.2"
    check: karabo.device_state
    with: {device: "{{ instrument.devices.cal_manager }}", states: [ACTIVE]}
    on: {ok: end, fail: not-started, unknown: end}
  ghost:
    source: "10.2"
    check: karabo.property
    with: {device: "{{ instrument.devices.detector }}", property: sending, equals: false}
    timeout: 20
    on: {ok: end, fail: end, unknown: end}
  daq-bad: {source: "10.2", finding: The DAQ is not monitoring}
  not-started: {source: "10.2", finding: The pipeline is not started}
"""


def test_walk_reports_findings_and_unknowns(mini: MiniTwin, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            write_runbook: Any, load: Any,
                                            registry: Any) -> None:
    from engine.inventory import load_site
    from engine.walk import Walker

    site = tmp_path / "sites" / "ktest"
    site.mkdir(parents=True)
    (site / "site.yaml").write_text(textwrap.dedent(f"""\
        site: ktest
        extends: local
        transport:
          karabo: {{broker: "{mini.broker}", timeout: 4}}
        instruments:
          LAB:
            karabo: {{gui_server: localhost, broker: "{mini.broker}", topic: {mini.topic}}}
            devices: {{daq_run_controller: {RC}, cal_manager: {MGR_OK},
                       detector: KT/DET/GHOST}}
        """))
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))
    catalog = load(write_runbook("kt.yaml", RUNBOOK).parent)
    report = Walker(catalog, registry, load_site("ktest"), mode="diagnose",
                    instrument="LAB").walk("kt-online", {"instrument": "LAB"})
    assert [f.title for f in report.findings] == ["The pipeline is not started"]
    assert [(u.id, u.subject) for u in report.unknowns] == [("ghost", "KT/DET/GHOST")]
    assert "not online" in report.unknowns[0].reason
    daq = next(s for s in report.steps if s.id == "daq")
    assert daq.outcome == "ok" and daq.observed["state"] == "MONITORING"


def test_client_closes_with_the_walk(mini: MiniTwin) -> None:
    import threading

    from checks._karabo import client_for

    ctx = mini.ctx(topic=mini.topic + "_lifecycle")   # its own Resources, as one walk
    client = client_for(ctx)
    assert client_for(ctx) is client
    client.topology(5)
    proc = client._proc
    assert proc is not None and proc.poll() is None
    ctx.resources.close()
    assert proc.poll() is not None
    assert all(t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    with pytest.raises(TransportError, match="closed"):
        client.topology(5)
