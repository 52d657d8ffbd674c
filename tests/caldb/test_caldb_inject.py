"""Injecting (section 12.2 "Version already taken"), crash safety, and disabling (section 7)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

import caldb.store as store_module
from caldb.errors import BadRequest, UnknownName, VersionTaken
from caldb.store import CalDB

DET = "SPB_DET_AGIPD1M-1"
M304 = "AGIPD_SIV1_AGIPDV11_M304"
STD = {"Memory cells": 352, "Sensor Bias Voltage": 300}
T0 = datetime(2020, 5, 1, 8, 28, 36, 416280, tzinfo=UTC)


def _inject(db: CalDB, **over: object) -> store_module.VersionInfo:
    fields: dict[str, object] = dict(
        detector=DET,
        karabo_da="AGIPD00",
        calibration="Offset",
        conditions=STD,
        begin_at=T0,
        data=np.arange(6.0).reshape(2, 3),
    )
    fields.update(over)
    return db.inject(**fields)


def _files(db: CalDB) -> list[Path]:
    return sorted(p for p in db.store_root.rglob("*") if p.is_file())


def test_inject_writes_the_file_layout_extra_reads(caldb: CalDB) -> None:
    v = _inject(caldb, dims=("slow_scan", "fast_scan"), report="/reports/dark_r0012.pdf")
    path = caldb.store_root / f"agipd-type/{M304.lower()}" / v.file_name
    assert path.is_file() and v.file_path(caldb.store_root) == path
    assert v.file_name.startswith("cal.") and float(v.file_name[4:-3]) > 1.5e9
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[f"/{M304}/Offset/0/data"][()], np.arange(6.0).reshape(2, 3))
        assert list(f[f"/{M304}/Offset/0/data"].attrs["dims"].tolist()) == [
            "slow_scan",
            "fast_scan",
        ]
        assert f[f"/{M304}/Offset/0/condition/Memory cells/value"][()] == 352.0
    assert v.report == "/reports/dark_r0012.pdf"
    assert v.begin_at == T0  # microseconds survive both backends
    assert v.name.endswith("_sIdx=0")


def test_same_version_twice_is_taken_and_writes_no_file(caldb: CalDB) -> None:
    first = _inject(caldb)
    with pytest.raises(VersionTaken, match="Version already taken"):
        _inject(caldb)
    # Deviations are not part of the operating conditions: still the same version.
    with pytest.raises(VersionTaken):
        _inject(caldb, deviations={"Sensor Bias Voltage": (10.0, 10.0)})
    assert _files(caldb) == [first.file_path(caldb.store_root)]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            {"conditions": {"Memory cells": 202, "Sensor Bias Voltage": 300}}, id="other-conditions"
        ),
        pytest.param({"karabo_da": "AGIPD01"}, id="other-module"),
        pytest.param({"calibration": "Noise"}, id="other-calibration"),
        pytest.param({"begin_at": datetime(2020, 5, 1, 8, 28, 37, tzinfo=UTC)}, id="other-start"),
    ],
)
def test_a_different_version_is_accepted(caldb: CalDB, change: dict[str, object]) -> None:
    _inject(caldb)
    second = _inject(caldb, **change)
    assert len(caldb.versions()) == 2 and second.id


def test_concurrent_duplicate_hits_the_constraint_and_removes_its_file(
    caldb: CalDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inject(caldb)
    # A writer that checked before the first one committed: only the constraint stops it.
    monkeypatch.setattr(store_module, "check_not_taken", lambda *a, **k: None)
    with pytest.raises(VersionTaken, match="concurrently"):
        _inject(caldb)
    assert len(_files(caldb)) == 1


CRASH = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime
    import numpy as np
    import caldb.store
    from caldb.store import CalDB

    def crash(*args, **kwargs):
        os._exit(17)  # the process dies between writing the file and the row

    caldb.store.insert_version = crash
    db = CalDB.open(sys.argv[1], sys.argv[2])
    db.inject(detector="SPB_DET_AGIPD1M-1", karabo_da="AGIPD00", calibration="Offset",
              conditions={"Memory cells": 352, "Sensor Bias Voltage": 300},
              begin_at=datetime.fromisoformat(sys.argv[3]), data=np.ones((2, 3)))
    """
)


