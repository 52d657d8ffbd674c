"""The calibration webservice stand-in (guidelines 4, 8): dark requests in, Slurm jobs out.

It runs as at the facility: ``<venv>/bin/python .../webservice/webservice.py --mode prod
--logging INFO --config-file .../webservice.yaml``, as xcal on max-exfl016, cwd the run
folder, writing ``web.log`` there.  A request is one JSON object on a ZMQ REP socket (the
real service speaks ZMQ too)::

    {"action": "dark_request", "instrument": "SPB", "karabo_id": "SPB_DET_AGIPD1M-1",
     "detector": "AGIPD", "proposal": 900201, "runs": [12, 13, 14]}

(``"run": 39`` for a detector with one dark run.)  It checks that the raw run folders
exist, makes ``temp/slurm_out_<det>_<task>_t<stamp>/`` with ``inputParameters.rst`` and
submits a real Slurm job as xcal whose ``slurm-<id>.out`` lands there.  The job writes the
report into the report tree (section 8 C); when it succeeded it copies its output there
too (the facility's report holds the notebooks' output) and removes the temp folder; when
it failed it keeps the temp folder (8.1: what is left in temp is what failed) and moves
what it had made of the report into it, so that the report tree holds finished reports
only.  The detector's options come from the calibration configuration, read for each
request (`detector_options`).  The process starts as root (an SSH session of the twin is
root) and drops to the account once everything is imported and bound: the interpreter
lives where the account cannot read (see docs/twin.md, *Offline calibration*).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import pwd
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import zmq

__all__ = ["main", "drop_to", "load_config", "handle", "detector_options",
           "CONFIGURATIONS"]

log = logging.getLogger()  # "root", as the facility's lines show

CONFIGURATIONS = "calibration_configurations"
"""The folder in the run folder with each instrument's detector options (<instrument>.json:
``{"<karabo_id>": {"<option>": value}}``): the facility's webservice takes them from its
calibration-configurations repository for each request."""


def load_config(path: str) -> dict[str, Any]:
    with open(path) as f:  # JSON, which is also YAML: no YAML parser to import
        data = json.load(f)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: the configuration is not a mapping")
    return data


def drop_to(account: str) -> None:
    """Become `account` for good, as a login of that account would be."""
    entry = pwd.getpwnam(account)
    if os.geteuid() != 0:
        return
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    os.environ.update(USER=account, LOGNAME=account, HOME=entry.pw_dir)


def _raw_folders(cfg: dict[str, Any], instrument: str, proposal: int,
                 runs: list[int]) -> tuple[list[str], list[int]]:
    """The newest cycle's folder of each run, and the runs that have none."""
    found, missing = [], []
    for run in runs:
        pattern = os.path.join(cfg["raw_root"], instrument, "*", f"p{proposal:06d}", "raw",
                               f"r{run:04d}")
        folders = sorted(glob.glob(pattern))
        if folders:
            found.append(folders[-1])
        else:
            missing.append(run)
    return found, missing


def detector_options(cfg: dict[str, Any], instrument: str, karabo_id: str) -> dict[str, Any]:
    """The detector's options in the calibration configuration, read now (none if absent)."""
    path = Path(cfg["run_dir"]) / CONFIGURATIONS / f"{instrument}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the calibration configuration {path}: {exc}") from exc
    options = data.get(karabo_id, {}) if isinstance(data, dict) else None
    if not isinstance(options, dict):
        raise ValueError(f"{path}: the options of {karabo_id} are not a mapping")
    return options


def _as_args(options: dict[str, Any]) -> list[str]:
    """``{"condition": ["a=1"], "trains": 10}`` -> ``--condition a=1 --trains 10``."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            out += [flag] if item is True else [flag, str(item)]
    return out


def _runs(req: dict[str, Any]) -> list[int]:
    given = req["runs"] if "runs" in req else req["run"]
    items = given if isinstance(given, list) else str(given).split(",")
    runs = [int(r) for r in items]
    if not runs:
        raise ValueError("no runs")
    return runs


_JOB = """\
#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --output={temp}/slurm-%j.out
#SBATCH --partition={partition}
# Written by the calibration webservice: the dark characterization of one request.
cd {temp}
echo "started on $(hostname) as $(id -un) at $(date -Is)"
{command}
rc=$?
echo "finished with exit status $rc at $(date -Is)"
if [ "$rc" -eq 0 ]; then
    cp "slurm-$SLURM_JOB_ID.out" {report}/ && rm -rf {temp}
elif [ -d {report} ]; then
    mv {report} {temp}/report
