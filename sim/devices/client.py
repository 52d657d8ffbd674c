"""A Karabo client for the twin's own use (faults, tests): iKarabo's, on a chosen topic.

Karabo's middlelayer binds a process to one broker and topic (read from the environment
when the first connection opens).  ``ensure_client`` starts the synchronous iKarabo client
once per process; ``run_actions`` applies property changes and slot calls through it when
it is bound to that topic, and otherwise through a child process bound to that topic
(``python -m sim.devices.client``), started once and kept: a child costs about 1.6 s of
Python and Karabo start-up, a call to a running one a few milliseconds.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from engine.errors import RunbookError

__all__ = ["ensure_client", "run_actions", "proxy", "close_children", "KaraboClientError"]

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

    Through this process's own client when it is bound to that topic, else through the
    child process kept for that topic.

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
    return _child(broker, topic).ask(list(actions), timeout)


class _Child:
    """A client process bound to one topic, asked one JSON line at a time."""

    def __init__(self, broker: str, topic: str) -> None:
        env = dict(os.environ, KARABO_BROKER=broker, KARABO_BROKER_TOPIC=topic)
        self.topic = topic
        self.log = tempfile.TemporaryFile(mode="w+")  # Karabo's logging, for errors
        self.proc = subprocess.Popen([sys.executable, "-m", "sim.devices.client"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name=f"karabo-child {topic}").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(("RESULT ", "ERROR ")):
                self.lines.put(line)
        self.lines.put(None)

    def ask(self, actions: list[dict[str, Any]], timeout: float) -> list[Any]:
        with self.lock:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"actions": actions, "timeout": timeout}) + "\n")
                self.proc.stdin.flush()
                # The first call also waits for the child's start-up.
                line = self.lines.get(timeout=timeout + 30)
            except (OSError, queue.Empty):
                line = None
            if line is None:
                gone = self.proc.poll() is not None
                self.close()
                why = "ended" if gone else f"did not answer within {timeout + 30:g} s"
                raise KaraboClientError(f"Karabo actions on {self.topic}: the client process "
                                        f"{why}: {self._log_tail()}")
        kind, _, payload = line.partition(" ")
        if kind == "ERROR":
            raise KaraboClientError(f"Karabo actions failed: {json.loads(payload)}")
        return list(json.loads(payload))

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def close(self) -> None:
        with _children_lock:
            if _children.get(self.topic) is self:
                del _children[self.topic]
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


_children: dict[str, _Child] = {}
_children_lock = threading.Lock()


def _child(broker: str, topic: str) -> _Child:
    with _children_lock:
        child = _children.get(topic)
        if child is None or child.proc.poll() is not None:
            child = _children[topic] = _Child(broker, topic)
        return child


def close_children(prefix: str = "") -> None:
    """Stop the client processes of the topics that start with ``prefix`` (a twin's, when
    it goes down; all at exit)."""
    for child in [c for t, c in list(_children.items()) if t.startswith(prefix)]:
        child.close()


atexit.register(close_children)


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
    """Serve one request (a JSON line of actions and a timeout) after another until stdin
    closes; each answer is one line, ``RESULT <json>`` or ``ERROR <json message>``."""
    ensure_client(os.environ["KARABO_BROKER"], os.environ["KARABO_BROKER_TOPIC"])
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = "RESULT " + json.dumps(_apply(request["actions"], request["timeout"]))
        except Exception as exc:  # Karabo raises TimeoutError, KaraboError, ValueError...
            answer = "ERROR " + json.dumps(f"{type(exc).__name__}: {exc}")
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
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
