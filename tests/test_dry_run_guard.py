"""Issue 12, "a dry run that cannot mutate": each transport refuses a change by itself.

Inside a plan or diagnose walk (the walker sets the switch to False) a Karabo slot call or
set, an SSH or local command not marked read-only, a caldb inject and a flag change raise
`MutationRefused` before anything is sent or written.  Outside any walk (the dark job, the
caldb CLI, the twin) and in a `run` walk they go through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from caldb.store import CalDB
from checks._karabo import KaraboClient, KaraboUnreachable
from checks._ssh import SshPool, SshSettings
from checks.local import LocalCommand, local_command, local_run
from engine.registry import MutationRefused, guard_mutation, guard_transport, mutations_allowed

MODES = [pytest.param(None, id="outside-walks"), pytest.param(False, id="plan-or-diagnose"),
         pytest.param(True, id="run")]
FACILITY = {
    "detector_types": ["AGIPD-Type"],
    "calibrations": ["Offset"],
    "parameters": [{"name": "Memory cells", "lower": 0, "upper": 0}],
    "detectors": [{"identifier": "SPB_DET_AGIPD1M-1", "name": "AGIPD1M1",
                   "number_of_modules": 16}],
    "pdus": [{"physical_name": "AGIPD_M304", "detector_type": "AGIPD-Type"}],
    "mappings": [{"pdu": "AGIPD_M304", "detector": "SPB_DET_AGIPD1M-1", "karabo_da": "AGIPD00",
                  "virtual_device_name": "Q1M1", "module_number": 0,
                  "begin_at": "2019-01-01T00:00:00+00:00"}],
}


@contextlib.contextmanager
def walk_mode(allowed: bool | None) -> Iterator[None]:
    """What `engine.walk` does around a walk: True in run, False in plan and diagnose."""
    token = mutations_allowed().set(allowed)
    try:
        yield
    finally:
        mutations_allowed().reset(token)


def refused_in_dry_runs(allowed: bool | None) -> contextlib.AbstractContextManager[object]:
    if allowed is False:
        return pytest.raises(MutationRefused, match="plan or diagnose walk changes nothing")
    return contextlib.nullcontext()


class Sent(Exception):
    """Raised where the transport would have started talking to the facility."""


# ---- the switch ---------------------------------------------------------------------------

@pytest.mark.parametrize("allowed", MODES)
def test_guard_transport_refuses_only_inside_plan_and_diagnose(allowed):
    with walk_mode(allowed), refused_in_dry_runs(allowed):
        guard_transport("test")


def test_guard_mutation_still_refuses_actions_outside_run_walks():
    for allowed in (None, False):
        with walk_mode(allowed), pytest.raises(MutationRefused):
            guard_mutation("act")
    with walk_mode(True):
        guard_mutation("act")


# ---- Karabo -------------------------------------------------------------------------------

@pytest.fixture
def karabo(monkeypatch) -> KaraboClient:
    """A client whose process never starts: reaching `_start` means the request went out."""
    def start(self):
        raise Sent()
    monkeypatch.setattr(KaraboClient, "_start", start)
    return KaraboClient("amqp://guest:guest@127.0.0.1:1", "nowhere")


@pytest.mark.parametrize("allowed", MODES)
def test_karabo_client_refuses_slot_calls_in_dry_runs(karabo, allowed):
    with walk_mode(allowed), refused_in_dry_runs(allowed) as refused:
        with pytest.raises(Sent) if allowed is not False else contextlib.nullcontext():
            karabo.call("SPB_DET_AGIPD1M-1/CAL/RESTART", "restart", [], 1.0)
    if allowed is False:
        assert "call restart on SPB_DET_AGIPD1M-1/CAL/RESTART" in str(refused.value)


@pytest.mark.parametrize("allowed", MODES)
def test_karabo_client_refuses_sets_in_dry_runs(karabo, allowed):
    with walk_mode(allowed), refused_in_dry_runs(allowed) as refused:
        with pytest.raises(Sent) if allowed is not False else contextlib.nullcontext():
            karabo.set("SPB_DET_AGIPD1M-1/CAL/CAL_MANAGER", {"pulseFilter": "0:10"}, 1.0)
    if allowed is False:
        assert "set pulseFilter on SPB_DET_AGIPD1M-1/CAL/CAL_MANAGER" in str(refused.value)


@pytest.mark.parametrize("op", ["call", "set"])
def test_karabo_submit_of_a_change_is_refused_too(karabo, op):
    with walk_mode(False), pytest.raises(MutationRefused):
        karabo.submit(op, 1.0, device="D/E/V", slot="s", args=[], values={"p": 1})


def test_karabo_reads_go_through_in_dry_runs(karabo):
    with walk_mode(False), pytest.raises(Sent):
        karabo.get("D/E/V", ["state"], 1.0)


def test_karabo_client_of_a_dead_broker_is_not_hidden_by_the_guard(monkeypatch):
    client = KaraboClient("amqp://guest:guest@127.0.0.1:1", "nowhere")
    client._failed = KaraboUnreachable("no broker")
    with walk_mode(True), pytest.raises(KaraboUnreachable):
        client.call("D/E/V", "s", [], 1.0)


# ---- SSH ----------------------------------------------------------------------------------

@pytest.fixture
def ssh(monkeypatch) -> Iterator[SshPool]:
    pool = SshPool(SshSettings())

    def call(coro, limit):
        coro.close()
        raise Sent()
    monkeypatch.setattr(pool, "_call", call)
    monkeypatch.setattr(pool._site, "target", lambda host, user, port=None: (host, user))
    yield pool


@pytest.mark.parametrize("allowed", MODES)
def test_ssh_command_not_marked_read_only_is_refused_in_dry_runs(ssh, allowed):
    with walk_mode(allowed), refused_in_dry_runs(allowed) as refused:
        with pytest.raises(Sent) if allowed is not False else contextlib.nullcontext():
            ssh.run("spb-br-sys-cal-0", "spbonc", "karabo-kill -k ALL")
    if allowed is False:
        assert "'karabo-kill -k ALL' on spbonc@spb-br-sys-cal-0" in str(refused.value)


def test_ssh_read_only_commands_go_through_in_dry_runs(ssh):
    with walk_mode(False):
        with pytest.raises(Sent):
            ssh.run("spb-br-sys-cal-0", "spbonc", "karabo-check", read_only=True)
        with pytest.raises(Sent):
            ssh.run_many("spb-br-sys-cal-0", "spbonc", ["true", "ls"], read_only=True)


def test_ssh_run_many_not_marked_read_only_is_refused_in_dry_runs(ssh):
    with walk_mode(False), pytest.raises(MutationRefused, match="rm -f x"):
        ssh.run_many("spb-br-sys-cal-0", "spbonc", ["true", "rm -f x"])


def test_local_run_is_refused_by_the_transport_even_past_the_action_guard(tmp_path):
    marker = tmp_path / "made"
    p = LocalCommand(argv=["touch", str(marker)])
    with walk_mode(False):
        with pytest.raises(MutationRefused):
            local_run(p, None)   # the bare function: no action guard around it
        assert local_command(LocalCommand(argv=["true"]), None).outcome == "ok"
    assert not marker.exists()


# ---- caldb --------------------------------------------------------------------------------

@pytest.fixture
def caldb(tmp_path: Path) -> Iterator[CalDB]:
    db = CalDB.open(f"sqlite:///{tmp_path / 'caldb.sqlite'}", tmp_path / "store")
    db.seed(FACILITY)
    yield db
    db.close()


def _inject(db: CalDB, day: int = 1):
    return db.inject(detector="SPB_DET_AGIPD1M-1", karabo_da="AGIPD00", calibration="Offset",
                     conditions={"Memory cells": 352},
                     begin_at=datetime(2020, 5, day, tzinfo=UTC), data=np.zeros((2, 3)))


def _files(db: CalDB) -> list[Path]:
    return sorted(p for p in db.store_root.rglob("*") if p.is_file())


@pytest.mark.parametrize("allowed", MODES)
def test_caldb_inject_is_refused_in_dry_runs_and_writes_nothing(caldb, allowed):
    with walk_mode(allowed), refused_in_dry_runs(allowed):
        _inject(caldb)
    assert len(caldb.versions()) == (0 if allowed is False else 1)
    assert len(_files(caldb)) == (0 if allowed is False else 1)


@pytest.mark.parametrize("allowed", MODES)
def test_caldb_disable_and_enable_are_refused_in_dry_runs(caldb, allowed):
    version = _inject(caldb)
    with walk_mode(allowed):
        with refused_in_dry_runs(allowed):
            caldb.disable(version.id, "tester", "bad dark")
        with refused_in_dry_runs(allowed):
            caldb.enable(version.id, "tester", "it was fine")
    assert len(caldb.audit()) == (0 if allowed is False else 2)
    assert caldb.get(version.id).flg_deployed


def test_remote_inject_is_refused_in_dry_runs_before_anything_is_sent():
    """Nothing listens at the endpoint: a refusal comes first, else the client's own
    error (it found no access point) shows that it tried to send."""
    from caldb.errors import CalDBUnreachable
    from caldb.remote_client import RemoteClient

    client = RemoteClient(["tcp://127.0.0.1:9"], timeout_s=0.2, max_attempts=1)
    try:
        with walk_mode(False), pytest.raises(MutationRefused):
            client.inject(data=np.zeros((2, 3)), detector="SPB_DET_AGIPD1M-1")
        with walk_mode(None), pytest.raises(CalDBUnreachable):
            client.inject(data=np.zeros((2, 3)), detector="SPB_DET_AGIPD1M-1")
    finally:
        client.close()