fi
exit "$rc"
"""


def handle(cfg: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
    """One dark request: the three log lines of 4.2.2, or an ERROR line and a refusal."""
    try:
        instrument, karabo_id = str(req["instrument"]), str(req["karabo_id"])
        proposal, runs = int(req["proposal"]), _runs(req)
        detector = str(req.get("detector") or karabo_id.split("_")[-1].split("1M")[0])
    except (KeyError, TypeError, ValueError) as exc:
        log.error("Malformed request %r: %s", req, exc)
        return {"status": "FAILED", "message": f"malformed request: {exc}"}
    label = ",".join(map(str, runs))
    log.info("Dark characterization for %s at %s is requested, Checking files...",
             karabo_id, instrument)
    raw, missing = _raw_folders(cfg, instrument, proposal, runs)
    if missing:
        log.error("Dark characterization for %s at %s: no raw data for proposal %s, run %s "
                  "under %s (missing: %s)", karabo_id, instrument, proposal, label,
                  cfg["raw_root"], ",".join(map(str, missing)))
        return {"status": "FAILED", "message": f"no raw folder for p{proposal} r{label}"}
    try:
        options = detector_options(cfg, instrument, karabo_id)
    except ValueError as exc:
        log.error("Dark characterization for %s at %s: %s", karabo_id, instrument, exc)
        return {"status": "FAILED", "message": str(exc)}
    now = datetime.now()
    temp = Path(cfg["temp_dir"]) / f"slurm_out_{detector}_DARK_t{now:%Y%m%d%H%M%S%f}"
    temp.mkdir(parents=True)
    report = (f"{cfg['report_root']}/{instrument}/{karabo_id}/dark/dark_{proposal:06d}_"
              + "_".join(f"r{r}" for r in runs) + f"_{now:%y%m%d_%H%M%S}")
    argv = [cfg["python"], "-m", "detectors.dark", "--instrument", instrument,
            "--detector", karabo_id, "--runs", label, "--proposal", str(proposal),
            "--raw-root", str(Path(raw[0]).parent), "--report-dir", report,
            *(["--db", cfg["caldb"]] if cfg.get("caldb") else []),
            *_as_args(options), *cfg.get("dark_args", [])]
    (temp / "inputParameters.rst").write_text(
        "Input of the characterization\n==============================\n\n"
        + "".join(f"- {k}: {v}\n" for k, v in [
            ("karabo_id", karabo_id), ("instrument", instrument), ("detector", detector),
            ("proposal", proposal), ("run", label), ("in_folder", ", ".join(raw)),
            ("report_to", report), ("request_time", now.isoformat(timespec="seconds")),
            *options.items()]))
    name = f"dark_{instrument}_{detector}_p{proposal}_r{label.replace(',', '_')}"
    script = temp / "dark.sh"
    script.write_text(_JOB.format(name=name, temp=shlex.quote(str(temp)),
                                  report=shlex.quote(report), partition=cfg["partition"],
                                  command=shlex.join(argv)))
    log.info("python -m detectors.dark %s", shlex.join(argv[3:]))
    try:
        got = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True,
                             text=True, timeout=30, cwd=temp,
                             env={**os.environ, "SLURM_CONF": cfg["slurm_conf"]})
    except subprocess.TimeoutExpired:
        log.error("sbatch did not answer within 30 s for proposal %s, run %s", proposal, label)
        return {"status": "FAILED", "message": "sbatch timed out", "temp": str(temp)}
    if got.returncode != 0:
        log.error("sbatch failed for proposal %s, run %s: %s", proposal, label,
                  (got.stderr or got.stdout).strip())
        return {"status": "FAILED", "message": got.stderr.strip(), "temp": str(temp)}
    job = got.stdout.strip().split(";")[0]
    log.info("SUCCESS: Started dark characterization: proposal %s, run %s", proposal, label)
    return {"status": "SUCCESS", "job_id": job, "temp": str(temp), "report": report,
            "name": name}


def _serve(cfg: dict[str, Any], sock: zmq.Socket[bytes]) -> None:
    while True:
        raw = sock.recv()
        try:
            req = json.loads(raw)
            if not isinstance(req, dict) or req.get("action") not in ("dark_request", "ping"):
                raise ValueError("expected {'action': 'dark_request' | 'ping', ...}")
        except ValueError as exc:
            log.error("Unknown request %r: %s", raw[:200], exc)
            sock.send_json({"status": "FAILED", "message": str(exc)})
            continue
        if req["action"] == "ping":
            sock.send_json({"status": "SUCCESS", "pid": os.getpid(), "time": time.time()})
            continue
        sock.send_json(handle(cfg, req))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webservice.py")
    parser.add_argument("--mode", choices=["prod", "sim", "local"], default="prod")
    parser.add_argument("--logging", default="INFO")
    parser.add_argument("--config-file", required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REP)
    sock.bind(f"tcp://{cfg['bind']}:{cfg['zmq_port']}")
    drop_to(cfg["account"])
    logging.basicConfig(filename=os.path.join(cfg["run_dir"], "web.log"),
                        level=getattr(logging, args.logging.upper(), logging.INFO),
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    log.info("Starting webservice in %s mode on tcp://%s:%s", args.mode, cfg["bind"],
             cfg["zmq_port"])
    try:
        _serve(cfg, sock)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
