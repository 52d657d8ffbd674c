"""Issue 12, "Faults during a walk": a host that accepts the TCP connection and never
answers, a broker that dies mid-walk, a device that never reaches the awaited state and a
calibration DB whose access points are all down each become `unknown` (or a wait's
`timeout`) within their timeouts, and the rest of the walk goes on.

Every walk is a real `runbook diagnose` process over a runbook and a site written into
tmp_path; the faulty services are real sockets (and a real RabbitMQ) on 127.0.0.1, started
and stopped by the test.  Nothing of ours is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

from caldb.errors import CalDBUnreachable
from caldb.remote_client import RemoteClient, endpoints_of

RUNBOOK = str(Path(sys.executable).parent / "runbook")
MARGIN_S = 20.0     # process start, imports and exit, on a busy 2-core machine: a hang at
                    # exit (a check's thread stuck beyond its step) still shows as a failure


# ---- faulty servers on loopback ------------------------------------------------------------

@dataclass
class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""

    listener: socket.socket
    accepted: list[socket.socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def serve(self) -> None:
        self.listener.settimeout(0.1)
        for _ in range(100_000):  # at most ~10,000 s of 0.1 s polls; the test stops it first
            if self.stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                conn, _ = self.listener.accept()
                self.accepted.append(conn)  # held open, never answered


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server = SilentServer(listener)
    thread = threading.Thread(target=server.serve, daemon=True, name="silent-server")
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=5)
        for conn in [*server.accepted, listener]:
            conn.close()


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MuteAccessPoints:
    """ROUTER sockets on 127.0.0.1 that count the requests they receive and never reply."""

    endpoints: list[str]
    counts: dict[str, int]
    stop: threading.Event
    thread: threading.Thread

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextlib.contextmanager
def mute_access_points(n: int) -> Iterator[MuteAccessPoints]:
    ctx = zmq.Context()
    socks = []
    for _ in range(n):
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind("tcp://127.0.0.1:*")
        socks.append(sock)
    endpoints = [s.getsockopt_string(zmq.LAST_ENDPOINT) for s in socks]
    counts = dict.fromkeys(endpoints, 0)
    stop = threading.Event()

    def serve() -> None:
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        for _ in range(1_000_000):  # bounded; the test sets `stop` long before
            if stop.is_set():
                return
            for sock, _ev in poller.poll(50):
                sock.recv_multipart()   # [identity, empty, request...]: counted, unanswered
                counts[endpoints[socks.index(sock)]] += 1

    thread = threading.Thread(target=serve, daemon=True, name="mute-access-points")
    thread.start()
    try:
        yield MuteAccessPoints(endpoints, counts, stop, thread)
    finally:
        stop.set()
        thread.join(timeout=5)
        for s in socks:
            s.close(linger=0)
        ctx.term()


# ---- walking a tiny runbook on a tiny site -------------------------------------------------

@dataclass
class Walk:
    report: dict[str, Any]
    seconds: float
    returncode: int

    @property
    def walk_seconds(self) -> float:
        """From the walk's start to its end, as the report says (no process start-up)."""
        return float(self.report["finished"] - self.report["started"])

    def step(self, step_id: str) -> dict[str, Any]:
        [step] = [s for s in self.report["steps"] if s["id"] == step_id]
        return step

    def unknown(self, step_id: str) -> dict[str, Any]:
        [unknown] = [u for u in self.report["unknowns"] if u["id"] == step_id]
        return unknown


def write_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str,
               extra: str = "") -> None:
    """Site `faults`: the `local` site (instrument LAB) with these transport settings."""
    folder = tmp_path / "sites" / "faults"
    folder.mkdir(parents=True)
    (folder / "site.yaml").write_text(
        "site: faults\nextends: local\ntransport:\n"
        + textwrap.indent(textwrap.dedent(transport), "  ") + textwrap.dedent(extra))
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))


def write_runbook(tmp_path: Path, runbook_id: str, *steps: str, start: str) -> Path:
    """`steps`: YAML blocks of steps, each dedented on its own."""
    folder = tmp_path / "runbooks"
    folder.mkdir(exist_ok=True)
    (folder / f"{runbook_id}.yaml").write_text(
        f"id: {runbook_id}\ntitle: Issue 12 fault walk {runbook_id}\nkind: diagnosis\n"
        "source: \"12\"\nparams:\n  instrument: {type: instrument}\n"
        f"start: {start}\nsteps:\n"
        + "".join(textwrap.indent(textwrap.dedent(block), "  ") for block in steps))
    return folder


