"""The twin's mutation log: every change that reached the twin from outside it.

The twin's Karabo devices append one line to ``<twin dir>/mutations.jsonl`` for each slot
call (kind ``slot``) and each reconfiguration (kind ``set``) that a client sends them (the
runbook engine, a test, iKarabo); calls between the twin's own devices are left out (their
caller is a device id, ``DOMAIN/TYPE/MEMBER``, while every client is named
``<program>-<host>-<pid>``).  The karabo-webserver logs the service commands it carries out
(kind ``kill`` for kill and group, ``service`` for up, down and once), whoever asked,
RESTART included (a filter on `is_internal` leaves those out), and the
calibrationDbRemote access points log injections (kind ``db``).  ``read`` adds the flag
changes of the twin's calibration DB from its audit table (kind ``db``), whoever made them,
since the engine writes to that DB directly.

Processes of the twin find the folder in ``$RUNBOOK_TWIN_DIR`` (their envdir sets it).
Each entry is one JSON object on one line, written with one ``O_APPEND`` write, so lines of
concurrent writers never mix.

    >>> from sim import mutations
    >>> mutations.read(twin)      # twin: a sim.twin.Twin (or its folder)
    [{'at': '2025-...', 'kind': 'slot', 'target': 'SPB_DET_AGIPD1M-1/CAL/RESTART',
      'what': 'restart', 'caller': 'runbook-host-1234'}]
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["LOG_NAME", "ENV", "log_path", "record", "read", "is_internal"]

LOG_NAME = "mutations.jsonl"
ENV = "RUNBOOK_TWIN_DIR"
Where = str | os.PathLike[str] | Mapping[str, str] | None


def _folder(where: Any) -> Path | None:
    if where is None:
        where = os.environ
    if isinstance(where, Mapping):
        found = where.get(ENV)
        return Path(found) if found else None
    return Path(getattr(where, "dir", where))


def log_path(twin: Any) -> Path:
    """``<twin dir>/mutations.jsonl``; ``twin`` is a Twin, its folder, or an environment."""
    folder = _folder(twin)
    if folder is None:
        raise ValueError(f"no twin folder: ${ENV} is not set")
    return folder / LOG_NAME


def is_internal(caller: str | None) -> bool:
    """A caller inside the twin: one of its devices (``DOMAIN/TYPE/MEMBER``)."""
    return bool(caller) and "/" in str(caller)


def record(where: Where, kind: str, target: str, what: str,
           caller: str | None = None) -> bool:
    """Append one entry; ``where`` is the twin's folder, an environment holding
    ``$RUNBOOK_TWIN_DIR``, or None for this process's environment.

    Returns False, writing nothing, when no twin folder is known (a device run outside a
    twin, e.g. in Karabo's own device tests)."""
    folder = _folder(where)
    if folder is None:
        return False
    entry = {"at": datetime.now(UTC).isoformat(timespec="microseconds"), "kind": kind,
             "target": target, "what": what, "caller": caller, "pid": os.getpid()}
    line = (json.dumps(entry, default=str) + "\n").encode()
    fd = os.open(folder / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return True


def _flag_changes(folder: Path) -> list[dict[str, Any]]:
    db = folder / "caldb" / "caldb.sqlite"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT at, calibration_constant_version_id, action, who "
                            "FROM version_flag_changes ORDER BY id").fetchall()
    except sqlite3.OperationalError:   # a DB without the table yet
        return []
    finally:
        conn.close()
    out = []
    for at, ccv, action, who in rows:
        when = at if isinstance(at, str) else str(at)
        stamp = datetime.fromisoformat(when)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        out.append({"at": stamp.isoformat(timespec="microseconds"), "kind": "db",
                    "target": f"calibration constant version {ccv}", "what": action,
                    "caller": who})
    return out


def read(twin: Any) -> list[dict[str, Any]]:
    """Every entry, oldest first: the log's lines and the DB's flag changes.

    ``twin`` is a ``sim.twin.Twin`` (anything with ``.dir``) or the twin's folder.  Each
    entry has at least ``at`` (ISO time, UTC), ``kind`` (slot, set, kill, service, db),
    ``target`` (device id, server, version), ``what`` (slot name, property names, command,
    inject/enable/disable) and ``caller`` (Karabo instance id, address, user; or None)."""
    folder = _folder(twin)
    assert folder is not None
    entries: list[dict[str, Any]] = []
    path = folder / LOG_NAME
    if path.exists():
        complete = path.read_text().rpartition("\n")[0]   # not a line still being written
        entries += [json.loads(line) for line in complete.splitlines() if line.strip()]
    entries += _flag_changes(folder)
    return sorted(entries, key=lambda e: str(e["at"]))
