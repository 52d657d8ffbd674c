"""The calibration webservice stand-in (guidelines 4, 8): dark requests in, Slurm jobs out.

It runs as at the facility: ``<venv>/bin/python .../webservice/webservice.py --mode prod
--logging INFO --config-file .../webservice.yaml``, as xcal on max-exfl016, cwd the run
folder, writing ``web.log`` there.  A request is one JSON object on a ZMQ REP socket (the
real service speaks ZMQ too)::

    {"action": "dark_request", "instrument": "SPB", "karabo_id": "SPB_DET_AGIPD1M-1",
     "detector": "AGIPD", "proposal": 900201, "run": 12}

It checks that the raw run folder exists, makes ``temp/slurm_out_<det>_<task>_t<stamp>/``
with ``inputParameters.rst`` and submits a real Slurm job as xcal whose ``slurm-<id>.out``
lands there; the job removes the folder only when it succeeded (8.1: what is left in temp
is what failed).  The process starts as root (an SSH session of the twin is root) and drops
to the account once everything is imported and bound: the interpreter lives where the
account cannot read (see docs/twin.md, *Offline calibration*).
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

__all__ = ["main", "drop_to", "load_config", "handle"]

log = logging.getLogger()  # "root", as the facility's lines show


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


def _raw_folder(cfg: dict[str, Any], req: dict[str, Any]) -> str | None:
    pattern = os.path.join(cfg["raw_root"], str(req["instrument"]), "*",
                           f"p{int(req['proposal']):06d}", "raw", f"r{int(req['run']):04d}")
    found = sorted(glob.glob(pattern))
    return found[-1] if found else None


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
if [ "$rc" -eq 0 ]; then rm -rf {temp}; fi
exit "$rc"
"""


def handle(cfg: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
    """One dark request: the three log lines of 4.2.2, or an ERROR line and a refusal."""
    try:
        instrument, karabo_id = str(req["instrument"]), str(req["karabo_id"])
        proposal, run = int(req["proposal"]), int(req["run"])
        detector = str(req.get("detector") or karabo_id.split("_")[-1].split("1M")[0])
    except (KeyError, TypeError, ValueError) as exc:
        log.error("Malformed request %r: %s", req, exc)
        return {"status": "FAILED", "message": f"malformed request: {exc}"}
    log.info("Dark characterization for %s at %s is requested, Checking files...",
             karabo_id, instrument)
    raw = _raw_folder(cfg, req)
    if raw is None:
        log.error("Dark characterization for %s at %s: no raw data for proposal %s, run %s "
                  "under %s", karabo_id, instrument, proposal, run, cfg["raw_root"])
        return {"status": "FAILED", "message": f"no raw folder for p{proposal} r{run}"}
    now = datetime.now()
    stamp = now.strftime("%y%m%d_%H%M%S")
    temp = Path(cfg["temp_dir"]) / f"slurm_out_{detector}_DARK_t{now:%Y%m%d%H%M%S%f}"
    temp.mkdir(parents=True)
    report = (f"{cfg['report_root']}/{instrument}/{karabo_id}/dark/"
              f"dark_{proposal}_r{run}_{stamp}")
    argv = [cfg["python"], "-m", "detectors.dark", "--instrument", instrument,
            "--detector", karabo_id, "--runs", str(run), "--proposal", str(proposal),
            "--raw-root", str(Path(raw).parent), "--report-root", cfg["report_root"]]
    (temp / "inputParameters.rst").write_text(
        "Input of the characterization\n==============================\n\n"
        + "".join(f"- {k}: {v}\n" for k, v in [
            ("karabo_id", karabo_id), ("instrument", instrument), ("detector", detector),
            ("proposal", proposal), ("run", run), ("in_folder", raw),
            ("report_to", report), ("request_time", now.isoformat(timespec="seconds"))]))
    name = f"dark_{instrument}_{detector}_p{proposal}_r{run}"
    script = temp / "dark.sh"
    script.write_text(_JOB.format(name=name, temp=shlex.quote(str(temp)),
                                  partition=cfg["partition"], command=shlex.join(argv)))
    log.info("python -m detectors.dark %s", shlex.join(argv[3:]))
    try:
        got = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True,
                             text=True, timeout=30, cwd=temp,
                             env={**os.environ, "SLURM_CONF": cfg["slurm_conf"]})
    except subprocess.TimeoutExpired:
        log.error("sbatch did not answer within 30 s for proposal %s, run %s", proposal, run)
        return {"status": "FAILED", "message": "sbatch timed out", "temp": str(temp)}
    if got.returncode != 0:
        log.error("sbatch failed for proposal %s, run %s: %s", proposal, run,
                  (got.stderr or got.stdout).strip())
        return {"status": "FAILED", "message": got.stderr.strip(), "temp": str(temp)}
    job = got.stdout.strip().split(";")[0]
    log.info("SUCCESS: Started dark characterization: proposal %s, run %s", proposal, run)
    return {"status": "SUCCESS", "job_id": job, "temp": str(temp), "report": report}


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