def test_crash_between_file_and_row_leaves_nothing_a_lookup_finds(caldb: CalDB) -> None:
    url = caldb.engine.url.render_as_string(hide_password=False)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, url, str(caldb.store_root), T0.isoformat()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 17, proc.stderr
    (orphan,) = _files(caldb)  # the file was written ...
    query = dict(detector=DET, karabo_da="AGIPD00", calibrations=["Offset"], conditions=STD)
    assert caldb.find(event_at=T0, **query) == []  # ... but no lookup reaches it
    assert caldb.versions() == []
    assert caldb.sweep_orphans(min_age_s=3600) == []  # too young to be judged an orphan
    assert caldb.sweep_orphans(min_age_s=0) == [orphan]

    retry = _inject(caldb)  # the version is not blocked by the crashed attempt
    assert [v.id for v in caldb.find(event_at=T0, **query)] == [retry.id]
    assert caldb.sweep_orphans(remove=True, min_age_s=0) == [orphan]
    assert _files(caldb) == [retry.file_path(caldb.store_root)]


def test_disable_hides_enable_restores_and_both_are_audited(caldb: CalDB) -> None:
    v = _inject(caldb)
    query = dict(
        detector=DET, karabo_da="AGIPD00", calibrations=["Offset"], conditions=STD, event_at=T0
    )
    change = caldb.disable(v.id, who="jdoe", why="offsets from a run with beam")
    assert (change.old_deployed, change.old_good_quality) == (True, True)
    assert (change.new_deployed, change.new_good_quality) == (False, False)
    assert caldb.find(**query) == []
    got = caldb.get(v.id)
    assert (got.flg_deployed, got.flg_good_quality) == (False, False)

    caldb.enable(v.id, who="jdoe", why="false alarm")
    assert [f.id for f in caldb.find(**query)] == [v.id]
    audit = caldb.audit(v.id)
    assert [(a.action, a.who, a.why) for a in audit] == [
        ("disable", "jdoe", "offsets from a run with beam"),
        ("enable", "jdoe", "false alarm"),
    ]
    assert audit[0].at <= audit[1].at and audit[0].at.tzinfo is not None


@pytest.mark.parametrize(
    ("who", "why", "message"),
    [("", "x", "who"), ("jdoe", " ", "why")],
)
def test_disable_needs_who_and_why(sqlite_caldb: CalDB, who: str, why: str, message: str) -> None:
    v = _inject(sqlite_caldb)
    with pytest.raises(BadRequest, match=message):
        sqlite_caldb.disable(v.id, who=who, why=why)
    assert sqlite_caldb.audit() == []
    assert sqlite_caldb.get(v.id).flg_deployed


def test_disable_unknown_version(sqlite_caldb: CalDB) -> None:
    with pytest.raises(UnknownName, match="id 999"):
        sqlite_caldb.disable(999, who="jdoe", why="typo")


@pytest.mark.parametrize(
    ("over", "message"),
    [
        pytest.param({"begin_at": datetime(2020, 1, 1)}, "no time zone", id="naive-begin"),
        pytest.param({"data": np.zeros((0,))}, "empty", id="empty-data"),
        pytest.param({"data": [1, 2]}, "numpy array", id="not-array"),
        pytest.param({"dims": ("x",)}, "axes", id="dims-mismatch"),
        pytest.param(
            {"deviations": {"Gain setting": (0, 0)}}, "without a value", id="stray-deviation"
        ),
        pytest.param({"pdu": M304}, "not both", id="pdu-and-module"),
    ],
)
def test_inject_rejects_bad_input_without_writing(
    sqlite_caldb: CalDB, over: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        _inject(sqlite_caldb, **over)
    assert _files(sqlite_caldb) == []


def test_concurrent_injections_of_one_version_give_one_row(caldb: CalDB) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(karabo_da: str) -> None:
        barrier.wait(timeout=30)
        try:
            _inject(caldb, karabo_da=karabo_da)
            result = f"ok {karabo_da}"
        except VersionTaken:
            result = f"taken {karabo_da}"
        with lock:
            outcomes.append(result)

    threads = [
        threading.Thread(target=worker, args=(da,))
        for da in ("AGIPD00", "AGIPD00", "AGIPD00", "AGIPD01")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["ok AGIPD00", "ok AGIPD01", "taken AGIPD00", "taken AGIPD00"]
    assert len(caldb.versions()) == 2
    assert len(_files(caldb)) == 2