# A step after the fault that must still run: a local command with a known answer.
STILL_WALKING = """\
still-walking:
  source: "12"
  check: local.command
  with: {argv: [echo, still walking], stdout_contains: still walking}
  on: {ok: end, fail: walk-broken, unknown: walk-broken}
walk-broken:
  source: "12"
  finding: The step after the fault did not run as it should
"""


def start_walk(folder: Path, runbook_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [RUNBOOK, "diagnose", runbook_id, "--site", "faults", "-i", "LAB", "-f", "json",
         "--runbooks", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ), start_new_session=True)


def finish_walk(proc: subprocess.Popen[str], started: float, limit_s: float) -> Walk:
    try:
        out, err = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the walk did not end within {limit_s:g} s\n{out[-3000:]}\n{err[-3000:]}")
    seconds = time.monotonic() - started
    assert proc.returncode in (0, 1, 2), (proc.returncode, out[-3000:], err[-3000:])
    return Walk(json.loads(out), seconds, proc.returncode)


def diagnose(folder: Path, runbook_id: str, limit_s: float) -> Walk:
    started = time.monotonic()
    return finish_walk(start_walk(folder, runbook_id), started, limit_s)


# ---- a host that accepts the TCP connection and never answers -------------------------------

def test_silent_ssh_host_is_unknown_within_its_timeout_and_the_walk_goes_on(
        tmp_path, monkeypatch):
    with silent_server() as server:
        config = tmp_path / "ssh_config"
        config.write_text(textwrap.dedent(f"""\
            Host silent-host
              HostName 127.0.0.1
              Port {server.port}
              User labonc
              StrictHostKeyChecking no
              UserKnownHostsFile /dev/null
            """))
        write_site(tmp_path, monkeypatch, f"""\
            ssh: {{config: "{config}", connect_timeout: 2, command_timeout: 5, concurrency: 4}}
            """)
        folder = write_runbook(tmp_path, "silent-host", """\
            ask-host:
              source: "12"
              check: ssh.command
              with: {host: silent-host, user: labonc, argv: [hostname]}
              timeout: 8
              on: {ok: still-walking, fail: still-walking, unknown: still-walking}
            """, STILL_WALKING, start="ask-host")
        walk = diagnose(folder, "silent-host", limit_s=8 + MARGIN_S + 10)
        assert server.accepted, "the SSH check never connected to the silent host"

    step = walk.step("ask-host")
    assert step["outcome"] == "unknown"
    assert step["duration"] < 8, step        # the site's connect_timeout (2 s), not the step's
    reason = walk.unknown("ask-host")["reason"]
    assert "silent-host" in reason or "127.0.0.1" in reason, reason
    assert walk.step("still-walking")["outcome"] == "ok"
    assert walk.report["findings"] == []
    assert walk.returncode == 2
    assert walk.walk_seconds < 8, walk.walk_seconds
    assert walk.seconds < 8 + MARGIN_S, walk.seconds


# ---- the ZMQ client of the access points, every one of them down ----------------------------

@pytest.mark.parametrize("attempts, timeout_s, budget_s", [
    pytest.param(3, 0.3, None, id="attempts-bound"),
    pytest.param(10, 0.5, 1.2, id="time-budget-bound"),
])
def test_remote_client_with_every_access_point_mute_sends_bounded_requests(
        attempts, timeout_s, budget_s):
    with mute_access_points(3) as aps:
        client = RemoteClient(aps.endpoints, timeout_s=timeout_s, max_attempts=attempts,
                              backoff_s=0.05, backoff_cap_s=0.2, budget_s=budget_s)
        started = time.monotonic()
        with pytest.raises(CalDBUnreachable, match="Resource temporarily unavailable"):
            client.ping()
        seconds = time.monotonic() - started
        # Whatever was sent has arrived by now (loopback); give the counter a moment.
        deadline = time.monotonic() + 1.0
        while aps.total < len(client.last_attempts) and time.monotonic() < deadline:
            time.sleep(0.02)
        total = aps.total
    bound_s = budget_s if budget_s is not None else attempts * timeout_s + (attempts - 1) * 0.2
    assert seconds < bound_s + 0.5, seconds
    assert total <= attempts
    assert total == len(client.last_attempts)           # one message per attempt
    assert all(a.outcome == "timeout" for a in client.last_attempts)
    if budget_s is None:
        assert total == attempts
    else:
        assert total < attempts                          # the budget ended it first
        assert seconds >= budget_s - 0.1


