"""``CalDB``: the one object the rest of the project holds to use the calibration DB.

It owns the SQLAlchemy engine and the store root (where constant files live) and runs each
operation in its own transaction. SQLite is the embedded default; a ``postgresql+psycopg``
URL works the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from caldb.catalogue import SeedSpec, calibration_by_name, seed
from caldb.errors import CalDBError, CalDBUnreachable, ConstantNotFound, VersionTaken
from caldb.flags import FlagChange, flag_changes, set_enabled
from caldb.inject import (
    InjectRequest,
    check_not_taken,
    insert_version,
    resolve_pdu,
    sweep_orphans,
    write_constant_file,
)
from caldb.lookup import find_versions
from caldb.models import Base, CalibrationConstantVersion, Detector, PhysicalDetectorUnit
from caldb.versions import VersionInfo, get_version, list_versions, version_info

__all__ = ["CalDB", "default_db_url", "default_store_root"]


def _data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "runbook"


def default_db_url() -> str:
    """``$RUNBOOK_CALDB``, else a SQLite file under ``$XDG_DATA_HOME/runbook``."""
    return os.environ.get("RUNBOOK_CALDB") or f"sqlite:///{_data_home() / 'caldb.sqlite'}"


def default_store_root() -> Path:
    """``$RUNBOOK_CALDB_STORE``, else ``$XDG_DATA_HOME/runbook/caldb_store``."""
    return Path(os.environ.get("RUNBOOK_CALDB_STORE") or _data_home() / "caldb_store")


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        # A server that accepts and never answers must not hang a check or a job.
        wait = ({"connect_timeout": 10}
                if url.startswith("postgres") and "connect_timeout" not in url else {})
        return create_engine(url, pool_pre_ping=True, connect_args=wait)
    memory = url in ("sqlite://", "sqlite:///:memory:")
    if not memory:
        db_file = url.split("///", 1)[-1]
        Path(db_file).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        poolclass=StaticPool if memory else None,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, begin transactions, so SAVEPOINT works and a
        # write session can take the write lock up front (see _begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}")

    return engine


class CalDB:
    """Get one with ``CalDB.open(url, store_root)``; ``close()`` it when done."""

    def __init__(self, engine: Engine, store_root: Path) -> None:
        self.engine = engine
        self.store_root = Path(store_root)
        self._read = sessionmaker(engine, expire_on_commit=False)
        writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._write = sessionmaker(writer, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, store_root: str | Path | None = None) -> CalDB:
        """Open (and create the tables of) the DB at ``url``, with files under ``store_root``."""
        url = url or default_db_url()
        root = Path(store_root) if store_root is not None else default_store_root()
        try:
            engine = _make_engine(url)
            Base.metadata.create_all(engine)
        except (OperationalError, OSError) as exc:
            raise CalDBUnreachable(f"cannot open the calibration DB at {url}: {exc}") from exc
        root.mkdir(parents=True, exist_ok=True)
        return cls(engine, root)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> CalDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session in one transaction, committed on success; DB errors become CalDBError."""
        factory = self._write if write else self._read
        try:
            with factory() as s, s.begin():
                yield s
        except OperationalError as exc:
            raise CalDBUnreachable(f"calibration DB error: {exc.orig}") from exc

    def seed(self, spec: Mapping[str, Any] | SeedSpec) -> SeedSpec:
        with self.session(write=True) as s:
            return seed(s, spec)

    def find(
        self,
        *,
        calibrations: Sequence[str],
        conditions: Mapping[str, float],
        event_at: datetime,
        detector: str | None = None,
        karabo_da: str | None = None,
        pdu: str | None = None,
        strategy: str = "closest",
        pdu_snapshot_at: datetime | None = None,
    ) -> list[VersionInfo]:
        """One version per (module, calibration); the rules are in ``caldb.lookup``."""
        with self.session() as s:
            return find_versions(
                s,
                calibrations=calibrations,
                conditions=conditions,
                event_at=event_at,
                detector=detector,
                karabo_da=karabo_da,
                pdu=pdu,
                strategy=strategy,
                pdu_snapshot_at=pdu_snapshot_at,
            )

    def find_one(self, *, calibration: str, **query: Any) -> VersionInfo:
        """The single version of one calibration for one module (karabo_da) or PDU."""
        found = self.find(calibrations=[calibration], **query)
        if not found:
            where = query.get("pdu") or f"{query.get('detector')}/{query.get('karabo_da')}"
            raise ConstantNotFound(
                f"Could not find constant {calibration} for {where} with conditions "
                f"{dict(query.get('conditions', {}))} at {query.get('event_at')}"
            )
        if len(found) > 1:
            raise CalDBError(f"{len(found)} modules matched; name one karabo_da or a PDU")
        return found[0]

    def inject(self, **fields: Any) -> VersionInfo:
        """Write the file, then the row (see ``caldb.inject`` for why in that order).

        Arguments are the fields of ``caldb.inject.InjectRequest``.
        """
        req = InjectRequest(**fields).checked()
        with self.session() as s:
            pdu = resolve_pdu(s, req)
            cal_id = calibration_by_name(s, req.calibration).id
            check_not_taken(s, pdu.id, cal_id, req)
            dtype, pdu_name, pdu_id = pdu.detector_type.name, pdu.physical_name, pdu.id
        files = write_constant_file(self.store_root, dtype, pdu_name, req)
        written = self.store_root / files[0] / files[1]
        committing = False
        try:
            with self.session(write=True) as s:
                unit = resolve_pdu(s, req)
                if unit.id != pdu_id:
                    raise CalDBError(
                        f"the PDU of {req.detector}/{req.karabo_da} changed "
                        f"while injecting; inject again"
                    )
                check_not_taken(s, unit.id, cal_id, req)
                row = insert_version(s, unit, req, files)
                s.flush()
                info = version_info(s, row)
                # From here the commit may have happened even if it raises: keep the file,
                # an unreferenced one is only an orphan, a missing one would break a row.
                committing = True
        except IntegrityError as exc:
            if not committing:
                written.unlink(missing_ok=True)
            raise VersionTaken(
                f"Version already taken: {req.calibration} for {pdu_name} from "
                f"{req.begin_at.isoformat()} was injected concurrently"
            ) from exc
        except BaseException:
            if not committing:
                written.unlink(missing_ok=True)
            raise
        return info

    def get(self, ccv_id: int) -> VersionInfo:
        with self.session() as s:
            return version_info(s, get_version(s, ccv_id))

    def versions(self, **filters: Any) -> list[VersionInfo]:
        """See ``caldb.versions.list_versions``."""
        with self.session() as s:
            return list_versions(s, **filters)

    def disable(self, ccv_id: int, who: str, why: str) -> FlagChange:
        with self.session(write=True) as s:
            return set_enabled(s, ccv_id, False, who, why)

    def enable(self, ccv_id: int, who: str, why: str) -> FlagChange:
        with self.session(write=True) as s:
            return set_enabled(s, ccv_id, True, who, why)

    def audit(self, ccv_id: int | None = None) -> list[FlagChange]:
        with self.session() as s:
            return flag_changes(s, ccv_id)

    def read(self, version: VersionInfo) -> np.ndarray:
        """The constant's array, from the file the version names."""
        path = version.file_path(self.store_root)
        try:
            with h5py.File(path, "r") as f:
                return np.asarray(f[version.data_path][()])
        except (OSError, KeyError) as exc:
            raise CalDBError(
                f"constant file {path} (dataset {version.data_path}) cannot be read: {exc}"
            ) from exc

    def sweep_orphans(self, remove: bool = False, min_age_s: float = 3600.0) -> list[Path]:
        with self.session() as s:
            return sweep_orphans(s, self.store_root, remove=remove, min_age_s=min_age_s)

    def stats(self) -> dict[str, int]:
        """Row counts, for health checks and the CLI."""
        with self.session() as s:
            return {
                "detectors": s.scalar(select(func.count(Detector.id))) or 0,
                "pdus": s.scalar(select(func.count(PhysicalDetectorUnit.id))) or 0,
                "versions": s.scalar(select(func.count(CalibrationConstantVersion.id))) or 0,
            }
