"""Faults of the calibration DB and its offline access points (guidelines 7, 12.2).

``caldb_remote_overloaded``: the server ran out of memory, so its access points take
queries and neither answer nor log (their ``mode`` is hung), while a correction job of xcal
keeps querying them.  ``caldb_request_storm``: a job of xcal with legacy code and far too
short a timeout sends the same request again and again.  Both jobs are real Slurm jobs as
xcal on max-exfl016 that query through caldb's ZMQ client; `heal` cancels them and puts the
access points back in service.  ``faulty_constants``: darks taken with the detector off
(flat arrays) injected for one module, newer than the good ones; `heal` disables them.
"""

from __future__ import annotations

import json
import pwd
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import RunbookError
from sim import caldb_twin, offline, slurm
from sim.devices.client import run_actions

__all__ = ["HANDLERS", "heal", "QUERY_JOB", "STORM_JOB"]

QUERY_JOB = "correct_constants_query"
STORM_JOB = "legacy_correct_constants"

_QUERY = """\
import json, sys, time
from datetime import UTC, datetime
from caldb.remote_client import RemoteClient, endpoints_of
from engine.errors import RunbookError
interface, timeout, pause, pdu, conditions = sys.argv[1:6]
client = RemoteClient(endpoints_of(interface), timeout_s=float(timeout), max_attempts=1)
while True:
    try:
        client.retrieve(calibration="Offset", conditions=json.loads(conditions),
                        event_at=datetime.now(UTC), pdu=pdu)
    except RunbookError as exc:  # not found, or no answer in time: ask again
        print(exc, flush=True)
    time.sleep(float(pause))
"""


class CaldbFaultError(RunbookError):
    """A fault of the access points could not be made to happen."""


def _access_points(twin: Any, mode: str) -> None:
    if not (getattr(twin, "webservice", None) and twin.karabo_dirs):
        raise CaldbFaultError("this twin runs no offline access points (it needs Karabo and "
                              "the webservice)")
    server = caldb_twin.max_web_server()
    run_actions(str(twin.broker_url), caldb_twin.max_web_topic(twin.topic_prefix),
                [{"device": d, "set": {"mode": mode}} for d in server.devices])


def _querying_job(ctx: Any, name: str, timeout_s: float, pause_s: float, seconds: int) -> str:
    """A job of xcal that asks the offline access points for one module's Offset, again
    and again; returns its id."""
    ins = ctx.layout.instrument
    conditions = caldb_twin.calcat_conditions(ins.detector_type, dict(ins.conditions))
    address = ctx.twin.hosts[offline.HOST].address
    argv = [f"{offline.VENV}/bin/python", "-c", _QUERY,
            caldb_twin.max_web_interface(address), str(timeout_s), str(pause_s),
            f"{ins.physical_prefix}00", json.dumps(conditions)]
    entry = pwd.getpwnam(slurm.USER)
    return slurm.run(ctx.twin, "sbatch", "--parsable", f"--job-name={name}",
                  f"--uid={entry.pw_uid}", f"--gid={entry.pw_gid}", "--chdir=/tmp",
                  "--output=/dev/null", "--wrap",
                  f"timeout {seconds} {shlex.join(argv)}").strip().split(";")[0]


def _overloaded(ctx: Any, f: Any) -> None:
    _access_points(ctx.twin, "hung")
    _querying_job(ctx, f"{QUERY_JOB}_{ctx.instrument}", 30.0, 1.0, f.seconds)


def _storm(ctx: Any, f: Any) -> None:
    _querying_job(ctx, f"{STORM_JOB}_{ctx.instrument}", f.timeout, f.interval, f.seconds)


def _faulty_file(twin: Any) -> Path:
    return Path(twin.dir) / "faults" / "caldb" / "faulty.json"


def _faulty(ctx: Any, f: Any) -> None:
    """Someone injected darks taken with the detector off: flat arrays, at the current
    conditions, newer than the good ones, so that the pipeline loads them (section 7)."""
    from caldb.store import CalDB

    ins = ctx.layout.instrument
    if not Path(caldb_twin.db_url(ctx.twin.dir).removeprefix("sqlite:///")).exists():
        raise CaldbFaultError("this twin has no calibration DB (it needs Karabo)")
    begin = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    conditions = caldb_twin.calcat_conditions(ins.detector_type, dict(ins.conditions))
    path = _faulty_file(ctx.twin)
    ids = json.loads(path.read_text()) if path.exists() else []
    with CalDB.open(caldb_twin.db_url(ctx.twin.dir), caldb_twin.store_root(ctx.twin.dir)) as db:
        for name in ins.constants:
            ids.append(db.inject(pdu=f"{ins.physical_prefix}{f.module:02d}", calibration=name,
                                 conditions=conditions, begin_at=begin,
                                 data=np.zeros((4, 4), np.float32),
                                 description="dark runs taken with the detector off").id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ids))


HANDLERS = {"caldb_remote_overloaded": _overloaded, "caldb_request_storm": _storm,
            "faulty_constants": _faulty}


def heal(twin: Any) -> None:
    """Disable the faulty constants; cancel the querying jobs; every offline access point
    serves again."""
    path = _faulty_file(twin)
    if path.exists():
        from caldb.store import CalDB

        with CalDB.open(caldb_twin.db_url(twin.dir), caldb_twin.store_root(twin.dir)) as db:
            for ccv in json.loads(path.read_text()):
                db.disable(ccv, "twin", "heal: faulty constants of a fault")
        path.unlink()
    if not getattr(twin, "slurm", None):
        return
    ids = [job for job, _, name in (line.partition(" ") for line in
                                    slurm.run(twin, "squeue", "-h", "-o", "%i %j").splitlines())
           if name.startswith((QUERY_JOB, STORM_JOB))]
    if ids:
        slurm.run(twin, "scancel", *ids)
    if getattr(twin, "webservice", None) and twin.karabo_dirs and any(
            Path(k).parents[2].name == offline.HOST for k in twin.karabo_dirs):
        _access_points(twin, "ok")
