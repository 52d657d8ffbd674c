"""calibrationDbRemote access points (11.3, 12): the caldb ZMQ protocol, as a Karabo device.

Each device runs one `caldb.remote.AccessPoint` over the twin's calibration DB
(`sim.caldb_twin`) on ``tcp://<its host's address>:<port>`` and publishes that endpoint,
so a client finds the access point through Karabo (the device answers) and talks to it over
ZMQ (the access point answers).  Its lines (12.1: "Waiting on data", "Start searching in
Calibration Catalogue...", "Got calibration: ...", "Registered ... successfully") go to
stdout in the Karabo shape, which multilog keeps in ``var/log/<server>/current``.  A killed
server takes its access points with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from karabo.middlelayer import AccessMode, Overwrite, State, String, UInt32

from ._base import TwinDevice

__all__ = ["TwinCalDbRemote"]


class TwinCalDbRemote(TwinDevice):
    """One access point (``SA<n>_DAQ_DATA/DM/CAL_REMOTE_<k>``, ``MAX_WEB_DATA/DM/...``)."""

    state = Overwrite(defaultValue=State.INIT, options=[State.INIT, State.ON, State.ERROR])
    port = UInt32(displayedName="ZMQ port", defaultValue=0, accessMode=AccessMode.INITONLY)
    endpoint = String(displayedName="ZMQ endpoint", defaultValue="",
                      accessMode=AccessMode.READONLY)
    requests = UInt32(displayedName="Requests received", defaultValue=0,
                      accessMode=AccessMode.READONLY)
    mode = String(displayedName="Serving mode", defaultValue="ok",
                  options=["ok", "slow", "hung"],
                  description="hung: takes queries and never answers nor logs (12.2, an "
                              "overloaded server); a fault sets it, a restart clears it")

    _point: Any = None

    async def setup(self) -> None:
        try:
            self._point = await asyncio.to_thread(self._start)
        except Exception as exc:  # noqa: BLE001 - the device shows why it cannot serve
            self.say("ERROR", f"cannot serve the calibration DB: {exc}")
            self.state = State.ERROR
            return
        self.endpoint = self._point.endpoint
        self.state = State.ON

    def _start(self) -> Any:
        """In a thread: caldb's imports and the DB's opening must not hold up the server."""
        from caldb.remote import AccessPoint, KaraboLogFormatter
        from caldb.store import CalDB
        from sim import caldb_twin, mutations

        log = logging.getLogger(f"caldb.remote.{self.deviceId}")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(KaraboLogFormatter())
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False

        twin = os.environ["RUNBOOK_TWIN_DIR"]
        db = CalDB.open(caldb_twin.db_url(twin), caldb_twin.store_root(twin))
        address = os.environ.get("RUNBOOK_TWIN_ADDRESS", "127.0.0.1")
        port = int(self.port) or "*"
        device = str(self.deviceId)

        def logged(version: Any) -> None:   # the twin's mutation log (sim.mutations)
            mutations.record(twin, "db", device,
                             f"inject {version.calibration} for {version.physical_name}")

        return AccessPoint(device, db, f"tcp://{address}:{port}", on_inject=logged).start()

    async def tick(self) -> None:
        if self._point is None:
            return
        if int(self.requests) != self._point.received:
            self.requests = self._point.received
        if self._point.mode != str(self.mode):
            self._point.set_mode(str(self.mode), delay_s=5.0)

    async def onDestruction(self) -> None:
        if self._point is not None:
            await asyncio.to_thread(self._point.stop)
            self._point.db.close()
        await super().onDestruction()
