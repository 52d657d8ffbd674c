"""The Karabo 3 middlelayer client behind the karabo.* checks: one client process per walk.

Why a child process and not a thread: the middlelayer keeps process-wide singletons.
``EventLoop`` refuses a second instance ("There can be only one Karabo Eventloop"), the
broker ``Connector`` is one object per process, and the topic comes from the process
environment (``KARABO_BROKER_TOPIC``).  One thread per (broker, topic) in our process would
still share those, so two instruments (two topics) could never be asked at once, and a
walk would leave Karabo's loop and its 200-thread executor behind in the caller.  Instead,
``KaraboClient`` starts ``python -m checks._karabo_child`` with KARABO_BROKER and
KARABO_BROKER_TOPIC in its own environment.  The child runs the real middlelayer
(a ``DeviceClientBase`` that tracks the topology) on its own event loop and answers JSON
requests, one line each, on a private pipe; Karabo's own printing goes to a log file.
Requests run concurrently in the child, each under its own timeout, so a slow device never
blocks another check.

Lifetime: ``client_for(ctx)`` makes one client per (broker, topic) per walk through
``ctx.resources``; the walk's end closes it (a ``quit`` request, then the process is killed
by its PID if it has not left within seconds).  The child also leaves when its stdin
closes, so a crashed caller leaves nothing running, and the caller's only extra thread (the
reply reader) is a daemon that never blocks interpreter exit.  The parent side imports no
Karabo at all.

Slot calls and sets change the facility: ``call`` and ``set`` (and ``submit`` of either)
raise ``MutationRefused`` inside a plan or diagnose walk before anything is sent, whoever
asks (an action, or a check that should not have).

Every failure reaches the checks as ``engine.errors`` exceptions: ``KaraboUnreachable``
(broker, process), ``DeviceOffline`` (not in the topology), ``KaraboTimeout`` (no answer in
time) are ``TransportError`` and become ``unknown``; ``KaraboRemoteError`` is an error that
the device itself answered (a slot not allowed in this state, no such property).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine.context import Context
from engine.errors import RunbookError, TransportError
from engine.registry import guard_transport

__all__ = ["KaraboClient", "KaraboUnreachable", "DeviceOffline", "KaraboTimeout",
           "KaraboRemoteError", "client_for", "broker_and_topic", "call_timeout"]

DEFAULT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 30.0
APPEAR_S = 1.5      # how long a device absent from the topology may take to show up
SETTLE_S = 1.0      # the topology is complete once it stopped growing for this long
_GRACE_S = 3.0      # beyond a request's own timeout before the parent gives up on the child


class KaraboUnreachable(TransportError):
    """The broker (or the client process) cannot be used."""


class DeviceOffline(TransportError):
    """The device is not in the topology of the broker topic."""


class KaraboTimeout(TransportError):
    """The device did not answer within the timeout."""


class KaraboRemoteError(RunbookError):
    """The device answered with an error (slot not allowed in this state, no property...)."""


_KINDS: dict[str, type[RunbookError]] = {
    "offline": DeviceOffline, "timeout": KaraboTimeout, "remote": KaraboRemoteError,
    "unreachable": KaraboUnreachable}


def broker_and_topic(ctx: Context) -> tuple[str, str]:
    """The instrument's topic; the site's transport broker when set (it replaces every
    instrument's, as in the twin), else the instrument's."""
    info = ctx.instrument_info.get("karabo") or {}
    site = ctx.transport.get("karabo") or {}
    broker = site.get("broker") or info.get("broker")
    topic = info.get("topic") or site.get("topic")
    where = f"instrument {ctx.instrument}" if ctx.instrument else f"site {ctx.site}"
    if not broker:
        raise KaraboUnreachable(f"no Karabo broker configured for {where} "
                                "(instrument karabo.broker or transport.karabo.broker)")
    if not topic:
        raise KaraboUnreachable(f"no Karabo topic configured for {where} (karabo.topic)")
    return str(broker), str(topic)


def call_timeout(ctx: Context) -> float:
    """A single request's timeout: the site's karabo timeout, never beyond the step's."""
    site = ctx.transport.get("karabo") or {}
    return max(0.1, min(float(site.get("timeout") or DEFAULT_TIMEOUT), float(ctx.timeout)))


def client_for(ctx: Context) -> KaraboClient:
    """The walk's client for its broker and topic (started on first use)."""
    broker, topic = broker_and_topic(ctx)
    site = ctx.transport.get("karabo") or {}
    connect = float(site.get("connect_timeout") or CONNECT_TIMEOUT)
    client: KaraboClient = ctx.resources.get(
        ("karabo", broker, topic), lambda: KaraboClient(broker, topic, connect_timeout=connect),
        KaraboClient.close)
    return client


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class KaraboClient:
    """A Karabo client process for one (broker, topic); get one with ``client_for(ctx)``."""

    def __init__(self, broker: str, topic: str, *, connect_timeout: float = CONNECT_TIMEOUT):
        self.broker, self.topic = broker, topic
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._write = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._next = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._failed: KaraboUnreachable | None = None
        self._closed = False
        self._home: tempfile.TemporaryDirectory[str] | None = None

    # -- process ----------------------------------------------------------------------

    def _log_tail(self, lines: int = 6) -> str:
        if self._home is None:
            return ""
        try:
            text = (Path(self._home.name) / "client.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def _start(self) -> subprocess.Popen[bytes]:
        if self._closed:
            raise KaraboUnreachable("the Karabo client of this walk is closed")
        if self._failed is not None:
            raise self._failed
        if self._proc is not None:
            return self._proc
        self._home = tempfile.TemporaryDirectory(prefix="runbook-karabo-")
        home = Path(self._home.name)
        (home / "var" / "data").mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KARABO")}
        repo = str(Path(__file__).resolve().parents[1])
        env.update(KARABO=str(home), HOME=str(home), KARABO_BROKER=self.broker,
                   KARABO_BROKER_TOPIC=self.topic, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")])))
        with open(home / "client.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "checks._karabo_child"], env=env,
                                    cwd=home, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log, start_new_session=True)
        weakref.finalize(self, _kill, proc)
        ready: Future[Any] = Future()
        self._pending[0] = ready
        threading.Thread(target=self._read, args=(proc,), daemon=True,
                         name=f"karabo-client-{self.topic}").start()
        self._proc = proc
        try:
            ready.result(timeout=self.connect_timeout)
        except TimeoutError:
            self._failed = KaraboUnreachable(
                f"no connection to the Karabo broker {self.broker} (topic {self.topic}) "
                f"within {self.connect_timeout:g} s")
        except RunbookError as exc:
            self._failed = KaraboUnreachable(
                f"cannot connect to the Karabo broker {self.broker} (topic {self.topic}): "
                f"{exc}")
        if self._failed is not None:
            _kill(proc)
            raise self._failed
        return proc

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            fut = self._pending.pop(int(msg.get("id", -1)), None)
            if fut is None or fut.done():
                continue
            if "error" in msg:
                kind = _KINDS.get(str(msg.get("kind")), KaraboUnreachable)
                fut.set_exception(kind(str(msg["error"])))
            else:
                fut.set_result(msg.get("result"))
        proc.wait()
        gone = KaraboUnreachable(f"the Karabo client process ended (exit {proc.returncode})"
                                 + (f": {self._log_tail()}" if self._log_tail() else ""))
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(gone)
        self._pending.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                self._send(proc, {"id": -1, "op": "quit"})
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                _kill(proc)
        if self._home is not None:
            self._home.cleanup()
            self._home = None

    # -- requests ---------------------------------------------------------------------

    def _send(self, proc: subprocess.Popen[bytes], msg: dict[str, Any]) -> None:
        assert proc.stdin is not None
        with self._write:
            proc.stdin.write(json.dumps(msg).encode() + b"\n")
            proc.stdin.flush()

    def submit(self, op: str, timeout: float, **args: Any) -> Future[Any]:
        """Send one request; the future holds the answer or one of this module's errors."""
        if op == "call":
            guard_transport(f"call {args.get('slot')} on {args.get('device')}")
        elif op == "set":
            guard_transport(f"set {', '.join(args.get('values') or ())} on {args.get('device')}")
        with self._lock:
            proc = self._start()
            self._next += 1
            ident = self._next
            fut: Future[Any] = Future()
            self._pending[ident] = fut
        try:
            self._send(proc, {"id": ident, "op": op, "timeout": timeout, **args})
        except OSError as exc:
            self._pending.pop(ident, None)
            raise KaraboUnreachable(f"the Karabo client process is gone: {exc}") from exc
        return fut

    def request(self, op: str, timeout: float, **args: Any) -> Any:
        fut = self.submit(op, timeout, **args)
        try:
            return fut.result(timeout=timeout + _GRACE_S)
        except TimeoutError as exc:
            raise KaraboTimeout(f"the Karabo client did not answer '{op}' within "
                                f"{timeout:g} s") from exc

    def topology(self, timeout: float) -> dict[str, dict[str, dict[str, Any]]]:
        """``{"device": {id: attrs}, "server": {id: attrs}}`` (attrs: serverId, host...)."""
        return dict(self.request("topology", timeout))

    def get(self, device: str, keys: list[str], timeout: float) -> dict[str, Any]:
        """Current values of ``keys`` (dotted paths) on ``device``, as plain Python."""
        return dict(self.request("get", timeout, device=device, keys=keys))

    def configuration(self, device: str, timeout: float) -> dict[str, Any]:
        """Every leaf property of ``device``: ``{dotted.path: value}``."""
        return dict(self.request("configuration", timeout, device=device))

    def call(self, device: str, slot: str, args: list[Any], timeout: float) -> Any:
        return self.request("call", timeout, device=device, slot=slot, args=args)

    def set(self, device: str, values: dict[str, Any], timeout: float) -> None:
        self.request("set", timeout, device=device, values=values)
