"""What every twin device shares: a periodic tick, reading other devices, logging.

Devices learn what happens elsewhere only by reading other devices' properties (through
the broker, or directly when both live in the same server process), never from a shared
flag: a splitter sees data because its aggregator's output rate is non-zero, a correction
device sees no constants because no access point answers.  Messages go to stdout in the
Karabo log shape (``WARN  <deviceId> : text``), which multilog keeps in
``var/log/<server>/current`` for ``grep`` over SSH (11.3).

Every slot call and reconfiguration that a device receives from outside the twin (a
client: the runbook engine, a test) is written to the twin's mutation log
(``sim.mutations``); calls between the twin's devices are left out.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import numpy as np
from karabo.middlelayer import (
    AccessMode,
    Device,
    Double,
    Hash,
    KaraboError,
    State,
    background,
    call,
    getProperties,
    slot,
)

from sim import mutations

__all__ = ["TwinDevice", "read", "invoke", "LOCAL", "split_channel", "is_state"]

LOCAL: dict[str, TwinDevice] = {}
READ_TIMEOUT_S = 2.0


def _plain(value: Any) -> Any:
    """A property value as plain Python: State -> str, tables -> list of dicts."""
    raw = getattr(value, "value", value)
    if isinstance(raw, State):
        return raw.value
    if isinstance(raw, np.ndarray) and raw.dtype.names:
        return [{n: _plain(row[n]) for n in raw.dtype.names} for row in raw]
    if isinstance(raw, np.generic):
        return raw.item()
    if hasattr(raw, "tolist"):
        return raw.tolist()
    if isinstance(raw, list) and raw and isinstance(raw[0], Hash):
        return [{k: _plain(v) for k, v in h.items()} for h in raw]
    return raw


async def read(device_id: str, keys: list[str],
               timeout: float = READ_TIMEOUT_S) -> dict[str, Any] | None:
    """Current values of ``keys`` on ``device_id``; None when the device does not answer."""
    local = LOCAL.get(device_id)
    if local is not None:
        out: dict[str, Any] = {}
        for key in keys:
            obj: Any = local
            for part in key.split("."):
                obj = getattr(obj, part)
            out[key] = _plain(obj)
        return out
    try:
        reply = await asyncio.wait_for(getProperties(device_id, keys), timeout)
    except (TimeoutError, KaraboError, KeyError):
        return None
    return {key: _plain(reply[key]) for key in keys if key in reply}


async def invoke(device_id: str, slot: str, *args: Any,
                 timeout: float = READ_TIMEOUT_S) -> Any:
    """Call a slot on another device; raises TimeoutError or KaraboError."""
    return await asyncio.wait_for(call(device_id, slot, *args), timeout)


def split_channel(channel: str) -> tuple[str, str]:
    """``"DEV/ID/X:output"`` -> ``("DEV/ID/X", "output")``."""
    device, _, name = channel.rpartition(":")
    if not device or not name:
        raise ValueError(f"not a channel 'deviceId:channel': {channel!r}")
    return device, name


def is_state(values: dict[str, Any] | None, *states: State) -> bool:
    return values is not None and values.get("state") in {s.value for s in states}


class TwinDevice(Device):
    """Base of the twin's devices: runs ``tick()`` every ``period`` seconds."""

    period = Double(displayedName="Update period", defaultValue=1.0,
                    minInc=0.1, accessMode=AccessMode.INITONLY)

    async def onInitialization(self) -> None:
        LOCAL[self.deviceId] = self
        await self.setup()
        background(self._ticker())

    async def onDestruction(self) -> None:
        LOCAL.pop(self.deviceId, None)

    # -- the mutation log ----------------------------------------------------------------

    def _note(self, kind: str, what: str, caller: str | None) -> None:
        if not mutations.is_internal(caller):
            mutations.record(None, kind, str(self.deviceId), what, caller)

    def setValue(self, descriptor: Any, value: Any) -> None:
        """Karabo sets ``lastCommand`` to "<slot> <- <caller>" on each slot call that it
        lets through (after the lock and state checks), before the slot runs."""
        super().setValue(descriptor, value)
        if descriptor.key == "lastCommand":
            name, sep, caller = str(value).partition(" <- ")
            if sep and name != "slotReconfigure":
                self._note("slot", name, caller)

    async def slotReconfigure(self, reconfiguration: Hash, message: Any) -> None:
        caller = self._sigslot.get_property(message, "signalInstanceId")
        self._note("set", ",".join(reconfiguration.paths()), caller)
        await super().slotReconfigure(reconfiguration, message)

    slotReconfigure = slot(slotReconfigure, passMessage=True)

    async def setup(self) -> None:
        """Hook run once the device is up."""

    async def tick(self) -> None:
        """Hook run every period."""

    async def _ticker(self) -> None:
        period = float(self.period)
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except (KaraboError, ValueError, TimeoutError, OSError) as exc:
                self.say("WARN", f"update failed: {exc}")
            await asyncio.sleep(period)

    def say(self, level: str, text: str) -> None:
        print(f"{level:<5} {self.deviceId} : {text}", file=sys.stdout, flush=True)

    def state_is(self, *states: State) -> bool:
        return self.state.value in states
