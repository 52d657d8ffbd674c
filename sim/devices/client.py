"""A Karabo client for the twin's own use (faults, tests): iKarabo's, on a chosen topic.

Karabo's middlelayer binds a process to one broker and topic (read from the environment
when the first connection opens).  ``ensure_client`` starts the synchronous iKarabo client
once per process; ``run_actions`` applies property changes and slot calls through it when
it is bound to that topic, and otherwise in a short-lived subprocess
(``python -m sim.devices.client``), so one process can act on any instrument.  A
subprocess costs about 1.6 s of Python and Karabo start-up; most of the tests' faults,
heals and waits act on the process's own topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from engine.errors import RunbookError

__all__ = ["ensure_client", "run_actions", "proxy", "KaraboClientError"]

_started: tuple[str, str] | None = None
_proxies: dict[str, Any] = {}


class KaraboClientError(RunbookError):
    """A Karabo action of the twin failed (device missing, slot refused, timeout)."""


def ensure_client(broker: str, topic: str) -> None:
    """Start the iKarabo device client in this process (once; the topic cannot change)."""
    global _started
    if _started is not None:
        if _started != (broker, topic):
            raise KaraboClientError(
                f"this process's Karabo client is bound to {_started[1]}; cannot switch to "
                f"{topic} (Karabo reads the topic once per process)")
        return
    os.environ["KARABO_BROKER"] = broker
    os.environ["KARABO_BROKER_TOPIC"] = topic
    # A client needs a $KARABO with var/data; one shared folder, never one per call.
    os.environ.setdefault("KARABO", os.path.join(tempfile.gettempdir(), "karabo-client"))
    os.makedirs(os.path.join(os.environ["KARABO"], "var", "data"), exist_ok=True)
    from karabo.middlelayer.ikarabo import start_device_client

    _fix_start_device()
    import asyncio
    try:  # after an asyncio.run() in this thread there is no loop, and Karabo asks for one
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    start_device_client()
    _started = (broker, topic)


def _fix_start_device() -> None:
    """Karabo 3.1.2's ``EventLoop.start_device`` releases its lock in the coroutine's
    ``finally`` and then reads ``task.result()``, which races with the task's completion
    ("InvalidStateError: Result is not set", seen about one start in ten here).  Wait for
    the coroutine's own result instead."""
    import asyncio

    from karabo.middlelayer.eventloop import EventLoop

    def start_device(self: Any, device: Any) -> Any:
        async def run_device() -> Any:
            return await device.startInstance()

        return asyncio.run_coroutine_threadsafe(run_device(), self).result()

    EventLoop.start_device = start_device


