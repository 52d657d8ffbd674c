"""Per-module devices of the online pipeline: SPLITTER, correction, MEDIUM GAIN ADJUST.

States follow what the devices see:
- a device comes up in INIT (not initialised); data reaching an uninitialised splitter
  puts it in ERROR ("pushing data during a restart", 11.2), which only a server restart
  clears;
- ``initialize`` takes ~1 s with a GPU, far longer without CUDA on the server's PATH (11.2);
- ``loadConstants`` (CHANGING) asks the calibrationDbRemote access points; it fails and
  stays CHANGING with empty dates if none answers, if no constant matches the conditions,
  or if data arrives while it loads (11.3);
- the GPU memory shows 0 MB free until data arrives (11.7); a wrong input channel leaves
  it low and produces no corrected output;
- latency grows once images/s exceed the capacity (256 with a GPU, 11.6).
"""

from __future__ import annotations

import asyncio
import os
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from karabo.middlelayer import (
    AccessMode,
    Bool,
    Double,
    Overwrite,
    Slot,
    State,
    String,
    UInt32,
    VectorString,
    background,
)

from engine.pulse_filter import PulseFilterError, parse_pulse_filter

from ._base import TwinDevice, read, split_channel

__all__ = ["TwinSplitter", "TwinCorrection", "TwinGainAdjust", "latency_ms",
           "GPU_CAPACITY", "CPU_CAPACITY"]

GPU_CAPACITY = 256.0  # images/s (11.6: "up to 256 images/s"); 128 is "always safe"
CPU_CAPACITY = 16.0
GPU_TOTAL_MB = 16160.0


def latency_ms(images_per_s: float, capacity: float) -> float:
    """Steady latency of corrected data (11.6: 1500 ms at 128 img/s, 2000 ms at 256)."""
    safe = capacity / 2
    if images_per_s <= safe:
        return 1000.0 + 500.0 * images_per_s / safe
    return 1500.0 + 500.0 * (images_per_s - safe) / safe


class TwinSplitter(TwinDevice):
    """FEM_SPLITTER_Q<q>M<m>: takes a module's trains from its DAQ aggregator."""

    state = Overwrite(defaultValue=State.INIT,
                      options=[State.INIT, State.CHANGING, State.ON, State.ACTIVE,
                               State.ERROR])
    module = UInt32(defaultValue=0, accessMode=AccessMode.INITONLY)
    aggregatorId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    managerId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    memoryCells = UInt32(defaultValue=352, accessMode=AccessMode.INITONLY)
    outputToGpu = Bool(displayedName="Output to GPU", defaultValue=True)
    outputTo = String(displayedName="Output to", defaultValue="A", options=["A", "B"])
    filterPulses = String(displayedName="Filter pulses", defaultValue="",
                          description="Module-local pulse filter; empty: the manager's")
    inputRate = Double(displayedName="Input rate", defaultValue=0.0,
                       accessMode=AccessMode.READONLY)
    gpuRate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    output_0Rate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    output_1Rate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    pulses = UInt32(displayedName="Pulses per train", defaultValue=0,
                    accessMode=AccessMode.READONLY)
    imagesPerSecond = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)

    @Slot(displayedName="Initialize", allowedStates=[State.INIT, State.ON, State.ACTIVE])
    async def initialize(self) -> None:
        self.state = State.ON
        self.status = "Initialized"

    @Slot(displayedName="Reset", allowedStates=[State.ON, State.ACTIVE, State.CHANGING])
    async def reset(self) -> None:
        self.state = State.ON
        self.status = "Reset"

    async def tick(self) -> None:
        agg = await read(str(self.aggregatorId), ["outputRate", "state"])
        incoming = float(agg["outputRate"]) if agg else 0.0
        if incoming > 0 and self.state_is(State.INIT):
            self.state = State.ERROR
            self.status = "Received data before initialization"
            self.say("ERROR", "Received data before initialization; restart the server")
        mgr = await read(str(self.managerId), ["outputEveryNthTrain", "pulseFilter"])
        nth = max(1, int(mgr["outputEveryNthTrain"])) if mgr else 50
        expr = str(self.filterPulses) or (str(mgr["pulseFilter"]) if mgr else "range(64)")
        try:
            pulses = len(parse_pulse_filter(expr, int(self.memoryCells)))
        except PulseFilterError as exc:
            self.status = f"Bad pulse filter: {exc}"
            pulses = 0
        working = self.state_is(State.ON, State.ACTIVE)
        rate = incoming / nth if working else 0.0
        gpu = rate if self.outputToGpu.value else 0.0
        a = rate if str(self.outputTo) == "A" else 0.0
        b = rate if str(self.outputTo) == "B" else 0.0
        for key, value in (("inputRate", rate), ("gpuRate", gpu), ("output_0Rate", a),
                           ("output_1Rate", b), ("pulses", pulses),
                           ("imagesPerSecond", gpu * pulses)):
            if float(getattr(self, key)) != value:
                setattr(self, key, value)
        if working:
            want = State.ACTIVE if rate > 0 else State.ON
            if not self.state_is(want):
                self.state = want


