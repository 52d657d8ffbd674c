"""sim.procs: the twin's processes start in their own session and stop with all they spawned."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

from sim import procs


def _sh(script: str) -> list[str]:
    return ["/bin/bash", "-c", script]


def test_start_writes_log_and_records_start_time(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "echo.log"
    proc = procs.start(_sh("echo hello-from-child; exec sleep 30"), name="echo", log=log)
    try:
        procs.wait_for(lambda: "hello-from-child" in log.read_text(), timeout=10, what="log")
        assert proc.start == procs.start_time(proc.pid)
        assert procs.alive(proc.pid, proc.start)
    finally:
        procs.stop(proc)
    assert not procs.alive(proc.pid)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    proc = procs.start(
        _sh(f"sleep 60 & echo $! > {pidfile}; wait"), name="parent", log=tmp_path / "p.log"
    )
    procs.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "",
                   timeout=10, what="grandchild pid")
    grandchild = int(pidfile.read_text())
    assert procs.group_members(proc.pid) and grandchild in procs.group_members(proc.pid)
    procs.stop(proc)
    assert not procs.alive(grandchild)
    assert procs.group_members(proc.pid) == []


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = procs.start(_sh("trap '' TERM; echo armed; while :; do sleep 0.1; done"),
                       name="stubborn", log=log)
    procs.wait_for(lambda: "armed" in log.read_text(), timeout=10, what="trap")
    procs.stop(proc, timeout=0.3)
    assert not procs.alive(proc.pid)
    assert procs.group_members(proc.pid) == []


def test_stop_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    victim = procs.start(["sleep", "30"], name="victim", log=tmp_path / "v.log")
    try:
        stale = procs.Proc(name="old", pid=victim.pid, start=victim.start - 1, log="x")
        procs.stop(stale)
        assert procs.alive(victim.pid, victim.start)
    finally:
        procs.stop(victim)


def test_proc_round_trips_through_a_dict(tmp_path: Path) -> None:
    proc = procs.Proc(name="a", pid=12, start=34, log=str(tmp_path / "a.log"))
    assert procs.Proc.from_dict(proc.to_dict()) == proc


def test_wait_port_sees_a_listener(tmp_path: Path) -> None:
    port = procs.free_port()
    code = (
        f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen();"
        "time.sleep(30)"
    )
    proc = procs.start([sys.executable, "-c", code], name="listener", log=tmp_path / "l.log")
    try:
        procs.wait_port("127.0.0.1", port, timeout=20, proc=proc)
        assert procs.port_open("127.0.0.1", port)
    finally:
        procs.stop(proc)
    assert not procs.port_open("127.0.0.1", port)


def test_wait_port_fails_fast_when_the_process_dies(tmp_path: Path) -> None:
    proc = procs.start(_sh("echo boom; exit 3"), name="dies", log=tmp_path / "d.log")
    with pytest.raises(procs.TwinError, match=r"dies exited .*d\.log"):
        procs.wait_port("127.0.0.1", procs.free_port(), timeout=20, proc=proc)


def test_wait_for_times_out_with_a_message() -> None:
    with pytest.raises(procs.TwinError, match="timed out after 0.2 s waiting for never"):
        procs.wait_for(lambda: False, timeout=0.2, what="never")


def test_wait_for_returns_once_the_predicate_holds() -> None:
    flag = threading.Event()
    threading.Timer(0.1, flag.set).start()
    procs.wait_for(flag.is_set, timeout=10, what="flag")
    assert flag.is_set()


def test_start_reports_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(procs.TwinError, match="cannot start ghost"):
        procs.start(["/nonexistent/ghost"], name="ghost", log=tmp_path / "g.log")


def test_stop_all_stops_every_process(tmp_path: Path) -> None:
    started = [procs.start(["sleep", "30"], name=f"s{i}", log=tmp_path / f"{i}.log")
               for i in range(5)]
    procs.stop_all(started)
    assert not any(procs.alive(p.pid) for p in started)


def test_port_open_is_false_for_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not procs.port_open("127.0.0.1", port)
