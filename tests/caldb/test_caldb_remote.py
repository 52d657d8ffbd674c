"""The ZMQ client against calibrationDbRemote access points (section 12)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caldb.errors import BadRequest, CalDBError, CalDBUnreachable, ConstantNotFound, VersionTaken
from caldb.remote import AccessPoints, karabo_log_handler
from caldb.remote_client import RemoteClient
from caldb.store import CalDB

DET = "SPB_DET_AGIPD1M-1"
STD = {"Memory cells": 352.0, "Sensor Bias Voltage": 300.0}
T0 = datetime(2020, 1, 10, tzinfo=UTC)
QUERY: dict[str, Any] = dict(
    detector=DET,
    karabo_da="AGIPD00",
    calibration="Offset",
    conditions=STD,
    event_at=datetime(2020, 2, 1, tzinfo=UTC),
)


class Ordered(random.Random):
    """Picks access points in a fixed order, so a test decides which one is tried first."""

    def __init__(self, order: Sequence[int]) -> None:
        super().__init__(0)
        self.order = list(order)

    def sample(self, population: Sequence[Any], k: int, **_: Any) -> list[Any]:  # type: ignore[override]
        return [population[i] for i in self.order][:k]


@pytest.fixture
def points(sqlite_caldb: CalDB) -> Iterator[AccessPoints]:
    sqlite_caldb.inject(
        detector=DET,
        karabo_da="AGIPD00",
        calibration="Offset",
        conditions=STD,
        begin_at=T0,
        data=np.arange(12, dtype=np.float32).reshape(3, 4),
    )
    with AccessPoints(sqlite_caldb, 3) as aps:
        yield aps


def client(aps: AccessPoints, order: Sequence[int] = (0, 1, 2), **kw: Any) -> RemoteClient:
    kw.setdefault("timeout_s", 5.0)
    return RemoteClient(aps.endpoints, rng=Ordered(order), backoff_s=0.01, **kw)


def test_retrieve_meta_only_and_with_data(points: AccessPoints) -> None:
    version, array = client(points).retrieve(**QUERY)
    assert array is None and version.calibration == "Offset" and version.karabo_da == "AGIPD00"
    assert version.begin_at == T0
    version2, array2 = client(points).retrieve(**QUERY, meta_only=False)
    assert version2.id == version.id
    assert array2 is not None and array2.dtype == np.float32
    np.testing.assert_array_equal(array2, np.arange(12, dtype=np.float32).reshape(3, 4))


def test_access_points_log_the_facility_lines(
    points: AccessPoints, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_file = tmp_path / "current"
    handler = karabo_log_handler(log_file)
    points[0].log.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="caldb.remote"):
            client(points).retrieve(**QUERY)
            client(points).inject(
                detector=DET,
                karabo_da="AGIPD01",
                calibration="Noise",
                conditions=STD,
                begin_at=T0,
                data=np.ones((3, 4)),
            )
    finally:
        points[0].log.removeHandler(handler)
        handler.close()
    lines = log_file.read_text().splitlines()
    dev = "MAX_WEB_DATA/DM/CAL_REMOTE_0"
    assert lines[:3] == [
        f"INFO {dev} : Start searching in Calibration Catalogue...",
        f"INFO {dev} : Got calibration: Offset (AGIPD1M1), meta_only: True",
        f"INFO {dev} : Waiting on data",
    ]
    assert lines[3].startswith(f"INFO {dev} : Saved file cal.")
    assert lines[3].endswith(" at agipd-type/agipd_siv1_agipdv11_m302/")
    assert lines[4:6] == [
        f"INFO {dev} : Start writing to Calibration Catalogue...",
        f"INFO {dev} : Finnish writing to Calibration Catalogue...",
    ]
    assert lines[6].startswith(f"INFO {dev} : Registered cal.") and "successfully" in lines[6]
    assert any("Start searching" in r.getMessage() for r in caplog.records)


def test_answers_that_say_no_are_not_retried(points: AccessPoints) -> None:
    c = client(points, max_attempts=3)
    with pytest.raises(ConstantNotFound, match="Could not find constant Offset"):
        c.retrieve(**{**QUERY, "conditions": {"Memory cells": 64.0, "Sensor Bias Voltage": 300}})
    assert points.received == 1
    with pytest.raises(VersionTaken, match="Version already taken"):
        c.inject(
            detector=DET,
            karabo_da="AGIPD00",
            calibration="Offset",
            conditions=STD,
            begin_at=T0,
            data=np.ones((3, 4)),
        )
    assert points.received == 2
    assert [a.outcome for a in c.last_attempts] == ["reply"]


def test_some_access_points_down(points: AccessPoints) -> None:
    points[0].stop()
    points[1].stop()
    c = client(points, order=(0, 1, 2), timeout_s=1.0, max_attempts=3)
    assert c.ping() == "MAX_WEB_DATA/DM/CAL_REMOTE_2"
    assert [a.outcome for a in c.last_attempts] == ["timeout", "timeout", "reply"]
    assert [p.received for p in points] == [0, 0, 1]


def test_all_access_points_down_fails_after_bounded_attempts(points: AccessPoints) -> None:
    points.stop()
    c = client(points, timeout_s=0.2, max_attempts=4)
    with pytest.raises(CalDBUnreachable, match="Resource temporarily unavailable"):
        c.retrieve(**QUERY)
    assert len(c.last_attempts) == 4
    # Restarted on the same endpoints (karabo-kill, 12.2), they get no stale requests.
    points.start()
    assert client(points, timeout_s=5).ping()
    assert points.received == 1


def test_slow_access_point_is_left_for_another(points: AccessPoints) -> None:
    points[0].set_mode("slow", delay_s=60.0)
    c = client(points, order=(0, 1, 2), timeout_s=1.5, max_attempts=3)
    version, _ = c.retrieve(**QUERY)
    assert version.calibration == "Offset"
    assert [a.outcome for a in c.last_attempts] == ["timeout", "reply"]
    assert [p.received for p in points] == [1, 1, 0]


def test_hung_access_points_get_one_request_per_attempt_no_storm(points: AccessPoints) -> None:
    for p in points:
        p.set_mode("hung")
    c = client(points, timeout_s=0.1, max_attempts=3)
    for _ in range(4):
        with pytest.raises(CalDBUnreachable):
            c.retrieve(**QUERY)
        assert [a.outcome for a in c.last_attempts] == ["timeout"] * 3
    # 4 requests x 3 attempts, each attempt at most one message, however long they hang.
    # (A message still in flight when its socket closes is dropped, hence "at most".)
    assert 0 < points.received <= 12


def test_bad_mode_is_refused(points: AccessPoints) -> None:
    with pytest.raises(CalDBError, match="ok, slow, hung"):
        points[0].set_mode("sleepy")


def test_malformed_requests_get_an_answer_and_the_access_point_keeps_serving(
    points: AccessPoints,
) -> None:
    c = client(points, order=(0,), max_attempts=1)
    with pytest.raises(BadRequest, match="conditions must be an object"):
        c.request({"request": "retrieve", "conditions": [1, 2], "event_at": "2020-01-01"})
    with pytest.raises(CalDBError, match="unknown request"):
        c.request({"request": "drop tables"})
    with pytest.raises(BadRequest, match="numeric"):
        c.request(
            {"request": "inject", "fields": {}, "array": {"dtype": "O", "shape": [1]}},
            data=np.zeros(1),
        )
    assert c.ping() == "MAX_WEB_DATA/DM/CAL_REMOTE_0"
    assert points[0].received == 4
