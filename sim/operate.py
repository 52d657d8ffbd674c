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

__all__ = ["online", "OperateError"]


class OperateError(TwinError):
    """The instrument did not reach the online state in time."""


def online(twin: Any, instrument: str, timeout: float = 180.0) -> None:
    ids = instrument_layout(instrument).devices
    broker, topic = str(twin.broker_url), twin.topics[instrument]
    end = time.monotonic() + timeout

    def act(*actions: dict[str, Any]) -> list[Any]:
        return run_actions(broker, topic, list(actions))

    def state(device: str) -> str:
        return str(act({"device": device, "get": ["state"]})[0]["state"])

    def until(what: str, predicate: Any) -> None:
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.5)
        raise OperateError(f"{instrument} not online after {timeout:g} s: waiting for {what}")

    def flowing() -> bool:
        got = act({"device": ids["corrected_appender"],
                   "get": ["updateRate", "modulesReceived"]})[0]
        return float(got["updateRate"]) > 0 and int(got["modulesReceived"]) == MODULES

    if state(ids["cal_manager"]) == "ACTIVE" and flowing():
        return
    if state(ids["cal_manager"]) != "ACTIVE":
        if state(ids["detector"]) == "ACQUIRING":
            act({"device": ids["detector"], "call": "stop"})  # 3.2: no data during a start
        until("INIT to be ready", lambda: state(ids["init"]) in ("ON", "ACTIVE", "ERROR"))
        act({"device": ids["init"], "call": "start_pipeline"})
        until("the pipeline to be ACTIVE", lambda: state(ids["init"]) in ("ACTIVE", "ERROR"))
        if state(ids["init"]) == "ERROR":
            raise OperateError(f"{instrument}: start pipeline ended in ERROR")
    act({"device": ids["cal_manager"],
         "set": {"outputEveryNthTrain": 10, "pulseFilter": "range(128)"}})
    if state(ids["detector"]) != "ACQUIRING":
        act({"device": ids["detector"], "call": "start"})
    until("every module at the CORRECTED appender", flowing)
