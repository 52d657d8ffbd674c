"""CAL_MANAGER and INIT (3.4, 3.6, 11.2-11.6), the APPENDERs and the ZMQ bridge.

``start_pipeline`` initialises every processing device (a deadline: devices that never
answer, or stay uninitialised, make it time out, 11.2), then has the correction devices
load their constants and waits, without a deadline, until they are ACTIVE: stuck
corrections keep the manager in CHANGING (11.3).  After a (re)start the manager outputs
every 50th train (11.6).
"""

from __future__ import annotations

import asyncio
import random
import time

from karabo.middlelayer import (
    AccessMode,
    Configurable,
    Double,
    KaraboError,
    Overwrite,
    Slot,
    State,
    String,
    UInt32,
    VectorHash,
    VectorString,
    background,
)

from ._base import TwinDevice, invoke, read, split_channel

__all__ = ["TwinCalManager", "TwinInit", "TwinAppender", "TwinZmqBridge", "TwinGuiServer"]


class ConditionRow(Configurable):
    parameter = String(defaultValue="")
    value = String(defaultValue="")


class TwinCalManager(TwinDevice):
    """The calibration manager of one MHz detector."""

    state = Overwrite(defaultValue=State.PASSIVE,
                      options=[State.PASSIVE, State.CHANGING, State.ACTIVE, State.ERROR])
    detectorId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    splitters = VectorString(defaultValue=[], accessMode=AccessMode.INITONLY)
    corrections = VectorString(defaultValue=[], accessMode=AccessMode.INITONLY)
    gainAdjusts = VectorString(defaultValue=[], accessMode=AccessMode.INITONLY)
    appenders = VectorString(defaultValue=[], accessMode=AccessMode.INITONLY)
    outputEveryNthTrain = UInt32(displayedName="Output every nth train", defaultValue=50,
                                 minInc=1)
    pulseFilter = String(displayedName="Filter pulses", defaultValue="range(0, 352)")
    initTimeout = Double(displayedName="Initialization timeout", defaultValue=30.0,
                         minInc=1.0)
    operatingConditions = VectorHash(
        rows=ConditionRow, displayedName="Common operating conditions", defaultValue=[])
    verificationResult = String(displayedName="Verification result", defaultValue="",
                                accessMode=AccessMode.READONLY)

    def _processing(self) -> list[str]:
        return [*self.splitters.value, *self.corrections.value, *self.gainAdjusts.value,
                *self.appenders.value]

    @Slot(displayedName="Reset", allowedStates=[State.PASSIVE, State.ACTIVE, State.ERROR,
                                                State.CHANGING])
    async def reset(self) -> None:
        self.status = "Resetting"
        await asyncio.gather(*[self._quiet(dev, "reset") for dev in self._processing()])
        self.state = State.PASSIVE
        self.status = "Pipeline idle"

    async def _quiet(self, device: str, slot: str) -> bool:
        try:
            await invoke(device, slot, timeout=5.0)
        except (TimeoutError, KaraboError) as exc:
            self.say("WARN", f"{slot} on {device} failed: {exc}")
            return False
        return True

    @Slot(displayedName="Start pipeline", allowedStates=[State.PASSIVE, State.ERROR])
    async def start_pipeline(self) -> None:
        self.state = State.CHANGING
        self.status = "Initializing devices"
        background(self._start())

    async def _start(self) -> None:
        devices = self._processing()
        await asyncio.gather(*[self._quiet(d, "initialize") for d in devices])
        deadline = time.monotonic() + float(self.initTimeout)
        pending = list(devices)
        while pending and time.monotonic() < deadline:
            states = await asyncio.gather(*[read(d, ["state"]) for d in pending])
            pending = [d for d, s in zip(pending, states, strict=True)
                       if s is None or s["state"] not in ("ON", "ACTIVE")]
            if pending:
                await asyncio.sleep(0.5)
        if pending:
            shown = ", ".join(pending[:4]) + (" ..." if len(pending) > 4 else "")
            self.status = f"Start pipeline timed out initializing devices: {shown}"
            self.say("ERROR", str(self.status))
            self.state = State.ERROR
            return
        self.status = "Loading constants"
        corrections = list(self.corrections.value)
        await asyncio.gather(*[self._quiet(d, "loadConstants") for d in corrections])
        while True:
            states = await asyncio.gather(*[read(d, ["state"]) for d in corrections])
            if all(s is not None and s["state"] == "ACTIVE" for s in states):
                break
            if not self.state_is(State.CHANGING):
                return  # reset while waiting
            await asyncio.sleep(0.5)
        self.state = State.ACTIVE
        self.status = "Pipeline initialized"

    @Slot(displayedName="Verify config",
          allowedStates=[State.PASSIVE, State.ACTIVE, State.ERROR, State.CHANGING])
    async def verifyConfig(self) -> None:
        det = await read(str(self.detectorId), ["acquisitionRate", "memoryCells"])
        if det is None:
            self.verificationResult = "Verification failed: detector not reachable"
            self.status = str(self.verificationResult)
            return
        table = {str(r["parameter"]): str(r["value"])
                 for r in self.operatingConditions.value}
        problems = []
        for key, actual in (("acquisition_rate", det["acquisitionRate"]),
                            ("memory_cells", det["memoryCells"])):
            if key in table and not _same(table[key], actual):
                problems.append(f"{key} is {actual:g} on the detector but "
                                f"{table[key] or 'empty'} in the operating conditions")
        self.verificationResult = ("Verification failed: " + "; ".join(problems)
                                   if problems else "Verification OK")
        self.status = str(self.verificationResult)


def _same(text: str, value: float) -> bool:
    try:
        return abs(float(text) - float(value)) < 1e-6
    except ValueError:
        return False


