"""Fixtures for tests that drive the facility twin through its real interfaces.

`twin`: one twin for the whole session (per pytest-xdist worker; SPB, with Karabo when
its modules are present), in a folder under pytest's tmp, with a unique topic prefix, and
RUNBOOK_SIM_DIR / RUNBOOK_INVENTORY_PATH / RUNBOOK_TWIN_HOSTS pointing at it.
`twin_factory`: fresh twins for tests that change what they get (faults, down); each is
stopped at the end of its test.
`spb`: the session twin with the iKarabo client of this process connected to SPB.
`running`: SPB online (pipeline ACTIVE, detector sending, every module flowing); a test
that breaks it heals it again (`_kit.flowing`, or a restart).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sim import twin as twinmod
from sim.devices.client import ensure_client
from sim.operate import online
from sim.twin import Twin
from tests.twin._kit import SESSION, USED, dev

TwinFactory = Callable[..., Twin]


def _env(mp: pytest.MonkeyPatch, twin: Twin) -> None:
    mp.setenv("RUNBOOK_SIM_DIR", str(twin.dir))
    mp.setenv("RUNBOOK_INVENTORY_PATH", str(twin.dir / "inventory"))
    mp.setenv("RUNBOOK_TWIN_HOSTS", str(twin.hosts_file))


def _stop(twin: Twin) -> None:
    problems = twinmod.down(twin.dir)
    assert not problems, problems


@pytest.fixture(scope="session")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    folder = tmp_path_factory.mktemp("twin")
    started = twinmod.up(folder, ["SPB"], topic_prefix=f"t{secrets.token_hex(4)}_",
                         webservice=False)
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, started)
        try:
            yield started
        finally:
            _stop(started)


@pytest.fixture
def twin_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwinFactory]:
    made: list[Twin] = []

    def make(instruments: Sequence[str] = ("SPB",), *, karabo: bool | None = None,
             scenario: Path | None = None, ssh_port: int = 22) -> Twin:
        folder = tmp_path / f"twin{len(made)}"
        started = twinmod.up(folder, instruments, scenario, karabo=karabo, ssh_port=ssh_port,
                             webservice=False,
                             topic_prefix=f"t{secrets.token_hex(4)}_")
        made.append(started)
        _env(monkeypatch, started)
        return started

    try:
        yield make
    finally:
        for started in reversed(made):
            _stop(started)


@pytest.fixture(scope="session")
def spb(twin: Twin) -> Twin:
    ensure_client(str(twin.broker_url), twin.topics["SPB"])
    SESSION[:] = [twin]
    # Proxies are made here, outside waitUntil conditions (which cannot connect).
    for role in ("detector", "run_controller", "cal_manager", "init", "restart",
                 "raw_appender", "corrected_appender", "gui_server"):
        dev(role)
    for role, indices in USED.items():
        for i in indices:
            dev(role, i)
    return twin


@pytest.fixture
def running(spb: Twin) -> Twin:
    corrected = dev("corrected_appender")
    if not (str(dev("cal_manager").state) == "ACTIVE" and corrected.updateRate > 0
            and corrected.modulesReceived == 16):
        online(spb, "SPB")
    return spb
