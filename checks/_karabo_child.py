"""The child process of `checks._karabo`: the real Karabo middlelayer client on its own
event loop, answering JSON requests, one line each, on a private pipe (the module
docstring of `checks._karabo` says why it is a separate process).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import Any

from checks._karabo import APPEAR_S, DEFAULT_TIMEOUT, SETTLE_S, DeviceOffline


def _plain(value: Any) -> Any:
    """A Karabo value as JSON-able Python: Hash -> dict, tables -> list of dicts, State -> str."""
    import enum

    import numpy as np
    from karabo.middlelayer import Hash

    if isinstance(value, Hash):
        return {k: _plain(value[k]) for k in value}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _serve() -> None:
    """Run the client: Karabo's loop in this (main) thread, stdin read by a daemon thread."""
    import asyncio
    import socket

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)   # Karabo prints; keep it off the reply pipe
    sys.stdout = sys.stderr

    def reply(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg, default=str) + "\n")

    try:
        from karabo.middlelayer import DeviceClientBase, KaraboError
        from karabo.middlelayer.eventloop import EventLoop
    except ImportError as exc:
        reply({"id": 0, "error": f"Karabo is not installed: {exc}", "kind": "unreachable"})
        return

    class Client(DeviceClientBase):
        pass

    try:
        loop = EventLoop()
    except RuntimeError as exc:   # e.g. a broker URL scheme Karabo does not know
        reply({"id": 0, "error": str(exc), "kind": "unreachable"})
        return
    asyncio.set_event_loop(loop)
    host = socket.gethostname().replace(".", "_")
    client = Client({"_deviceId_": f"runbook-{host}-{os.getpid()}"})
    handler = _Handler(client, KaraboError)
    stop = asyncio.Event()

    def feed() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(handler.spawn, line, reply, stop)
        loop.call_soon_threadsafe(stop.set)

    async def main() -> None:
        try:
            await client.startInstance()
        except (RuntimeError, OSError, KaraboError) as exc:
            reply({"id": 0, "error": str(exc) or type(exc).__name__, "kind": "unreachable"})
            return
        reply({"id": 0, "result": "ready"})
        threading.Thread(target=feed, daemon=True).start()
        await stop.wait()
        with contextlib.suppress(TimeoutError, KaraboError, RuntimeError, OSError):
            await asyncio.wait_for(client.slotKillDevice(), 2)   # leave the topology

    loop.run_until_complete(main())
    proto.close()
    os._exit(0)   # Karabo's executor threads must not hold the exit up


def _broker_connected() -> bool:
    from karabo.middlelayer.broker import get_connector

    return bool(get_connector().is_connected)