class TwinInit(TwinDevice):
    """INIT: the command-line entry to (re)start the pipeline (3.4)."""

    state = Overwrite(defaultValue=State.ON,
                      options=[State.ON, State.CHANGING, State.ACTIVE, State.ERROR])
    managerId = String(defaultValue="", accessMode=AccessMode.INITONLY)

    @Slot(displayedName="Start pipeline", allowedStates=[State.ON, State.ACTIVE, State.ERROR])
    async def start_pipeline(self) -> None:
        self.state = State.CHANGING
        self.status = "Starting pipeline"
        background(self._follow_manager())

    async def _follow_manager(self) -> None:
        mgr = str(self.managerId)
        try:
            await invoke(mgr, "reset", timeout=10.0)
            await invoke(mgr, "start_pipeline", timeout=5.0)
        except (TimeoutError, KaraboError) as exc:
            self.state = State.ERROR
            self.status = f"CAL_MANAGER {mgr} did not answer: {exc}"
            return
        while True:
            await asyncio.sleep(0.5)
            got = await read(mgr, ["state", "status"])
            if got is None:
                continue
            self.status = f"CAL_MANAGER: {got['status']}"
            if got["state"] == "ACTIVE":
                self.state = State.ACTIVE
                return
            if got["state"] == "ERROR":
                self.state = State.ERROR
                return
            if got["state"] == "PASSIVE":  # reset meanwhile (3.6): the start was abandoned
                self.state = State.ON
                return


class TwinAppender(TwinDevice):
    """RAW or CORRECTED APPENDER: matches trains of all modules (10.2, 11.5, 11.6)."""

    state = Overwrite(defaultValue=State.INIT,
                      options=[State.INIT, State.ON, State.ACTIVE, State.ERROR])
    sources = VectorString(displayedName="Module outputs", defaultValue=[],
                           accessMode=AccessMode.INITONLY)
    minModules = UInt32(displayedName="min-modules", defaultValue=16)
    modulesReceived = UInt32(defaultValue=0, accessMode=AccessMode.READONLY)
    updateRate = Double(displayedName="Update rate", defaultValue=0.0,
                        accessMode=AccessMode.READONLY)
    outputRate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    latency = Double(displayedName="Time of flight", defaultValue=0.0,
                     accessMode=AccessMode.READONLY, description="milliseconds")

    @Slot(displayedName="Initialize", allowedStates=[State.INIT, State.ON, State.ACTIVE])
    async def initialize(self) -> None:
        self.state = State.ON

    @Slot(displayedName="Reset", allowedStates=[State.ON, State.ACTIVE])
    async def reset(self) -> None:
        self.state = State.ON

    async def tick(self) -> None:
        rates, latencies = [], []
        for channel in self.sources.value:
            device, name = split_channel(channel)
            got = await read(device, [f"{name}Rate"] + (["latency"] if name == "output"
                                                         else []))
            rate = float(got[f"{name}Rate"]) if got else 0.0
            if rate > 0:
                rates.append(rate)
                latencies.append(float(got.get("latency", 0.0)) if got else 0.0)
        count = len(rates)
        enough = count >= int(self.minModules) and count > 0
        rate = min(rates) if enough else 0.0
        if enough and latencies and max(latencies) > 2500:
            rate *= random.uniform(0.2, 0.9)  # trains rarely match once modules decouple
        if int(self.modulesReceived) != count:
            self.modulesReceived = count
        if self.state_is(State.INIT):
            rate = 0.0
        if float(self.updateRate) != rate:
            self.updateRate = rate
            self.outputRate = rate
        lat = (max(latencies) if latencies else 0.0) + 200.0 if rate > 0 else 0.0
        if float(self.latency) != lat:
            self.latency = lat
        if not self.state_is(State.INIT):
            want = State.ACTIVE if rate > 0 else State.ON
            if not self.state_is(want):
                self.state = want


class TwinZmqBridge(TwinDevice):
    """ZEROMQ/RAW: forwards one output (the RAW appender's, or a splitter's output_1)."""

    state = Overwrite(defaultValue=State.ON, options=[State.ON, State.ACTIVE, State.ERROR])
    dataInput = String(displayedName="Input channel", defaultValue="",
                       accessMode=AccessMode.INITONLY)
    outputRate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)

    async def tick(self) -> None:
        try:
            device, name = split_channel(str(self.dataInput))
        except ValueError:
            self.status = f"Bad input channel {self.dataInput!r}"
            return
        got = await read(device, [f"{name}Rate"])
        rate = float(got[f"{name}Rate"]) if got else 0.0
        if float(self.outputRate) != rate:
            self.outputRate = rate
        want = State.ACTIVE if rate > 0 else State.ON
        if not self.state_is(want):
            self.state = want


class TwinGuiServer(TwinDevice):
    """The instrument's GUI server: forwards the CORRECTED appender's images to clients."""

    state = Overwrite(defaultValue=State.ON, options=[State.ON, State.ERROR])
    appenderId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    networkFault = String(
        displayedName="Network fault", defaultValue="",
        description="Twin cause: trouble between the GUI server and its clients.")
    imageUpdateRate = Double(displayedName="Image updates to clients", defaultValue=0.0,
                             accessMode=AccessMode.READONLY)

    async def tick(self) -> None:
        got = await read(str(self.appenderId), ["updateRate"])
        rate = float(got["updateRate"]) if got else 0.0
        if str(self.networkFault):
            rate = 0.0
            text = f"Clients not updated: {self.networkFault}"
            if str(self.status) != text:
                self.status = text
        if float(self.imageUpdateRate) != rate:
            self.imageUpdateRate = rate
