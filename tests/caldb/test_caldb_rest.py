"""The CalCat REST client against the REST server over the store."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from caldb.client import CalCatClient
from caldb.errors import BadRequest, CalDBUnreachable, UnknownName
from caldb.rest import RestServer
from caldb.store import CalDB

DET = "SPB_DET_AGIPD1M-1"
STD = {"Memory cells": 352.0, "Sensor Bias Voltage": 300.0}


def utc(y: int, mo: int, d: int) -> datetime:
    return datetime(y, mo, d, tzinfo=UTC)


@pytest.fixture
def served(sqlite_caldb: CalDB) -> Iterator[tuple[CalDB, CalCatClient, RestServer]]:
    for da, begin, value in (
        ("AGIPD00", utc(2020, 1, 10), 1.0),
        ("AGIPD01", utc(2020, 1, 12), 2.0),
        ("AGIPD00", utc(2020, 2, 10), 3.0),
    ):
        sqlite_caldb.inject(
            detector=DET,
            karabo_da=da,
            calibration="Offset",
            conditions=STD,
            begin_at=begin,
            data=np.full((2, 2), value),
        )
    with RestServer(sqlite_caldb) as server, CalCatClient(server.url, timeout=5) as client:
        yield sqlite_caldb, client, server


def test_detector_and_its_pdus_over_time(served: tuple[CalDB, CalCatClient, RestServer]) -> None:
    _, client, _ = served
    det = client.detector_by_identifier(DET)
    assert (det["identifier"], det["name"], det["number_of_modules"]) == (DET, "AGIPD1M1", 16)
    before = client.pdus_by_detector(det["id"], utc(2020, 6, 1))
    after = client.pdus_by_detector(det["id"], utc(2021, 6, 1))
    assert [(p["karabo_da"], p["physical_name"]) for p in before] == [
        ("AGIPD00", "AGIPD_SIV1_AGIPDV11_M304"),
        ("AGIPD01", "AGIPD_SIV1_AGIPDV11_M302"),
    ]
    assert [(p["karabo_da"], p["physical_name"]) for p in after] == [
        ("AGIPD00", "AGIPD_SIV1_AGIPDV11_M999"),
        ("AGIPD01", "AGIPD_SIV1_AGIPDV11_M302"),
    ]
    assert before[0]["detector_type"]["name"] == "AGIPD-Type"
    assert before[0]["virtual_device_name"] == "Q1M1" and before[0]["module_number"] == 0


def test_lookup_gives_what_extra_needs_to_load_the_constant(
    served: tuple[CalDB, CalCatClient, RestServer],
) -> None:
    db, client, _ = served
    found = client.get_by_detector_conditions(
        DET, ["Offset"], STD, event_at=utc(2020, 2, 1), begin_at_strategy="prior"
    )
    offset_id = client.calibration_by_name("Offset")["id"]
    by_da = {c["physical_detector_unit"]["karabo_da"]: c for c in found}
    assert sorted(by_da) == ["AGIPD00", "AGIPD01"]
    for da, expected in (("AGIPD00", 1.0), ("AGIPD01", 2.0)):
        ccv = by_da[da]
        assert ccv["calibration_constant"]["calibration_id"] == offset_id
        assert ccv["flg_deployed"] and ccv["flg_good_quality"]
        # What extra.calibration.SingleConstant does with the response:
        path = Path(db.store_root) / ccv["path_to_file"] / ccv["file_name"]
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(
                f[ccv["data_set_name"]]["data"][()], np.full((2, 2), expected)
            )
    closest = client.get_by_detector_conditions(
        DET, ["Offset"], STD, event_at=utc(2020, 2, 1), karabo_da="AGIPD00"
    )
    assert [c["begin_at"] for c in closest] == ["2020-02-10T00:00:00+00:00"]


def test_calibration_client_spelling_of_the_strategy(
    served: tuple[CalDB, CalCatClient, RestServer],
) -> None:
    _, client, _ = served
    body = {
        "parameters_conditions_attributes": [
            {"parameter_name": k, "value": v} for k, v in STD.items()
        ]
    }
    cal_id = client.calibration_by_name("Offset")["id"]
    found = client.get(
        "calibration_constant_versions/get_by_detector_conditions",
        {
            "detector_identifier": DET,
            "calibration_id": str(cal_id),
            "karabo_da": "AGIPD00",
            "event_at": "2020-02-01T00:00:00",
            "begin_strategy_at": "prior",
        },
        body=body,
    )
    assert [c["begin_at"] for c in found] == ["2020-01-10T00:00:00+00:00"]


def test_version_by_id_names_its_module_at_begin(
    served: tuple[CalDB, CalCatClient, RestServer],
) -> None:
    db, client, _ = served
    newest = db.versions()[0]
    ccv = client.ccv(newest.id)
    assert ccv["file_name"] == newest.file_name
    assert ccv["physical_detector_unit"]["karabo_da_at_ccv_begin_at"] == "AGIPD00"
    with pytest.raises(UnknownName, match="not found"):
        client.ccv(9999)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(
            lambda c: c.detector_by_identifier("MID_DET_AGIPD1M-1"),
            UnknownName,
            "no detector",
            id="unknown-detector",
        ),
        pytest.param(
            lambda c: c.get_by_detector_conditions(
                DET, ["Offset"], STD, begin_at_strategy="newest"
            ),
            BadRequest,
            "closest, prior",
            id="bad-strategy",
        ),
        pytest.param(
            lambda c: c.get(
                "calibration_constant_versions/get_by_detector_conditions",
                {"detector_identifier": DET, "calibration_id": "[1]"},
            ),
            BadRequest,
            "parameters_conditions_attributes",
            id="no-body",
        ),
        pytest.param(
            lambda c: c.get_by_detector_conditions(DET, ["Offset"], {"Memory cell": 1}),
            UnknownName,
            "Memory cells",
            id="unknown-parameter",
        ),
    ],
)
def test_errors_come_back_as_runbook_errors(
    served: tuple[CalDB, CalCatClient, RestServer],
    call,
    error,
    message,  # type: ignore[no-untyped-def]
) -> None:
    _, client, _ = served
    with pytest.raises(error, match=message):
        call(client)


def test_unreachable_and_silent_servers_time_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with CalCatClient(f"http://127.0.0.1:{port}", timeout=1) as client:
        with pytest.raises(CalDBUnreachable, match="unreachable"):
            client.detector_by_identifier(DET)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with CalCatClient(url, timeout=0.3) as client:
            with pytest.raises(CalDBUnreachable, match="in time"):
                client.detector_by_identifier(DET)
