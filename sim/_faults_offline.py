"""The offline fault kinds (guidelines 4, 8, 9, 12.2): causes on max-exfl016 and Maxwell.

Each handler makes a cause happen where it happens at the facility: the webservice or its
overview dies, other users' jobs fill Maxwell, a burst of long calibration jobs of xcal,
Maxwell's partition drained, xcal's plotting configuration changed, a wrong option in the
calibration configuration, the same darks characterized before.  What the runbooks see
follows from the webservice stand-in, Slurm and the dark job themselves.  `HANDLERS` is
merged into `sim.faults`' table; `heal` undoes what can be undone (see docs/scenarios.md).
"""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from engine.errors import RunbookError
from sim import offline, slurm
from sim.webservice import CONFIGURATIONS

__all__ = ["HANDLERS", "heal", "OTHER_USERS_JOB", "PILE_PREFIX"]

OTHER_USERS_JOB = "maxwell_other_users"
"""The job name of the other users' work that fills Maxwell (maxwell_busy)."""
PILE_PREFIX = "correct_"
"""The names of the long correction jobs of xcal that pile up (jobs_piling_up)."""
MATPLOTLIBRC = ".config/matplotlib/matplotlibrc"
_SAVED = "faults/offline"  # in the twin's folder, outside every host: what heal puts back


class OfflineFaultError(RunbookError):
    """An offline fault could not be made to happen (Slurm refused, a request failed)."""


def _state(twin: Any) -> tuple[Path, dict[str, Any]]:
    """What heal must undo: ``{"files": {path: old text or None}, "slurm": bool}``."""
    path = Path(twin.dir) / _SAVED / "state.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return path, {"files": {}, "slurm": False, **data}