def run_actions(broker: str, topic: str, actions: Sequence[dict[str, Any]],
                timeout: float = 60.0) -> list[Any]:
    """Apply ``actions`` through Karabo; returns one result per action.

    Through this process's own client when it is bound to that topic (a subprocess per
    call costs 1.6 s), else through a subprocess.

    An action is ``{"device": id, "set": {key: value}}``, ``{"device": id, "call": slot}``,
    ``{"device": id, "get": [keys]}``, ``{"device": id, "stamps": [keys]}`` (each value with
    the time the device last changed it), or ``{"missing": [ids]}`` (those not answering).
    """
    if _started == (broker, topic):
        try:
            # Through JSON, so that both paths return the same types.
            return list(json.loads(json.dumps(_apply(actions, timeout))))
        except KaraboClientError:
            raise
        except Exception as exc:  # Karabo raises TimeoutError, KaraboError, ValueError...
            raise KaraboClientError(f"Karabo actions failed: {type(exc).__name__}: "
                                    f"{exc}") from exc
    env = dict(os.environ, KARABO_BROKER=broker, KARABO_BROKER_TOPIC=topic)
    try:
        res = subprocess.run([sys.executable, "-m", "sim.devices.client"],
                             input=json.dumps(list(actions)), capture_output=True,
                             text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise KaraboClientError(f"Karabo actions timed out after {timeout:g} s") from exc
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return list(json.loads(line[len("RESULT "):]))
    raise KaraboClientError(f"Karabo actions failed: {res.stdout[-2000:]}"
                            f"{res.stderr[-2000:]}")


def proxy(device_id: str, timeout: float = 10.0) -> Any:
    """This process's proxy of ``device_id``: one per device, kept connected (a proxy
    follows its device through server restarts, and shows state UNKNOWN while it is
    gone)."""
    from karabo.middlelayer.cli import connectDevice

    if device_id not in _proxies:
        _proxies[device_id] = connectDevice(device_id, autodisconnect=None, timeout=timeout)
    return _proxies[device_id]


def _apply(actions: Sequence[dict[str, Any]], timeout: float) -> list[Any]:
    from karabo.middlelayer.cli import execute, setWait

    results: list[Any] = []
    for action in actions:
        if "missing" in action:
            results.append(_missing(action["missing"]))
            continue
        device = proxy(action["device"])
        if not _alive(device):  # as a new connection would: no last values of the dead
            raise KaraboClientError(f"device {action['device']} is not running")
        if "set" in action:
            setWait(device, timeout=timeout,
                    **{k: _karabo(v) for k, v in action["set"].items()})
            results.append(True)
        elif "call" in action:
            execute(device, action["call"], timeout=timeout)
            results.append(True)
        elif "get" in action:
            results.append({k: _jsonable(getattr(device, k)) for k in action["get"]})
        elif "stamps" in action:  # {key: [value, Unix time of the device's last change]}
            results.append({k: [_jsonable(v := getattr(device, k)),
                                v.timestamp.toTimestamp() if v.timestamp else None]
                            for k in action["stamps"]})
        else:
            raise KaraboClientError(f"unknown action {action}")
    return results


def _alive(device: Any, grace: float = 5.0) -> bool:
    """A proxy is dead from its device's instanceGone until it has reconnected to the new
    instance, a moment after the topology lists that instance: wait that moment out."""
    from karabo.middlelayer.cli import isAlive

    end = time.monotonic() + grace
    while not isAlive(device):
        if time.monotonic() >= end:
            return False
        time.sleep(0.1)
    return True


def _missing(ids: Sequence[str]) -> list[str]:
    """Those of ``ids`` that do not answer a ping now, or whose proxy here has not
    reconnected since its server restarted.  The topology is no witness: a server killed
    with SIGKILL (RESTART's ``karabo-kill -k``) leaves its devices listed until their
    heartbeats time out, and a call to one of them then dies with the new instance."""
    from karabo.middlelayer.cli import getInstanceInfo, isAlive
    from karabo.native import KaraboError

    out = []
    for device in ids:
        if device in _proxies and not isAlive(_proxies[device]):
            out.append(device)
            continue
        try:
            getInstanceInfo(device, timeout=1.0)
        except (TimeoutError, KaraboError):
            out.append(device)
    return out


def _main() -> int:
    actions = json.loads(sys.stdin.read())
    ensure_client(os.environ["KARABO_BROKER"], os.environ["KARABO_BROKER_TOPIC"])
    print("RESULT " + json.dumps(_apply(actions, 60.0)), flush=True)
    os._exit(0)  # skip the client's slow, noisy shutdown


def _karabo(value: Any) -> Any:
    """Rows of a table travel as JSON objects; Karabo wants Hashes."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        from karabo.middlelayer import Hash

        return [Hash(*[x for kv in row.items() for x in kv]) for row in value]
    return value


def _jsonable(value: Any) -> Any:
    raw = getattr(value, "value", value)
    if hasattr(raw, "tolist"):
        return raw.tolist()
    if hasattr(raw, "value"):
        return raw.value
    return raw if isinstance(raw, (int, float, str, bool, list, type(None))) else str(raw)


if __name__ == "__main__":
    sys.exit(_main())
