"""Fixtures for the calibration DB: a private PostgreSQL on loopback, and a seeded facility.

The PostgreSQL server is Debian's (``apt-get install postgresql``); the fixture fails
with that hint when the binaries are missing, because a skipped backend would hide that
half of the lookup tests never ran.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from caldb.store import CalDB

PG_BIN = Path(os.environ.get("RUNBOOK_PG_BIN", "/usr/lib/postgresql/15/bin"))

FACILITY = {
    "detector_types": ["AGIPD-Type"],
    "calibrations": ["Offset", "Noise", "BadPixelsDark", "ThresholdsDark"],
    "parameters": [
        {"name": "Memory cells", "lower": 0, "upper": 0},
        {"name": "Sensor Bias Voltage", "lower": 5, "upper": 5},
        {"name": "Acquisition rate", "lower": 0.1, "upper": 0.1},
        {"name": "Gain setting", "lower": 0, "upper": 0},
    ],
    "detectors": [
        {"identifier": "SPB_DET_AGIPD1M-1", "name": "AGIPD1M1", "number_of_modules": 16},
    ],
    "pdus": [
        {"physical_name": "AGIPD_SIV1_AGIPDV11_M304", "detector_type": "AGIPD-Type"},
        {"physical_name": "AGIPD_SIV1_AGIPDV11_M302", "detector_type": "AGIPD-Type"},
        {"physical_name": "AGIPD_SIV1_AGIPDV11_M999", "detector_type": "AGIPD-Type"},
    ],
    "mappings": [
        {
            "pdu": "AGIPD_SIV1_AGIPDV11_M304",
            "detector": "SPB_DET_AGIPD1M-1",
            "karabo_da": "AGIPD00",
            "virtual_device_name": "Q1M1",
            "module_number": 0,
            "begin_at": "2019-01-01T00:00:00+00:00",
            "end_at": "2021-01-01T00:00:00+00:00",
        },
        {
            "pdu": "AGIPD_SIV1_AGIPDV11_M999",
            "detector": "SPB_DET_AGIPD1M-1",
            "karabo_da": "AGIPD00",
            "virtual_device_name": "Q1M1",
            "module_number": 0,
            "begin_at": "2021-01-01T00:00:00+00:00",
        },
        {
            "pdu": "AGIPD_SIV1_AGIPDV11_M302",
            "detector": "SPB_DET_AGIPD1M-1",
            "karabo_da": "AGIPD01",
            "virtual_device_name": "Q1M2",
            "module_number": 1,
            "begin_at": "2019-01-01T00:00:00+00:00",
        },
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A throwaway cluster run as the ``postgres`` user when we are root."""

    def __init__(self) -> None:
        for tool in ("initdb", "postgres"):
            if not (PG_BIN / tool).is_file():
                pytest.fail(
                    f"PostgreSQL server binary {PG_BIN / tool} is missing: install it with "
                    f"'apt-get install -y postgresql' (or set RUNBOOK_PG_BIN)",
                    pytrace=False,
                )
        self.dir = Path(tempfile.mkdtemp(prefix="caldb-pg-"))
        self.as_postgres: dict[str, object] = {}
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()

    def start(self) -> None:
        data = self.dir / "data"
        init = [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
        subprocess.run(init, check=True, capture_output=True, timeout=120, **self.as_postgres)  # type: ignore[call-overload]
        problem = ""
        for _ in range(3):  # the free port may be taken before the server binds it
            self.port = _free_port()
            with open(self.dir / "postgres.log", "wb") as log:
                self.proc = subprocess.Popen(
                    [
                        str(PG_BIN / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(self.port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={self.dir}",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **self.as_postgres,  # type: ignore[call-overload]
                )
            problem = self._wait_ready(deadline=time.monotonic() + 60)
            if not problem:
                return
        self.stop()
        pytest.fail(f"PostgreSQL did not become ready: {problem}", pytrace=False)

    def _wait_ready(self, deadline: float) -> str:
        """Poll until the server accepts connections; '' when ready, else why not."""
        import psycopg

        assert self.proc is not None
        last = "no answer before the deadline"
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return ""
            except psycopg.OperationalError as exc:
                last = str(exc)
                time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        tail = (self.dir / "postgres.log").read_text(errors="replace")[-2000:]
        return f"{last}\n{tail}"

    def dsn(self, db: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def new_database(self) -> str:
        import psycopg

        name = f"caldb_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def open_db(backend: str, request: pytest.FixtureRequest, tmp: Path) -> CalDB:
    if backend == "postgres":
        url = request.getfixturevalue("postgres_server").new_database()
    else:
        url = f"sqlite:///{tmp / 'caldb.sqlite'}"
    return CalDB.open(url, tmp / "store")


@pytest.fixture(scope="session")
def facility() -> dict[str, object]:
    """The seed of the test facility: one AGIPD, three PDUs, M304 replaced by M999 in 2021."""
    return copy.deepcopy(FACILITY)


@pytest.fixture(params=BACKENDS)
def caldb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CalDB]:
    """An empty-of-versions DB with the seeded facility, on each backend in turn."""
    db = open_db(request.param, request, tmp_path)
    db.seed(FACILITY)
    yield db
    db.close()


@pytest.fixture
def sqlite_caldb(tmp_path: Path) -> Iterator[CalDB]:
    """The seeded facility on SQLite only, for tests about clients rather than SQL."""
    db = CalDB.open(f"sqlite:///{tmp_path / 'caldb.sqlite'}", tmp_path / "store")
    db.seed(FACILITY)
    yield db
    db.close()