class _Handler:
    """Runs each request as a task of the client device (Karabo's calls need that)."""

    def __init__(self, client: Any, karabo_error: type[Exception]) -> None:
        self.client = client
        self.karabo_error = karabo_error
        self.settled = False

    def spawn(self, line: str, reply: Any, stop: Any) -> None:
        import asyncio

        try:
            msg = json.loads(line)
        except ValueError:
            return
        if msg.get("op") == "quit":
            stop.set()
            return
        loop: Any = asyncio.get_event_loop()   # Karabo's EventLoop: tasks know their device
        loop.create_task(self.run(msg, reply), instance=self.client)

    async def run(self, msg: dict[str, Any], reply: Any) -> None:
        import asyncio

        ident, timeout = msg.get("id"), float(msg.get("timeout") or DEFAULT_TIMEOUT)
        op = getattr(self, f"op_{msg.get('op')}", None)
        if op is None:
            reply({"id": ident, "error": f"unknown request {msg.get('op')!r}", "kind": "remote"})
            return
        if not _broker_connected():  # else the topology seen before would answer
            reply({"id": ident, "kind": "unreachable",
                   "error": "lost the connection to the Karabo broker "
                            f"{os.environ.get('KARABO_BROKER')}"})
            return
        try:
            result = await asyncio.wait_for(op(msg, timeout), timeout)
        except TimeoutError:
            what = msg.get("device") or "the broker"
            reply({"id": ident, "error": f"no answer from {what} within {timeout:g} s",
                   "kind": "timeout"})
        except DeviceOffline as exc:
            reply({"id": ident, "error": str(exc), "kind": "offline"})
        except self.karabo_error as exc:
            first = str(exc).split("\nDETAILS:", 1)[0].strip()
            reply({"id": ident, "error": first, "kind": "remote"})
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
            reply({"id": ident, "error": f"{type(exc).__name__}: {exc}", "kind": "remote"})
        else:
            reply({"id": ident, "result": _plain(result)})

    async def _settle(self, timeout: float) -> None:
        """Let the discovery answers arrive (once): a busy broker delivers them late."""
        import asyncio

        if self.settled:
            return
        seen, still = -1, time.monotonic()
        end = time.monotonic() + min(5 * SETTLE_S, 0.6 * timeout)
        while time.monotonic() < end:
            count = len(self.client.systemTopology["device"])
            if count != seen:
                seen, still = count, time.monotonic()
            elif time.monotonic() - still >= SETTLE_S:
                break
            await asyncio.sleep(0.05)
        self.settled = True

    async def _online(self, device: str, timeout: float) -> None:
        import asyncio

        end = time.monotonic() + min(APPEAR_S, timeout / 2)
        while device not in self.client.systemTopology["device"]:
            if time.monotonic() >= end:
                raise DeviceOffline(f"device {device} is not online (not in the topology of "
                                    f"topic {os.environ.get('KARABO_BROKER_TOPIC')})")
            await asyncio.sleep(0.05)

    async def op_topology(self, msg: dict[str, Any], timeout: float) -> Any:
        await self._settle(timeout)
        topo = self.client.systemTopology
        me = self.client.deviceId
        return {kind: {k: dict(a) for k, _, a in topo[kind].iterall() if k != me}
                for kind in ("device", "server")}

    async def op_get(self, msg: dict[str, Any], timeout: float) -> Any:
        from karabo.middlelayer import getProperties

        await self._online(msg["device"], timeout)
        got = await getProperties(msg["device"], list(msg["keys"]))
        return {k: got[k] for k in msg["keys"] if k in got}

    async def op_stamps(self, msg: dict[str, Any], timeout: float) -> Any:
        """``{key: [value, Unix time of its last change]}``: a postcondition asks whether
        a state changed after an action began (`checks.karabo.state_since`)."""
        from karabo.middlelayer import Timestamp, getProperties

        await self._online(msg["device"], timeout)
        got = await getProperties(msg["device"], list(msg["keys"]))
        out = {}
        for key in msg["keys"]:
            if key in got:
                stamp = Timestamp.fromHashAttributes(got[key, ...])
                out[key] = [got[key], None if stamp is None else stamp.toTimestamp()]
        return out

    async def op_configuration(self, msg: dict[str, Any], timeout: float) -> Any:
        from karabo.middlelayer import Hash, getConfiguration

        await self._online(msg["device"], timeout)
        conf = await getConfiguration(msg["device"])
        return {p: conf[p] for p in conf.paths() if not isinstance(conf[p], Hash)}

    async def op_call(self, msg: dict[str, Any], timeout: float) -> Any:
        from karabo.middlelayer import call

        await self._online(msg["device"], timeout)
        return await call(msg["device"], msg["slot"], *[_hash(a) for a in msg["args"]])

    async def op_set(self, msg: dict[str, Any], timeout: float) -> Any:
        from karabo.middlelayer import setWait

        await self._online(msg["device"], timeout)
        pairs = [x for kv in msg["values"].items() for x in (kv[0], _hash(kv[1]))]
        await setWait(msg["device"], *pairs)
        return None


def _hash(value: Any) -> Any:
    """JSON objects become Hashes (the middlelayer's argument type for structures)."""
    from karabo.middlelayer import Hash

    if isinstance(value, dict):
        return Hash(*[x for k, v in value.items() for x in (k, _hash(v))])
    if isinstance(value, list):
        return [_hash(v) for v in value]
    return value


if __name__ == "__main__":
    _serve()
