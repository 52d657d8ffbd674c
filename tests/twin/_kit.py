"""What the twin's fault tests share: device proxies, waits, the restart and start-pipeline
sequences of section 3, and `diagnose`, which runs the CLI as an operator would.

The iKarabo client lives in the pytest process (one topic per process); `diagnose` runs
`runbook` in a subprocess, which has its own client.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim import operate
from sim.devices.client import (
    proxy,
    run_actions,  # noqa: F401  (for the tests)
)
from sim.faults import apply_fault, heal
from sim.layout import instrument_layout
from sim.scenario import parse_fault

IDS = instrument_layout("SPB").devices
ANSI = re.compile(r"\x1b\[[0-9;]*m")


SESSION: list[Any] = []  # the session's SPB twin, once the `spb` fixture made it

USED = {"splitters": [2, 4, 5], "aggregators": [0, 4, 5, 9],
        "corrections": [1, 2, 4, 8, 10, 12]}


def inject(twin, **fault) -> None:
    apply_fault(twin, parse_fault(fault), "SPB")


def dev(role: str, index: int | None = None):
    return proxy(IDS[role] if index is None else IDS[role][index])


def wait(condition, timeout: float = 60.0) -> None:
    """Karabo's waitUntil; a timeout fails the test naming the condition's source."""
    from karabo.middlelayer.cli import waitUntil

    try:
        waitUntil(condition, timeout=timeout)
    except TimeoutError:
        try:
            what = inspect.getsource(condition).strip()
        except (OSError, TypeError):
            what = repr(condition)
        raise AssertionError(f"not within {timeout:g} s: {what}") from None


def poll(what: str, predicate, timeout: float = 30.0, interval: float = 0.1):
    """The first true value of ``predicate()``; a timeout fails the test naming `what`
    (for what is not a Karabo property: files, processes, mail, the store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def own_twin(folder: Path, **up: Any):
    """A twin of a module's own (`sim.twin.up` with `up`), the environment pointing at it
    while it runs; stopped, and checked to stop cleanly, afterwards.  Use with `yield from`."""
    import secrets

    import pytest

    from sim import twin as twinmod

    started = twinmod.up(folder, ["SPB"], topic_prefix=f"t{secrets.token_hex(4)}_", **up)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNBOOK_SIM_DIR", str(started.dir))
        mp.setenv("RUNBOOK_INVENTORY_PATH", str(started.dir / "inventory"))
        mp.setenv("RUNBOOK_TWIN_HOSTS", str(started.hosts_file))
        try:
            yield started
        finally:
            assert twinmod.down(started.dir) == []


def dark_request(twin, **req: object) -> dict[str, Any]:
    """A dark request to the twin's webservice over ZMQ (SPB's AGIPD unless `req` says)."""
    import zmq

    assert twin.webservice, "the twin runs no webservice"
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://{twin.webservice['address']}:{twin.webservice['zmq_port']}")
        sock.send_json({"action": "dark_request", "instrument": "SPB",
                        "karabo_id": "SPB_DET_AGIPD1M-1", **req})
        return dict(sock.recv_json())
    finally:
        sock.close()


def holds_for(condition, seconds: float) -> bool:
    """True if ``condition`` stays true for ``seconds`` (a stall, not a slow step)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            return False
        time.sleep(0.25)
    return True


def restart_servers(timeout: float = 180.0) -> None:
    """RESTART (3.3), and every device of the layout answering again."""
    assert SESSION, "restart_servers needs the `spb` fixture"
    operate.restart_servers(SESSION[0], "SPB", timeout)


def start_pipeline(init_timeout: float = 30.0, wait_s: float = 90.0):
    """Press start pipeline once.  After a restart, only once `restart_servers` has seen
    every device back: a server's new instance marks this process's proxies of its old
    devices gone, and a call in flight then fails with 'died'."""
    from karabo.middlelayer import State

    dev("cal_manager").initTimeout = init_timeout
    init = dev("init")
    wait(lambda: init.state in (State.ON, State.ACTIVE, State.ERROR), 20)
    init.start_pipeline()
    wait(lambda: init.state in (State.ACTIVE, State.ERROR), wait_s)
    return init


def heal_idle(twin) -> None:
    """Every cause removed, every device answering, the detector stopped and the pipeline
    reset: from here a start pipeline brings it back without a server restart (3.6), where
    the guidelines' remedy needs none."""
    from karabo.middlelayer import State

    heal(twin, "SPB")
    operate.devices_back(twin, "SPB")
    stop_detector()
    dev("cal_manager").reset()
    init = dev("init")
    wait(lambda: init.state != State.CHANGING, 20)


def karabo_check(karabo: Path) -> list[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(karabo.parent)}
    out = subprocess.run(["bash", "-c", f"source {karabo}/activate; karabo-check"],
                         capture_output=True, text=True, env=env, timeout=30)
    return [ANSI.sub("", line) for line in out.stdout.splitlines()]


def spbonc(twin, host: str) -> Path:
    return twin.hosts[host].root / "scratch" / "spbonc" / "karabo"



def flowing(twin=None) -> None:
    """Heal (when given the twin), send again, and wait until every module flows."""
    if twin is not None:
        heal(twin, "SPB")
        if str(dev("detector").state) != "ACQUIRING":
            dev("detector").start()
    raw, corrected = dev("raw_appender"), dev("corrected_appender")
    wait(lambda: raw.updateRate > 0 and raw.modulesReceived == 16
         and corrected.modulesReceived == 16, 60)


def stalls_at(expected: str) -> None:
    from karabo.middlelayer import State

    restart = dev("restart")
    stop_detector()
    wait(lambda: restart.state != State.CHANGING, 120)
    restart.restart()
    wait(lambda: str(restart.status) == expected, 60)
    # Stalled, not slow: the status stays through two of RESTART's retries (every 2 s).
    assert holds_for(lambda: restart.state == State.CHANGING
                     and str(restart.status) == expected, 4.5)


def stop_detector() -> None:
    """Stop the detector, and wait until its data stopped reaching the splitters."""
    assert SESSION, "stop_detector needs the `spb` fixture"
    operate.stop_detector(SESSION[0], "SPB")


def finishes() -> None:
    """The RESTART under way runs through, and every device answers again."""
    from karabo.middlelayer import State

    restart = dev("restart")
    wait(lambda: restart.state == State.ACTIVE, 120)
    assert restart.status == "All servers restarted!"
    operate.devices_back(SESSION[0], "SPB")


def stuck_loading(corr) -> bool:
    return str(corr.state) == "CHANGING" and str(corr.offsetDate) == ""


def log_of(twin, host_index: int) -> str:
    path = spbonc(twin, f"spb-br-sys-cal-{host_index}")
    return (path / f"var/log/mlspb_spb_cal_{host_index}/current").read_text(errors="replace")


@dataclass
class Diagnosis:
    """The JSON report of `runbook diagnose`, with the exit code."""
    code: int
    report: dict[str, Any]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.report["steps"])

    @property
    def findings(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["kind"] == "finding"]

    @property
    def unknowns(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["outcome"] == "unknown"]

    def finding(self, step_id: str) -> dict[str, Any]:
        """The finding of that step; fails the test, showing every finding, if absent."""
        for step in self.findings:
            if step["id"] == step_id:
                return step
        raise AssertionError(f"no finding {step_id!r}; findings: "
                             f"{[(s['id'], s['subject']) for s in self.findings]}")

    def step(self, step_id: str) -> dict[str, Any]:
        for step in self.steps:
            if step["id"] == step_id:
                return step
        raise AssertionError(f"step {step_id!r} did not run; ran: "
                             f"{[s['id'] for s in self.steps]}")


def diagnose(tree: str, instrument: str = "SPB", *params: str, site: str = "sim",
             timeout: float = 300.0) -> Diagnosis:
    """`runbook diagnose <tree> --site sim --instrument X --format json [-p k=v ...]`."""
    argv = [str(Path(sys.executable).parent / "runbook"), "diagnose", tree, "--site", site,
            "--instrument", instrument, "--format", "json"]
    for p in params:
        argv += ["-p", p]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ))
    assert res.returncode in (0, 1, 2), (res.returncode, res.stdout[-3000:], res.stderr[-3000:])
    return Diagnosis(res.returncode, json.loads(res.stdout))
