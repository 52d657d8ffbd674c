"""Fixtures for tests that drive the facility twin through its real interfaces.

`twin`: one twin for the whole session (SPB; Karabo too when twin-karabo's modules are
present), in a folder under pytest's tmp, with a unique topic prefix, and
RUNBOOK_SIM_DIR / RUNBOOK_INVENTORY_PATH / RUNBOOK_TWIN_HOSTS pointing at it.
`twin_factory`: fresh twins for tests that change what they get (faults, down); each is
stopped at the end of its test.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sim import twin as twinmod
from sim.twin import Twin

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
    started = twinmod.up(folder, ["SPB"], topic_prefix=f"t{secrets.token_hex(4)}_")
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
                             topic_prefix=f"t{secrets.token_hex(4)}_")
        made.append(started)
        _env(monkeypatch, started)
        return started

    try:
        yield make
    finally:
        for started in reversed(made):
            _stop(started)
