"""The detector, the DAQ run controller and its XTDF data aggregators (10.1, 10.2, 11.5).

Data exists only when the detector is powered, configured and acquiring; each module
sends unless it is listed as not sending; an aggregator forwards its module's trains
(every ``DataDispatcher.trainStride``-th) while the run controller is in MONITORING or
RECORD (State.ACQUIRING, the state Karabo's DAQ uses for recording) and the aggregator is
not in ERROR.

Recording (10.1): RECORD creates the run folder at once, as the facility's DAQ does, under
``dataRoot`` (the twin's GPFS, which every host, exflonc10 included, sees as ``/gpfs``).
Once ``trainsPerModule`` trains of a module are recorded, the RAW files of every module
that sent are written through ``sim.rawdata`` while the run goes on (a small run: a few
trains); a run stopped earlier is written when it stops.  A run without data leaves its
folder empty.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from karabo.middlelayer import (
    AccessMode,
    Bool,
    Configurable,
    Double,
    Node,
    Overwrite,
    Slot,
    State,
    String,
    UInt32,
    UInt64,
    VectorInt32,
    VectorString,
)

from ._base import TwinDevice, read

__all__ = ["TwinDetector", "TwinRunController", "TwinDataAggregator", "make_run_folder",
           "write_run_files"]


class TwinDetector(TwinDevice):
    """The MHz detector's control device: powered, configured, sending (ACQUIRING)."""

    state = Overwrite(defaultValue=State.ON,
                      options=[State.OFF, State.ON, State.ACQUIRING, State.ERROR])
    detectorType = String(defaultValue="AGIPD", accessMode=AccessMode.INITONLY)
    modules = UInt32(defaultValue=16, accessMode=AccessMode.INITONLY)
    powered = Bool(displayedName="Powered", defaultValue=True)
    configured = Bool(displayedName="Configured", defaultValue=True)
    sending = Bool(displayedName="Sending data", defaultValue=False,
                   accessMode=AccessMode.READONLY)
    trainRate = Double(displayedName="Train rate", defaultValue=10.0,
                       minInc=0.0)
    acquisitionRate = Double(displayedName="Acquisition rate", defaultValue=1.1,
                             description="Pulse rate in MHz")
    memoryCells = UInt32(displayedName="Memory cells", defaultValue=352)
    modulesNotSending = VectorInt32(displayedName="Modules not sending", defaultValue=[],
                                    description="Module indices (0-15) that send no data")
    trainId = UInt64(displayedName="Train ID", defaultValue=1_000_000_000,
                     accessMode=AccessMode.READONLY)
    managerId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    startSendingWhen = String(
        displayedName="Operator starts sending when manager status contains",
        defaultValue="",
        description="Models an operator who starts the detector on seeing this text in "
                    "the CAL_MANAGER status (empty: never).")

    @Slot(displayedName="Start", allowedStates=[State.ON])
    async def start(self) -> None:
        if not (self.powered.value and self.configured.value):
            self.status = "Cannot start: detector not powered or not configured"
            return
        self.state = State.ACQUIRING
        self.sending = True
        self.status = "Sending data"

    @Slot(displayedName="Stop", allowedStates=[State.ACQUIRING])
    async def stop(self) -> None:
        self.state = State.ON
        self.sending = False
        self.status = "Stopped"

    async def tick(self) -> None:
        if not self.powered.value:
            if not self.state_is(State.OFF):
                self.state = State.OFF
                self.sending = False
                self.status = "Not powered"
            return
        if self.state_is(State.OFF):
            self.state = State.ON
            self.status = "Powered"
        if self.state_is(State.ACQUIRING) and not self.configured.value:
            self.state = State.ON
            self.sending = False
            self.status = "Configuration lost: stopped sending"
        trigger = str(self.startSendingWhen)
        if trigger and self.state_is(State.ON) and str(self.managerId):
            mgr = await read(str(self.managerId), ["status"])
            if mgr and trigger in str(mgr.get("status", "")):
                await self.start()
        if self.state_is(State.ACQUIRING):
            self.trainId = int(self.trainId) + int(float(self.trainRate) * float(self.period))

    def module_rate(self, module: int) -> float:
        if not self.state_is(State.ACQUIRING) or module in list(self.modulesNotSending.value):
            return 0.0
        return float(self.trainRate)


