"""Bring an instrument of the twin to the state of a working shift.

A fresh twin is as after a restart: pipeline not started, detector idle.  A healthy
baseline for diagnosis is what the shift has after section 3: pipeline ACTIVE, "output
every nth train" at 10 (3.5), the safe pulse filter ``range(128)`` (11.6), the detector
sending, and every module reaching the CORRECTED appender.  Faults are then applied on
top of that baseline (scenario key ``online: true``).
"""

from __future__ import annotations

import time
from typing import Any

from sim.devices.client import run_actions
from sim.layout import MODULES, instrument_layout
from sim.procs import TwinError

__all__ = ["online", "stop_detector", "restart_servers", "devices_back", "start_pipeline_again",
           "OperateError"]


class OperateError(TwinError):
    """The instrument did not reach the online state in time."""


class _Op:
    def __init__(self, twin: Any, instrument: str, timeout: float) -> None:
        self.layout = instrument_layout(instrument)
        self.ids = self.layout.devices
        self.broker, self.topic = str(twin.broker_url), twin.topics[instrument]
        self.instrument, self.timeout = instrument, timeout
        self.end = time.monotonic() + timeout

    def act(self, *actions: dict[str, Any]) -> list[Any]:
        return run_actions(self.broker, self.topic, list(actions))

    def state(self, role: str) -> str:
        return str(self.act({"device": self.ids[role], "get": ["state"]})[0]["state"])

    def changed_since(self, role: str, since: float) -> bool:
        state, at = self.act({"device": self.ids[role], "stamps": ["state"]})[0]["state"]
        return at is not None and at >= since and state != "UNKNOWN"

    def until(self, what: str, predicate: Any) -> None:
        while time.monotonic() < self.end:
            if predicate():
                return
            time.sleep(0.25)
        raise OperateError(f"{self.instrument}: not within {self.timeout:g} s: "
                           f"waiting for {what}")

    def quiet(self) -> bool:
        """No data reaches any splitter (rates drain a tick per device after a stop)."""
        got = self.act(*[{"device": s, "get": ["inputRate"]} for s in self.ids["splitters"]],
                       *[{"device": a, "get": ["outputRate"]} for a in self.ids["aggregators"]])
        return all(float(next(iter(g.values()))) == 0 for g in got)

    def stop_detector(self) -> None:
        if self.state("detector") == "ACQUIRING":
            self.act({"device": self.ids["detector"], "call": "stop"})
        self.until("the detector to stop and its data to drain",
                   lambda: self.state("detector") == "ON" and self.quiet())

    def any_splitter_in_error(self) -> bool:
        got = self.act(*[{"device": s, "get": ["state"]} for s in self.ids["splitters"]])
        return any(g["state"] == "ERROR" for g in got)

    def missing(self) -> list[str]:
        return list(self.act({"missing": self.layout.device_ids})[0])

    def devices_back(self) -> None:
        # A server counts as up (karabo-webserver's status_ok, RESTART's "All servers
        # restarted!") some seconds before its devices are.
        self.until("every device of the layout to answer", lambda: not self.missing())

    def restart_servers(self) -> None:
        """Section 3.3 through RESTART, then every device back."""
        self.until("RESTART to be idle", lambda: self.state("restart") != "CHANGING")
        self.act({"device": self.ids["restart"], "call": "restart"})
        # It may show the last restart's end until the call is seen (a restart takes > 5 s).
        self.until("RESTART to start", lambda: not self._restarted())
        self.until("RESTART to finish", self._restarted)
        self.devices_back()

    def _restarted(self) -> bool:
        got = self.act({"device": self.ids["restart"], "get": ["state", "status"]})[0]
        return bool(got["state"] == "ACTIVE" and got["status"] == "All servers restarted!")

    def start_pipeline(self) -> None:
        """Start pipeline on INIT (3.4) and wait until it is ACTIVE; ERROR raises."""
        self.until("INIT to be ready", lambda: self.state("init") in ("ON", "ACTIVE", "ERROR"))
        called = time.time()
        self.act({"device": self.ids["init"], "call": "start_pipeline"})
        # INIT may still show its last ACTIVE or ERROR: wait for a state set since the
        # call (polling for CHANGING can miss a start that is over between two polls).
        self.until("INIT to start", lambda: self.changed_since("init", called))
        self.until("the pipeline to be ACTIVE",
                   lambda: self.state("init") in ("ACTIVE", "ERROR"))
        if self.state("init") == "ERROR":
            why = self.act({"device": self.ids["cal_manager"], "get": ["status"]})
            raise OperateError(f"{self.instrument}: start pipeline ended in ERROR: {why}")

    def flowing(self) -> bool:
        got = self.act({"device": self.ids["corrected_appender"],
                        "get": ["updateRate", "modulesReceived"]})[0]
        return float(got["updateRate"]) > 0 and int(got["modulesReceived"]) == MODULES


def stop_detector(twin: Any, instrument: str, timeout: float = 30.0) -> None:
    """Stop the detector and wait until no data reaches the pipeline (3.2: a start
    pipeline with data arriving spoils the constants' loading, 11.3)."""
    _Op(twin, instrument, timeout).stop_detector()


def restart_servers(twin: Any, instrument: str, timeout: float = 180.0) -> None:
    """RESTART the calibration servers (3.3) and wait until their devices answer."""
    _Op(twin, instrument, timeout).restart_servers()


def devices_back(twin: Any, instrument: str, timeout: float = 90.0) -> None:
    """Wait until every device of the instrument's layout answers."""
    _Op(twin, instrument, timeout).devices_back()


def start_pipeline_again(twin: Any, instrument: str, timeout: float = 240.0) -> None:
    """3.6: stop the detector, reset CAL_MANAGER, start pipeline; wait until ACTIVE (new
    constants are loaded at a start)."""
    op = _Op(twin, instrument, timeout)
    op.stop_detector()
    op.act({"device": op.ids["cal_manager"], "call": "reset"})
    op.start_pipeline()


def online(twin: Any, instrument: str, timeout: float = 180.0) -> None:
    op = _Op(twin, instrument, timeout)
    op.devices_back()
    if op.state("cal_manager") == "ACTIVE" and op.flowing():
        return
    if op.state("cal_manager") != "ACTIVE":
        op.stop_detector()
        if op.any_splitter_in_error():
            op.restart_servers()  # 11.2: data before initialization needs a restart
        elif op.state("cal_manager") == "CHANGING":
            op.act({"device": op.ids["cal_manager"], "call": "reset"})  # stuck: 3.6, step 2
        op.start_pipeline()
    op.act({"device": op.ids["cal_manager"],
            "set": {"outputEveryNthTrain": 10, "pulseFilter": "range(128)"}})
    if op.state("detector") != "ACQUIRING":
        op.act({"device": op.ids["detector"], "call": "start"})
    op.until("every module at the CORRECTED appender", op.flowing)