def _retrieve(endpoints: list[str], detector_type: str, rows: dict[str, str], name: str,
              pdu: str) -> tuple[str | None, str | None]:
    """(the newest matching version's start date, None) or (None, why not)."""
    from caldb.errors import CalDBError, CalDBUnreachable
    from caldb.remote_client import RemoteClient
    from detectors import ConditionsError
    from sim.caldb_twin import calcat_conditions

    unavailable = "Resource temporarily unavailable"
    if not endpoints:
        return None, unavailable
    try:
        wanted = calcat_conditions(detector_type, rows)
    except ConditionsError as exc:
        return None, str(exc)
    client = RemoteClient(endpoints, timeout_s=10.0, max_attempts=len(endpoints),
                          backoff_s=0.1)
    try:
        version, _ = client.retrieve(calibration=name, conditions=wanted,
                                     event_at=datetime.now(UTC), pdu=pdu)
    except CalDBUnreachable:
        return None, unavailable
    except CalDBError as exc:
        return None, str(exc)
    return version.begin_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), None


class TwinCorrection(TwinDevice):
    """The module's correction device: constants from the DB, processing on the GPU."""

    _caldb_thread: ThreadPoolExecutor | None = None

    state = Overwrite(defaultValue=State.INIT,
                      options=[State.INIT, State.CHANGING, State.ON, State.ACTIVE,
                               State.ERROR])
    module = UInt32(defaultValue=0, accessMode=AccessMode.INITONLY)
    expectedInput = String(defaultValue="", accessMode=AccessMode.INITONLY)
    dataInput = String(displayedName="Input channel", defaultValue="",
                   description="The splitter output this device is connected to")
    detectorType = String(defaultValue="AGIPD", accessMode=AccessMode.INITONLY)
    karaboId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    physicalDevice = String(displayedName="Physical device", defaultValue="",
                            accessMode=AccessMode.INITONLY)
    managerId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    calRemotes = VectorString(displayedName="Calibration DB access points", defaultValue=[])
    constants = VectorString(defaultValue=["Offset", "Noise", "BadPixelsDark"],
                             accessMode=AccessMode.INITONLY)
    optionalConstants = VectorString(defaultValue=[], accessMode=AccessMode.INITONLY)
    loadSeconds = Double(defaultValue=1.2, accessMode=AccessMode.INITONLY)
    cpuInitSeconds = Double(defaultValue=120.0,
                            accessMode=AccessMode.INITONLY)
    offsetDate = String(displayedName="Offset date", defaultValue="",
                        accessMode=AccessMode.READONLY)
    noiseDate = String(displayedName="Noise date", defaultValue="",
                       accessMode=AccessMode.READONLY)
    badPixelsDarkDate = String(displayedName="BadPixelsDark date", defaultValue="",
                               accessMode=AccessMode.READONLY)
    thresholdsDarkDate = String(displayedName="ThresholdsDark date", defaultValue="",
                                accessMode=AccessMode.READONLY)
    slopesFFDate = String(displayedName="SlopesFF date", defaultValue="",
                          accessMode=AccessMode.READONLY)
    gpuAvailable = Bool(displayedName="GPU available", defaultValue=False,
                        accessMode=AccessMode.READONLY)
    gpuMemoryFree = Double(displayedName="GPU memory free", defaultValue=0.0,
                           accessMode=AccessMode.READONLY,
                           description="MB free on the GPU; 0 until data arrives")
    inputRate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    outputRate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    latency = Double(displayedName="Latency", defaultValue=0.0,
                     accessMode=AccessMode.READONLY, description="milliseconds")
    _loading: bool = False
    _backlog_ms: float = 0.0

    async def setup(self) -> None:
        if not str(self.dataInput):
            self.dataInput = str(self.expectedInput)
        self.gpuAvailable = cuda_on_path()

    @Slot(displayedName="Initialize", allowedStates=[State.INIT, State.ON, State.ACTIVE])
    async def initialize(self) -> None:
        self.outputRate = 0.0
        self.state = State.CHANGING
        self.status = "Initializing"
        background(self._initialize())

    async def _initialize(self) -> None:
        # Slots answer as soon as the device is in the topology, before `setup` has run.
        self.gpuAvailable = cuda_on_path()
        if self.gpuAvailable.value:
            await asyncio.sleep(0.5)
        else:
            self.say("WARN", "CUDA not found on PATH: falling back to CPU processing")
            self.status = "Initializing (no GPU: CPU fallback, slow)"
            await asyncio.sleep(float(self.cpuInitSeconds))
        for key in _DATE_KEYS.values():
            setattr(self, key, "")
        self.gpuMemoryFree = 0.0
        self.state = State.ON
        self.status = "Initialized"

    @Slot(displayedName="Reset", allowedStates=[State.ON, State.ACTIVE, State.CHANGING])
    async def reset(self) -> None:
        self._loading = False
        self._backlog_ms = 0.0
        self.outputRate = 0.0  # at once: a MEDIUM GAIN ADJUST must not count stale output
        self.state = State.ON
        self.status = "Reset"

    @Slot(displayedName="Load constants", allowedStates=[State.ON, State.ACTIVE])
    async def loadConstants(self) -> None:
        self.state = State.CHANGING
        self.status = "Loading constants"
        for key in _DATE_KEYS.values():
            setattr(self, key, "")
        self._loading = True
        background(self._load())

    async def _conditions(self) -> dict[str, str]:
        """The manager's rows; a manager slow to answer (a busy broker) is asked again."""
        mgr = None
        for _ in range(3):
            mgr = await read(str(self.managerId), ["operatingConditions"])
            if mgr is not None:
                break
        rows = mgr["operatingConditions"] if mgr else []
        return {str(r["parameter"]): str(r["value"]) for r in rows}

    async def _input_rate(self) -> float:
        try:
            device, channel = split_channel(str(self.dataInput))
        except ValueError:
            return 0.0
        src = await read(device, [f"{channel}Rate"])
        return float(src[f"{channel}Rate"]) if src else 0.0

    async def _load(self) -> None:
        conditions = await self._conditions()
        dates: dict[str, str] = {}
        for name in [*self.constants.value, *self.optionalConstants.value]:
            required = name in self.constants.value
            date = await self._fetch(name, conditions)
            if not self._loading:
                return
            if await self._data_while_loading():
                self.say("WARN", f"Data arrived while loading {name}: constants not loaded")
                self.status = "Loading constants failed: data arrived while loading"
                return  # stays CHANGING with empty dates, as at the facility (11.3)
            if date is None:
                if required:
                    self.status = f"Could not find constant {name}"
                    return
                self.say("INFO", f"No optional constant {name}: continuing without it")
                continue
            dates[name] = date
        for name, date in dates.items():
            setattr(self, _DATE_KEYS[name], date)
        self._loading = False
        self.state = State.ACTIVE
        self.status = "Constants loaded"

    async def _data_while_loading(self) -> bool:
        """Loading one constant (transfer to the GPU) takes ``loadSeconds``; data
        arriving meanwhile spoils it."""
        end = asyncio.get_running_loop().time() + float(self.loadSeconds)
        while asyncio.get_running_loop().time() < end:
            if await self._input_rate() > 0:
                return True
            await asyncio.sleep(0.25)
        return False

    async def _fetch(self, name: str, conditions: dict[str, str]) -> str | None:
        """Ask the access points over ZMQ (random order, the next one if one does not
        answer); an access point whose device does not answer is not tried."""
        endpoints = []
        for remote in self.calRemotes.value:
            got = await read(remote, ["endpoint", "state"])
            for _ in range(40):  # a starting access point: as long as a ZMQ client waits
                if not got or got.get("state") != "INIT":
                    break
                await asyncio.sleep(0.5)
                got = await read(remote, ["endpoint", "state"])
            if got and got.get("endpoint"):
                endpoints.append(str(got["endpoint"]))
        # A thread of the device's own, for caldb's imports and the wait on ZMQ: neither
        # may hold up the server's event loop (INIT shares it), nor its default executor.
        if self._caldb_thread is None:
            self._caldb_thread = ThreadPoolExecutor(1, thread_name_prefix="caldb")
        date, problem = await asyncio.get_running_loop().run_in_executor(
            self._caldb_thread, partial(_retrieve, endpoints, str(self.detectorType), conditions,
                                        name, str(self.physicalDevice)))
        if problem:
            self.say("WARN", f"Could not find constant {name}: {problem}")
        return date

    async def tick(self) -> None:
        rate = await self._input_rate()
        if float(self.inputRate) != rate:
            self.inputRate = rate
        if not self.state_is(State.ACTIVE) or rate <= 0:
            if float(self.outputRate) != 0.0:
                self.outputRate = 0.0
            return
        device, channel = split_channel(str(self.dataInput))
        src = await read(device, ["pulses", "module"])
        if str(self.dataInput) != str(self.expectedInput) or src is None \
                or int(src["module"]) != int(self.module):
            # Wrong stream: buffers sized for other data fill the GPU, nothing comes out.
            self.gpuMemoryFree = 180.0
            self.outputRate = 0.0
            self.status = f"Input {self.dataInput} does not deliver this module's data"
            return
        images = rate * int(src["pulses"])
        capacity = GPU_CAPACITY if self.gpuAvailable.value else CPU_CAPACITY
        self.gpuMemoryFree = 9830.0 if self.gpuAvailable.value else 0.0
        if images > capacity:
            self._backlog_ms += 1000.0 * float(self.period) * (images / capacity - 1.0)
            out = rate * capacity / images * random.uniform(0.4, 1.0)
        else:
            self._backlog_ms = max(0.0, self._backlog_ms - 1000.0 * float(self.period))
            out = rate
        self.latency = latency_ms(min(images, capacity), capacity) + self._backlog_ms
        if float(self.outputRate) != out:
            self.outputRate = out