class TwinRunController(TwinDevice):
    """The DAQ run controller: IGNORING, MONITORING, or recording (ACQUIRING)."""

    state = Overwrite(defaultValue=State.MONITORING,
                      options=[State.IGNORING, State.MONITORING, State.ACQUIRING,
                               State.CHANGING, State.ERROR])
    instrument = String(defaultValue="SPB", accessMode=AccessMode.INITONLY)
    karaboId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    detectorType = String(defaultValue="AGIPD", accessMode=AccessMode.INITONLY)
    aggregators = VectorString(defaultValue=[], accessMode=AccessMode.INITONLY)
    dataRoot = String(displayedName="GPFS root", defaultValue="",
                      accessMode=AccessMode.INITONLY)
    cycle = String(displayedName="Cycle", defaultValue="202401")
    proposal = UInt32(displayedName="Proposal", defaultValue=900001)
    runNumber = UInt32(displayedName="Run number", defaultValue=0,
                       accessMode=AccessMode.READONLY)
    trainsPerModule = UInt32(displayedName="Trains written per module", defaultValue=3,
                             minInc=1,
                             description="Once a module has this many trains recorded, the "
                                         "run's files are written (keeps twin runs small)")
    lastRunPath = String(displayedName="Last run folder", defaultValue="",
                         accessMode=AccessMode.READONLY)
    _recorded: dict[int, list[int]]
    _written: bool
    _lock: asyncio.Lock

    async def setup(self) -> None:
        self._recorded = {}
        self._written = False
        self._lock = asyncio.Lock()

    @Slot(displayedName="Ignore", allowedStates=[State.MONITORING])
    async def ignore(self) -> None:
        self.state = State.IGNORING

    @Slot(displayedName="Monitor", allowedStates=[State.IGNORING, State.ACQUIRING])
    async def monitor(self) -> None:
        if self.state_is(State.ACQUIRING):
            await self._end_run()
        self.state = State.MONITORING

    @Slot(displayedName="Record", allowedStates=[State.MONITORING])
    async def record(self) -> None:
        self._recorded = {}
        self._written = False
        run = int(self.runNumber) + 1
        try:  # the facility's DAQ opens the run folder when the run starts
            run = await asyncio.get_running_loop().run_in_executor(
                None, make_run_folder, self._run_params(run, {}))
        except (OSError, ValueError) as exc:
            self.say("ERROR", f"cannot create the folder of run {run}: {exc}")
        self.runNumber = run
        self.state = State.ACQUIRING
        self.status = f"Recording run {run}"

    async def tick(self) -> None:
        if not self.state_is(State.ACQUIRING):
            return
        for agg_id in list(self.aggregators.value):
            agg = await read(agg_id, ["channel", "outputRate", "trainId"])
            if agg and float(agg["outputRate"]) > 0:
                trains = self._recorded.setdefault(int(agg["channel"]), [])
                trains.append(int(agg["trainId"]))
        enough = max((len(t) for t in self._recorded.values()), default=0)
        if not self._written and enough >= int(self.trainsPerModule):
            await self._write(ended=False)

    async def _end_run(self) -> None:
        self.state = State.CHANGING
        await self._write(ended=True)

    async def _write(self, *, ended: bool) -> None:
        """Write the run's files once: during the run when enough trains are recorded,
        else when it ends (an empty run leaves only its folder)."""
        async with self._lock:
            run = int(self.runNumber)
            if self._written:
                if ended:
                    self.status = f"Run {run} ended"
                return
            recorded = {m: t for m, t in self._recorded.items() if t}
            try:
                path = await asyncio.get_running_loop().run_in_executor(
                    None, write_run_files, self._run_params(run, recorded))
            except (ImportError, OSError, ValueError) as exc:
                self.say("ERROR", f"writing run {run} failed: {exc}")
                self.status = f"Run {run}: files not written: {exc}"
                return
            self._written = True
            self.lastRunPath = str(path)
            what = f"{len(recorded)} modules written" if recorded else "no data"
            self.status = f"Run {run} ended: {what}" if ended else \
                f"Recording run {run}: {what}"

    def _run_params(self, run: int, recorded: dict[int, list[int]]) -> dict[str, Any]:
        return {"root": str(self.dataRoot), "instrument": str(self.instrument),
                "cycle": str(self.cycle), "proposal": int(self.proposal), "run": run,
                "detector_type": str(self.detectorType), "karabo_id": str(self.karaboId),
                "modules": sorted(recorded),
                "trains": min(int(self.trainsPerModule),
                              max((len(t) for t in recorded.values()), default=0)),
                "first_train_id": min((t[0] for t in recorded.values()), default=1)}