def test_remote_client_with_nothing_listening_gives_up_in_time():
    endpoints = endpoints_of(f"tcp://127.0.0.1:{closed_port()},tcp://127.0.0.1:{closed_port()}")
    client = RemoteClient(endpoints, timeout_s=0.3, max_attempts=4, backoff_s=0.05,
                          backoff_cap_s=0.1, budget_s=1.0)
    started = time.monotonic()
    with pytest.raises(CalDBUnreachable) as info:
        client.request({"request": "ping"})
    seconds = time.monotonic() - started
    assert seconds < 1.0 + 0.5
    assert len(client.last_attempts) <= 4
    assert "1 s in all" in str(info.value) and endpoints[0] in str(info.value)


def test_remote_client_rejects_a_budget_that_is_not_positive():
    from caldb.errors import BadRequest

    with pytest.raises(BadRequest, match="budget_s"):
        RemoteClient(["tcp://127.0.0.1:1"], budget_s=0)


# ---- Karabo: a broker that dies mid-walk, a device that never reaches its state ------------

NO_DEVICE = "LAB_FAULTS/NO/DEVICE"   # a device id that no server on the broker has


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    """A private RabbitMQ on 127.0.0.1, with no Karabo device at all."""
    from sim.broker import Broker, free_port

    node = Broker.start(tmp_path / "twin", port=free_port())
    try:
        yield node
    finally:
        node.stop()


def state_step(step_id: str, timeout: float, then: str) -> str:
    """A karabo.device_state step on NO_DEVICE whose every outcome goes to `then`."""
    return textwrap.dedent(f"""\
        {step_id}:
          source: "12"
          check: karabo.device_state
          with: {{device: "{NO_DEVICE}", states: [ON]}}
          timeout: {timeout:g}
          on: {{ok: {then}, fail: {then}, unknown: {then}}}
        """)


def wait_for(what: str, predicate: Any, deadline_s: float, proc: subprocess.Popen[str]) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the walk ended before {what}: {proc.communicate()}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no {what} within {deadline_s:g} s: {proc.communicate(timeout=10)}")


def test_broker_that_dies_mid_walk_makes_later_karabo_checks_unknown(
        tmp_path, monkeypatch, broker):
    write_site(tmp_path, monkeypatch, f"""\
        karabo: {{broker: "{broker.url}", timeout: 3}}
        """)
    ready, gone = tmp_path / "walk-ready", tmp_path / "broker-gone"
    # The walk tells the test where it is with a file, and waits for the test's answer in a
    # `wait` step: the test, not the runbook, kills the broker while the walk waits there.
    folder = write_runbook(tmp_path, "broker-dies", state_step("before", 40, "tell-test"), f"""\
        tell-test:
          source: "12"
          check: local.command
          with: {{argv: [touch, "{ready}"]}}
          on: {{ok: broker-killed, fail: walk-broken, unknown: walk-broken}}
        broker-killed:
          source: "12"
          wait: local.file
          with: {{path: "{gone}"}}
          timeout: 60
          interval: 0.1
          on: {{ok: after-state, timeout: walk-broken}}
        """, state_step("after-state", 6, "after-online"), f"""\
        after-online:
          source: "12"
          check: karabo.devices_online
          with: {{devices: ["{NO_DEVICE}"]}}
          timeout: 6
          on: {{ok: still-walking, fail: still-walking, unknown: still-walking}}
        """, STILL_WALKING, start="before")
    started = time.monotonic()
    proc = start_walk(folder, "broker-dies")
    wait_for("first Karabo check", ready.exists, 60, proc)
    # The broker dies: SIGKILL to the node's process group (beam.smp included), no goodbye.
    os.killpg(broker.pids[0], signal.SIGKILL)
    from sim.broker import port_open
    end = time.monotonic() + 10
    while port_open("127.0.0.1", broker.port) and time.monotonic() < end:
        time.sleep(0.05)
    gone.touch()
    walk = finish_walk(proc, started, limit_s=60 + 6 + 6 + MARGIN_S + 30)

    first = walk.step("before")
    assert first["outcome"] == "unknown" and "not in the topology" in first["reason"], first
    # What holds: each later Karabo check ends within its timeout, and the walk goes on.
    later = [walk.step(step_id) for step_id in ("after-state", "after-online")]
    for step in later:
        assert step["duration"] < 6 + 1.0, step
    assert walk.step("still-walking")["outcome"] == "ok"
    assert walk.seconds < 60 + 6 + 6 + MARGIN_S + 30
    # The broker is dead, so nothing a later check says about the devices can be known:
    # unknown, naming the broker, not an answer from the topology seen before.
    wrong = [(s["id"], s["outcome"], s["reason"]) for s in later
             if s["outcome"] != "unknown" or "broker" not in s["reason"].lower()]
    assert wrong == []