_DATE_KEYS = {"Offset": "offsetDate", "Noise": "noiseDate",
              "BadPixelsDark": "badPixelsDarkDate", "ThresholdsDark": "thresholdsDarkDate",
              "SlopesFF": "slopesFFDate"}


def cuda_on_path() -> bool:
    """True if PATH names a CUDA bin folder that exists on this (twin) host."""
    root = Path(os.environ.get("RUNBOOK_TWIN_HOST_ROOT", "/"))
    for entry in os.environ.get("PATH", "").split(":"):
        if "/cuda" in entry and entry.rstrip("/").endswith("/bin"):
            if (root / entry.lstrip("/")).is_dir():
                return True
    return False


class TwinGainAdjust(TwinDevice):
    """MEDIUM GAIN ADJUST (AGIPD): ACTIVE only after it has seen some trains (11.5)."""

    state = Overwrite(defaultValue=State.INIT,
                      options=[State.INIT, State.ON, State.CHANGING, State.ACTIVE,
                               State.ERROR])
    module = UInt32(defaultValue=0, accessMode=AccessMode.INITONLY)
    correctionId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    trainsNeeded = UInt32(displayedName="Trains before active", defaultValue=5)
    trainsSeen = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    outputRate = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)
    latency = Double(defaultValue=0.0, accessMode=AccessMode.READONLY)

    @Slot(displayedName="Initialize", allowedStates=[State.INIT, State.ON, State.ACTIVE,
                                                     State.CHANGING])
    async def initialize(self) -> None:
        self.trainsSeen = 0.0
        self.state = State.ON
        self.status = "Waiting for data to compute gain parameters"

    @Slot(displayedName="Reset", allowedStates=[State.ON, State.ACTIVE, State.CHANGING])
    async def reset(self) -> None:
        self.trainsSeen = 0.0
        self.state = State.ON

    async def tick(self) -> None:
        corr = await read(str(self.correctionId), ["outputRate", "latency"])
        rate = float(corr["outputRate"]) if corr else 0.0
        if self.state_is(State.INIT):
            return
        if rate > 0 and not self.state_is(State.ACTIVE):
            self.trainsSeen = float(self.trainsSeen) + rate * float(self.period)
            self.state = State.CHANGING
            self.status = "Computing medium gain parameters"
            if float(self.trainsSeen) >= int(self.trainsNeeded):
                self.state = State.ACTIVE
                self.status = "Gain parameters computed"
        out = rate if self.state_is(State.ACTIVE) else 0.0
        if float(self.outputRate) != out:
            self.outputRate = out
        if corr and float(self.latency) != float(corr["latency"]) + 100.0:
            self.latency = float(corr["latency"]) + 100.0