def make_run_folder(params: dict[str, Any]) -> int:
    """Create the folder of a new run (empty: RECORD has just started) and return its
    number: ``params["run"]``, or past the proposal's last run folder, since run numbers
    are never reused (the twin's folder may hold runs of an earlier ``sim up``)."""
    from sim import rawdata

    first = rawdata.run_path(Path(params["root"]), params["instrument"], params["cycle"],
                             params["proposal"], 1)
    first.parent.mkdir(parents=True, exist_ok=True)
    taken = [int(d.name[1:]) for d in first.parent.iterdir()
             if d.name[:1] == "r" and d.name[1:].isdigit()]
    run = max([int(params["run"]) - 1, *taken]) + 1
    (first.parent / f"r{run:04d}").mkdir()
    return run


def write_run_files(params: dict[str, Any]) -> Path:
    """The one place where the DAQ writes RAW data (``sim.rawdata`` owns the format)."""
    from sim import rawdata

    root = Path(params["root"])
    run_dir = rawdata.run_path(root, params["instrument"], params["cycle"],
                               params["proposal"], params["run"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if not params["modules"] or params["trains"] == 0:
        return run_dir  # a run without data: the folder exists, no files (10.1)
    rawdata.write_raw_run(
        root, params["instrument"], params["cycle"], params["proposal"], params["run"],
        params["detector_type"], params["karabo_id"], modules=params["modules"],
        trains=params["trains"], first_train_id=params["first_train_id"])
    return run_dir


class DataDispatcher(Configurable):
    trainStride = UInt32(displayedName="Train stride", defaultValue=1, minInc=1,
                         description="Forward every n-th train to the online pipeline")


class TwinDataAggregator(TwinDevice):
    """One XTDF data aggregator (channel = module, Q1M1 is channel 0)."""

    state = Overwrite(defaultValue=State.ON,
                      options=[State.ON, State.ACTIVE, State.ERROR])
    channel = UInt32(defaultValue=0, accessMode=AccessMode.INITONLY)
    detectorId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    runControllerId = String(defaultValue="", accessMode=AccessMode.INITONLY)
    DataDispatcher = Node(DataDispatcher)
    hardwareFault = String(
        displayedName="Hardware fault", defaultValue="",
        description="Twin cause: a failing network card or disk of this aggregator node. "
                    "While set, the aggregator is in ERROR.")
    inputRate = Double(displayedName="Input rate", defaultValue=0.0,
                       accessMode=AccessMode.READONLY)
    outputRate = Double(displayedName="Online output rate", defaultValue=0.0,
                        accessMode=AccessMode.READONLY)
    trainId = UInt64(defaultValue=0, accessMode=AccessMode.READONLY)

    @Slot(displayedName="Reset", allowedStates=[State.ERROR])
    async def reset(self) -> None:
        if str(self.hardwareFault):
            self.status = f"Reset failed: {self.hardwareFault}"
            return
        self.state = State.ON
        self.status = "Reset"

    async def tick(self) -> None:
        if str(self.hardwareFault) and not self.state_is(State.ERROR):
            self.state = State.ERROR
            self.status = f"Data aggregator error: {self.hardwareFault}"
            self.say("ERROR", str(self.status))
        det = await read(str(self.detectorId), ["state", "modulesNotSending", "trainRate",
                                                "trainId"])
        rate = 0.0
        if det and det["state"] == State.ACQUIRING.value \
                and int(self.channel) not in list(det["modulesNotSending"]):
            rate = float(det["trainRate"])
            self.trainId = int(det["trainId"])
        self.inputRate = rate
        daq = await read(str(self.runControllerId), ["state"])
        online = daq is not None and daq["state"] in (State.MONITORING.value,
                                                      State.ACQUIRING.value)
        out = 0.0
        if online and not self.state_is(State.ERROR):
            out = rate / max(1, int(self.DataDispatcher.trainStride))
        if float(self.outputRate) != out:
            self.outputRate = out
        if not self.state_is(State.ERROR):
            want = State.ACTIVE if out > 0 else State.ON
            if not self.state_is(want):
                self.state = want