def test_device_that_never_reaches_its_state_takes_the_wait_timeout_route(
        tmp_path, monkeypatch, broker):
    write_site(tmp_path, monkeypatch, f"""\
        karabo: {{broker: "{broker.url}", timeout: 2}}
        """)
    folder = write_runbook(tmp_path, "never-on", f"""\
        warm-up:
          source: "12"
          check: karabo.devices_online
          with: {{pattern: "^LAB_FAULTS/", expect: none}}
          timeout: 40
          on: {{ok: wait-on, fail: walk-broken, unknown: walk-broken}}
        wait-on:
          source: "12"
          wait: karabo.device_state
          with: {{device: "{NO_DEVICE}", states: [ON]}}
          timeout: 5
          interval: 0.2
          on: {{ok: still-walking, timeout: not-on}}
        not-on:
          source: "12"
          finding: "{NO_DEVICE} did not reach ON in time"
          severity: warning
        """, STILL_WALKING, start="warm-up")
    # The warm-up starts the walk's Karabo client (its connect timeout is 30 s), so that
    # the wait's 5 s are spent polling: each poll is "not in the topology" after 1 s.
    walk = diagnose(folder, "never-on", limit_s=40 + 5 + MARGIN_S)
    assert walk.step("warm-up")["outcome"] == "ok"
    step = walk.step("wait-on")
    assert step["outcome"] == "timeout", step
    assert "not in the topology" in step["reason"], step
    assert 5 - 0.1 <= step["duration"] < 5 + 1.0, step
    [finding] = walk.report["findings"]
    assert finding["id"] == "not-on"


# ---- the calibration DB, unreachable --------------------------------------------------------

@pytest.mark.parametrize("server", [
    pytest.param("nothing-listens", id="nothing-listens"),
    pytest.param("accepts-never-answers", id="accepts-never-answers"),
])
def test_unreachable_caldb_is_unknown_within_its_timeout_and_the_walk_goes_on(
        tmp_path, monkeypatch, server):
    with contextlib.ExitStack() as stack:
        port = (closed_port() if server == "nothing-listens"
                else stack.enter_context(silent_server()).port)
        write_site(tmp_path, monkeypatch, f"""\
            caldb:
              url: "postgresql+psycopg://runbook@127.0.0.1:{port}/caldb"
              store_root: "{tmp_path / 'store'}"
              connect_timeout: 2
            """)
        folder = write_runbook(tmp_path, "caldb-down", """\
            versions:
              source: "12"
              check: caldb.versions
              with: {physical_device: AGIPD_SIV1_AGIPDV11_M300, start_from: "2021-01-01",
                     start_to: "2021-12-31"}
              timeout: 15
              on: {ok: still-walking, fail: still-walking, unknown: still-walking}
            """, STILL_WALKING, start="versions")
        # Before it fixed a connect_timeout, the silent server kept the check's thread, and
        # so the CLI process, for minutes after the report (psycopg's own default).
        walk = diagnose(folder, "caldb-down", limit_s=15 + MARGIN_S + 10)
    step = walk.step("versions")
    # The step's 15 s leave room for importing SQLAlchemy and psycopg on a busy machine
    # (seconds); the connection itself gives up after the site's 2 s.
    assert step["outcome"] == "unknown", step
    assert step["duration"] < 15, step
    reason = walk.unknown("versions")["reason"]
    assert "cannot open the calibration DB" in reason and f"127.0.0.1:{port}" in reason, reason
    expected = "Connection refused" if server == "nothing-listens" else "timeout"
    assert expected.lower() in reason.lower(), reason
    assert walk.step("still-walking")["outcome"] == "ok"
    assert walk.walk_seconds < 15, walk.walk_seconds
    assert walk.seconds < 15 + MARGIN_S, walk.seconds