def _remember(twin: Any, *, file: Path | None = None) -> None:
    """Note a Slurm cause, or keep `file`'s content (or absence) once for heal."""
    path, data = _state(twin)
    if file is None:
        data["slurm"] = True
    elif str(file) not in data["files"]:
        data["files"][str(file)] = file.read_text() if file.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _poll(what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise OfflineFaultError(f"timed out after {timeout:g} s waiting for {what}")


def _states(twin: Any, name_prefix: str, user: str | None = None) -> list[str]:
    argv = ["squeue", "-h", "-o", "%j %t"] + (["-u", user] if user else [])
    return [state for name, _, state in (line.partition(" ") for line in
                                         slurm.run(twin, *argv).splitlines())
            if name.startswith(name_prefix)]


def _sleeper(twin: Any, name: str, seconds: int, *extra: str) -> str:
    """A long job that takes a whole node (``--exclusive``); returns its id."""
    return slurm.run(twin, "sbatch", "--parsable", "--exclusive", f"--job-name={name}",
                  "--chdir=/tmp", "--output=/dev/null", *extra, "--wrap",
                  f"sleep {seconds}").strip().split(";")[0]


def _offline_dead(ctx: Any, f: Any) -> None:
    offline.kill(Path(ctx.twin.dir), "webservice" if f.kind == "webservice_dead" else "overview")


def _maxwell_busy(ctx: Any, f: Any) -> None:
    # Other users' work takes every node of the partition; it runs as root, so that
    # `squeue -u xcal` does not list it (at the facility it is other accounts' jobs).
    _remember(ctx.twin)
    for _ in range(f.nodes):
        _sleeper(ctx.twin, OTHER_USERS_JOB, f.seconds)
    _poll("the other users' jobs to run (after the jobs running now)",
          lambda: _states(ctx.twin, OTHER_USERS_JOB).count("R") >= f.nodes, f.start_timeout)


def _jobs_piling_up(ctx: Any, f: Any) -> None:
    # A correction of many runs: long jobs of xcal, each on a node of its own, more than
    # Maxwell's partition holds at once (the jobs of Fig. 9.2).
    entry = pwd.getpwnam(slurm.USER)
    _remember(ctx.twin)
    for i in range(f.jobs):
        _sleeper(ctx.twin, f"{PILE_PREFIX}{ctx.instrument}_p{f.proposal:06d}_r{f.run + i:04d}",
                 f.seconds, f"--uid={entry.pw_uid}", f"--gid={entry.pw_gid}")
    _poll(f"{f.jobs} correction jobs of {slurm.USER} in the queue",
          lambda: len(_states(ctx.twin, PILE_PREFIX, slurm.USER)) >= f.jobs)


def _partition_drained(ctx: Any, f: Any) -> None:
    # Maxwell maintenance: the calibration partition takes no new jobs (sbatch fails).
    _remember(ctx.twin)
    slurm.run(ctx.twin, "scontrol", "update", f"PartitionName={slurm.PARTITION}", "State=DRAIN")


def _xcal_home(ctx: Any) -> Path:
    return Path(ctx.twin.hosts[offline.HOST].home(offline.ACCOUNT))


def _write_as_xcal(root: Path, relative: str, text: str) -> None:
    """Write ``root/relative``, the folders and file owned by xcal (as its own edit)."""
    entry = pwd.getpwnam(slurm.USER)
    path = root / relative
    folder = root
    for part in Path(relative).parent.parts:
        folder = folder / part
        folder.mkdir(exist_ok=True)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    path.write_text(text)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _matplotlibrc(ctx: Any, f: Any) -> None:
    # Someone changed xcal's plotting configuration: LaTeX for every text (the node has no
    # LaTeX, so no figure renders) or a font the node does not have (every text falls back).
    home = _xcal_home(ctx)
    _remember(ctx.twin, file=home / MATPLOTLIBRC)
    line = ("text.usetex: True" if f.kind == "report_rendering_failed"
            else f"font.family: {f.font}")
    _write_as_xcal(home, MATPLOTLIBRC, f"# changed for the new report style\n{line}\n")


def _detector_id(ctx: Any, f: Any) -> str:
    return str(f.karabo_id or ctx.layout.instrument.karabo_id)


def _wrong_input(ctx: Any, f: Any) -> None:
    # The calibration configuration gives the detector a wrong option (8.2 B).
    home = _xcal_home(ctx)
    relative = f"calibration_webservice_run/{CONFIGURATIONS}/{ctx.instrument}.json"
    path = home / relative
    _remember(ctx.twin, file=path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(_detector_id(ctx, f), {})[f.option] = f.value
    _write_as_xcal(home, relative, json.dumps(data, indent=1) + "\n")


def _version_taken(ctx: Any, f: Any) -> None:
    # The same darks were characterized and injected before: an identical request ran.
    info = offline.Offline.from_dict(ctx.twin.webservice)
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://{info.address}:{info.zmq_port}")
        sock.send_json({"action": "dark_request", "instrument": ctx.instrument,
                        "karabo_id": _detector_id(ctx, f), "proposal": f.proposal,
                        "runs": list(f.runs)})
        reply = dict(sock.recv_json())  # type: ignore[arg-type]
    except zmq.Again as exc:
        raise OfflineFaultError("the webservice did not answer the first request") from exc
    finally:
        sock.close()
    if reply.get("status") != "SUCCESS":
        raise OfflineFaultError(f"the first request was refused: {reply}")
    temp = Path(ctx.twin.hosts[offline.HOST].root) / str(reply["temp"]).lstrip("/")
    report = Path(ctx.twin.dir) / str(reply["report"]).lstrip("/")
    job = str(reply["job_id"])
    _poll(f"the first request's job {job} to leave the queue",
          lambda: job not in slurm.run(ctx.twin, "squeue", "-h", "-o", "%i").split(), f.timeout)
    if temp.exists() or not (report / "index.html").exists():
        raise OfflineFaultError(f"the first request's job failed, nothing was injected: "
                                f"{_text(temp / f'slurm-{job}.out')[-2000:]}")


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


HANDLERS = {
    "webservice_dead": _offline_dead, "overview_down": _offline_dead,
    "maxwell_busy": _maxwell_busy, "jobs_piling_up": _jobs_piling_up,
    "job_never_launched": _partition_drained,
    "report_rendering_failed": _matplotlibrc, "plotting_errors_only": _matplotlibrc,
    "wrong_input_parameter": _wrong_input, "version_taken": _version_taken,
}


def heal(twin: Any) -> None:
    """Undo the offline causes: the partition up, the fault jobs cancelled, the files put
    back, the webservice and overview running.  Constants injected stay in the DB."""
    path, data = _state(twin)
    if data["slurm"]:
        slurm.run(twin, "scontrol", "update", f"PartitionName={slurm.PARTITION}", "State=UP")
        ids = [job for job, _, name in (line.partition(" ") for line in
                                        slurm.run(twin, "squeue", "-h", "-o", "%i %j").splitlines())
               if name.startswith((OTHER_USERS_JOB, PILE_PREFIX))]
        if ids:
            slurm.run(twin, "scancel", *ids)
            _poll("the fault jobs to end after scancel", lambda: not set(ids) & set(
                slurm.run(twin, "squeue", "-h", "-o", "%i").split()))
    for name, text in data["files"].items():
        if text is None:
            Path(name).unlink(missing_ok=True)
        else:
            Path(name).write_text(text)
    path.unlink(missing_ok=True)
    if getattr(twin, "webservice", None):
        offline.ensure_running(twin)
