"""Lookup semantics (sections 11.3 and 11.4), from one table, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from caldb.errors import BadRequest, CalDBError, UnknownName
from caldb.lookup import choose
from caldb.store import CalDB

DET = "SPB_DET_AGIPD1M-1"
M304, M302, M999 = (f"AGIPD_SIV1_AGIPDV11_{m}" for m in ("M304", "M302", "M999"))
STD = {"Memory cells": 352, "Sensor Bias Voltage": 300}


def utc(y: int, mo: int, d: int, h: int = 0) -> datetime:
    return datetime(y, mo, d, h, tzinfo=UTC)


# name: (pdu, calibration, conditions, begin_at)
VERSIONS: dict[str, tuple[str, str, dict[str, float], datetime]] = {
    "A": (M304, "Offset", STD, utc(2020, 1, 10)),
    "B": (M304, "Offset", STD, utc(2020, 2, 10)),
    "C": (M304, "Offset", {**STD, "Gain setting": 0}, utc(2020, 2, 1)),
    "D": (M304, "Offset", {"Memory cells": 202, "Sensor Bias Voltage": 300}, utc(2020, 2, 5)),
    "E": (M999, "Offset", STD, utc(2021, 2, 1)),
    "F": (M304, "Noise", STD, utc(2020, 1, 10)),
    "G": (M304, "Offset", STD, utc(2020, 3, 1)),  # disabled below
    "H": (M302, "Offset", STD, utc(2020, 1, 15)),
}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def populated(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    facility: dict[str, Any],
) -> Iterator[tuple[CalDB, dict[int, str]]]:
    tmp = tmp_path_factory.mktemp(f"lookup-{request.param}")
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_server").new_database()
    else:
        url = f"sqlite:///{tmp / 'c.sqlite'}"
    db = CalDB.open(url, tmp / "store")
    db.seed(facility)
    names: dict[int, str] = {}
    for name, (pdu, cal, cond, begin) in VERSIONS.items():
        v = db.inject(
            pdu=pdu,
            calibration=cal,
            conditions=cond,
            begin_at=begin,
            data=np.full((2, 2), ord(name), dtype=np.float32),
        )
        names[v.id] = name
    g_id = next(i for i, n in names.items() if n == "G")
    db.disable(g_id, "tester", "faulty darks")
    yield db, names
    db.close()


CASES = [
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        STD,
        {"A"},
        id="prior-latest-before-event",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="closest"),
        STD,
        {"B"},
        id="closest-takes-later-when-nearer",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 1, 25, 12), strategy="closest"),
        STD,
        {"A"},
        id="closest-tie-prefers-earlier",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 1, 1), strategy="prior"),
        STD,
        set(),
        id="prior-nothing-before",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 1, 1), strategy="closest"),
        STD,
        {"A"},
        id="closest-may-take-future",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        {"Memory cells": 352, "Sensor Bias Voltage": 305},
        {"A"},
        id="deviation-upper-edge-inclusive",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        {"Memory cells": 352, "Sensor Bias Voltage": 295},
        {"A"},
        id="deviation-lower-edge-inclusive",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        {"Memory cells": 352, "Sensor Bias Voltage": 305.5},
        set(),
        id="deviation-outside",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        {"Memory cells": 353, "Sensor Bias Voltage": 300},
        set(),
        id="zero-deviation-is-exact",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        {"Memory cells": 202, "Sensor Bias Voltage": 300},
        {"D"},
        id="other-memory-cells",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        {**STD, "Gain setting": 0},
        {"C"},
        id="request-param-absent-in-stored",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 2, 9), strategy="prior"),
        {"Memory cells": 352},
        set(),
        id="stored-param-absent-in-request",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 3, 5), strategy="prior"),
        STD,
        {"B"},
        id="disabled-version-skipped",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2021, 3, 1), strategy="prior"),
        STD,
        {"E"},
        id="pdu-replaced-uses-new-pdu",
    ),
    pytest.param(
        dict(karabo_da="AGIPD00", event_at=utc(2020, 6, 1), strategy="closest"),
        STD,
        {"B"},
        id="pdu-at-event-not-future-pdu",
    ),
    pytest.param(
        dict(
            karabo_da="AGIPD00",
            event_at=utc(2020, 2, 9),
            strategy="prior",
            pdu_snapshot_at=utc(2021, 3, 1),
        ),
        STD,
        set(),
        id="snapshot-picks-pdu-event-picks-version",
    ),
    pytest.param(
        dict(event_at=utc(2020, 2, 9), strategy="prior"),
        STD,
        {"A", "H"},
        id="whole-detector-one-per-module",
    ),
    pytest.param(
        dict(
            karabo_da="AGIPD00",
            event_at=utc(2020, 2, 9),
            strategy="prior",
            calibrations=["Offset", "Noise"],
        ),
        STD,
        {"A", "F"},
        id="two-calibrations",
    ),
]


@pytest.mark.parametrize(("query", "conditions", "expected"), CASES)
def test_lookup_table(
    populated: tuple[CalDB, dict[int, str]],
    query: dict[str, Any],
    conditions: dict[str, float],
    expected: set[str],
) -> None:
    db, names = populated
    query = {"calibrations": ["Offset"], **query}
    found = db.find(detector=DET, conditions=conditions, **query)
    assert {names[v.id] for v in found} == expected
    assert len(found) == len(expected)


def test_lookup_by_pdu_ignores_module_mapping(populated: tuple[CalDB, dict[int, str]]) -> None:
    db, names = populated
    (v,) = db.find(
        pdu=M304,
        calibrations=["Offset"],
        conditions=STD,
        event_at=utc(2021, 3, 1),
        strategy="prior",
    )
    assert names[v.id] == "B"
    assert v.karabo_da == "AGIPD00"  # the module M304 was when B was taken
    assert v.physical_name == M304


def test_found_version_points_at_its_data(populated: tuple[CalDB, dict[int, str]]) -> None:
    db, names = populated
    v = db.find_one(
        detector=DET,
        karabo_da="AGIPD01",
        calibration="Offset",
        conditions=STD,
        event_at=utc(2020, 2, 1),
    )
    assert names[v.id] == "H"
    assert v.data_set_name == f"/{M302}/Offset/0"
    assert v.path_to_file == f"agipd-type/{M302.lower()}/"
    assert v.file_name.startswith("cal.") and v.file_name.endswith(".h5")
    np.testing.assert_array_equal(db.read(v), np.full((2, 2), ord("H"), dtype=np.float32))


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        pytest.param(
            dict(conditions={"Memory Cells": 352, "Sensor Bias Voltage": 300}),
            UnknownName,
            "did you mean 'Memory cells'",
            id="unknown-parameter",
        ),
        pytest.param(
            dict(karabo_da="AGIPD07"), UnknownName, "no PDU is mapped", id="unmapped-module"
        ),
        pytest.param(
            dict(calibrations=["Ofset"]),
            UnknownName,
            "did you mean 'Offset'",
            id="unknown-calibration",
        ),
        pytest.param(dict(strategy="latest"), BadRequest, "closest, prior", id="bad-strategy"),
        pytest.param(
            dict(event_at=datetime(2020, 1, 1)), BadRequest, "no time zone", id="naive-event-time"
        ),
        pytest.param(dict(conditions={}), BadRequest, "at least one parameter", id="no-conditions"),
        pytest.param(
            dict(conditions={"Memory cells": float("nan")}),
            BadRequest,
            "not finite",
            id="nan-condition",
        ),
    ],
)
def test_lookup_rejects_bad_requests(
    populated: tuple[CalDB, dict[int, str]],
    query: dict[str, Any],
    error: type[CalDBError],
    message: str,
) -> None:
    db, _ = populated
    full: dict[str, Any] = dict(
        detector=DET,
        karabo_da="AGIPD00",
        calibrations=["Offset"],
        conditions=STD,
        event_at=utc(2020, 2, 9),
    )
    full.update(query)
    with pytest.raises(error, match=message):
        db.find(**full)


def test_overlapping_pdu_mapping_is_refused(caldb: CalDB) -> None:
    with pytest.raises(CalDBError, match="overlaps"):
        caldb.seed(
            {
                "mappings": [
                    {
                        "pdu": M302,
                        "detector": DET,
                        "karabo_da": "AGIPD02",
                        "begin_at": "2020-06-01T00:00:00Z",
                    }
                ]
            }
        )


@pytest.mark.parametrize(
    ("begins", "event", "strategy", "expected"),
    [
        pytest.param(
            [(utc(2020, 1, 1), 1), (utc(2020, 1, 1), 2)],
            utc(2020, 2, 1),
            "prior",
            1,
            id="same-begin-later-injection-wins",
        ),
        pytest.param(
            [(utc(2020, 1, 1), 1), (utc(2020, 1, 3), 2)],
            utc(2020, 1, 2),
            "closest",
            0,
            id="exact-tie-takes-earlier",
        ),
        pytest.param(
            [(utc(2020, 1, 5), 1)],
            utc(2020, 1, 5),
            "prior",
            0,
            id="begin-equal-event-counts-as-prior",
        ),
        pytest.param([], utc(2020, 1, 5), "closest", None, id="nothing"),
    ],
)
def test_choose(
    begins: list[tuple[datetime, int]], event: datetime, strategy: str, expected: int | None
) -> None:
    assert choose(begins, event, strategy) == expected
