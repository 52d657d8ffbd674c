"""Offline calibration in the twin (guidelines 4, 8, 9): the webservice and its overview.

`install` lays out xcal's home on max-exfl016 as section 4 shows it: the venv
``calibration_webservice_venv`` (a link to the project's), ``calibration_webservice/
webservice/{webservice,serve_overview}.py`` (launchers of `sim.webservice` and
`sim.overview`) with their configurations, and the run folder
``calibration_webservice_run`` (web.log, ``webservice/temp``).  `start` runs each launcher
inside max-exfl016's namespace, cwd the run folder, with the guidelines' command line; the
process drops to xcal itself.  `kill` and `ensure_running` are what the faults
``webservice_dead`` / ``overview_down`` and `sim.faults.heal` use.

Get the service's description (`Offline`) from `install`, or from ``Offline.from_dict
(twin.webservice)``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sim import caldb_twin, procs, slurm
from sim import hosts as hostmod
from sim.procs import Proc, TwinError

__all__ = ["Offline", "HOST", "ACCOUNT", "PROGRAMS", "install", "start", "start_all",
           "wait_ready", "find", "kill", "ensure_running"]

HOST = "max-exfl016"
ACCOUNT = "xcal"
PORT = 8008
REPO = Path(__file__).resolve().parents[1]
READY_S = 20.0
HOME = f"/home/{ACCOUNT}"
VENV = f"{HOME}/calibration_webservice_venv"
CACHE = Path("/tmp/runbook-xcal-cache")
CODE = f"{HOME}/calibration_webservice/webservice"
RUN_DIR = f"{HOME}/calibration_webservice_run"
PROGRAMS = {  # process name -> (script, config option, config, its nohup output)
    "webservice": (f"{CODE}/webservice.py", "--config-file", f"{CODE}/webservice.yaml",
                   "nohup_webservice.out"),
    "overview": (f"{CODE}/serve_overview.py", "--config", f"{CODE}/serve_overview.yaml",
                 "nohup_serve_overview.out"),
}
_LAUNCHER = '''\
"""The facility twin's stand-in: {module} of {repo}."""
import sys

sys.path.insert(0, {repo!r})
from {module} import main  # noqa: E402

sys.exit(main())
'''


@dataclass(frozen=True)
class Offline:
    """Where the offline service of one twin answers; from `install` or `from_dict`."""

    address: str
    zmq_port: int
    port: int = PORT

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Offline:
        return cls(str(data["address"]), int(data["zmq_port"]), int(data["port"]))


def _argv(name: str) -> list[str]:
    script, option, config, _out = PROGRAMS[name]
    if name == "webservice":
        return [f"{VENV}/bin/python", script, "--mode", "prod", "--logging", "INFO", option,
                config]
    return [f"{VENV}/bin/python", script, option, config]


def install(twin_dir: Path, hosts: Mapping[str, hostmod.TwinHost],
            cluster: slurm.SlurmCluster, *, access_points: bool = True) -> Offline:
    """Write xcal's webservice tree on max-exfl016; the account owns its run folder."""
    if HOST not in hosts:
        raise TwinError(f"the twin has no {HOST}, where the offline calibration runs (4.1)")
    if sys.prefix == sys.base_prefix:
        raise TwinError("the twin runs the webservice with this virtualenv's python, but "
                        f"{sys.executable} is not in one (use .venv/bin/python)")
    home = hosts[HOST].home(ACCOUNT)
    uid = slurm.ensure_user(ACCOUNT)
    venv = home / "calibration_webservice_venv"
    if not venv.is_symlink():
        venv.symlink_to(sys.prefix)
    # Clients run as xcal after the drop, and the cluster's own folder may be 0700.
    conf = cluster.run_dir / "slurm.conf"
    shutil.copyfile(cluster.conf, conf)
    os.chmod(conf, 0o644)
    info = Offline(address=hosts[HOST].address, zmq_port=procs.free_port())
    common = {"account": ACCOUNT, "bind": info.address, "run_dir": RUN_DIR,
              "log": f"{RUN_DIR}/web.log", "slurm_conf": str(conf),
              "report_root": "/gpfs/exfel/d/cal/caldb_store/xfel/reports"}
    code = home / "calibration_webservice" / "webservice"
    code.mkdir(parents=True, exist_ok=True)
    configs = {
        "webservice": {**common, "zmq_port": info.zmq_port, "python": f"{VENV}/bin/python",
                       # Without the offline access points (no Karabo), the dark jobs
                       # inject into xcal's own DB.
                       "caldb": (caldb_twin.max_web_interface(info.address)
                                 if access_points else ""),
                       "raw_root": "/gpfs/exfel/exp", "partition": slurm.PARTITION,
                       "temp_dir": f"{RUN_DIR}/webservice/temp"},
        "overview": {**common, "port": info.port, "log_lines": 100},
    }
    modules = {"webservice": "sim.webservice", "overview": "sim.overview"}
    for name, (script, _opt, config, _out) in PROGRAMS.items():
        (code / Path(script).name).write_text(_LAUNCHER.format(module=modules[name],
                                                               repo=str(REPO)))
        (code / Path(config).name).write_text(json.dumps(configs[name], indent=1) + "\n")
    run = home / "calibration_webservice_run"
    (run / "webservice" / "temp").mkdir(parents=True, exist_ok=True)
    for folder in (home, run, run / "webservice", run / "webservice" / "temp"):
        os.chown(folder, uid, uid)
    reports = caldb_twin.store_root(twin_dir) / "xfel" / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    os.chown(reports, uid, uid)  # the dark jobs (xcal) write the reports of section 8
    return info


def start(twin_dir: Path, name: str, holder: Proc | None = None) -> Proc:
    """Start `name` ("webservice" or "overview") on max-exfl016 (not yet ready)."""
    holder = holder or hostmod.load_namespaces(Path(twin_dir))[HOST]
    out = Path(twin_dir) / "logs" / f"{name}.log"
    # Numba's compiled kernels and matplotlib's font cache, shared by the dark jobs of every
    # twin on this machine (xcal's home is new with each twin): a cold cache costs minutes.
    CACHE.mkdir(mode=0o1777, exist_ok=True)
    os.chmod(CACHE, 0o1777)
    return procs.start([*hostmod.enter_argv(holder, cwd=RUN_DIR), *_argv(name)], name=name,
                       log=out, env={"PATH": hostmod.LOGIN_PATH, "LANG": "C.UTF-8",
                                     "XDG_CACHE_HOME": str(CACHE)})


def start_all(twin_dir: Path, holder: Proc) -> list[Proc]:
    return [start(twin_dir, name, holder) for name in PROGRAMS]


def _ports(info: Offline) -> dict[str, int]:
    return {"webservice": info.zmq_port, "overview": info.port}


def wait_ready(info: Offline, started: Iterable[Proc], *, timeout: float = READY_S) -> None:
    """Poll each program's port (ZMQ for the webservice, HTTP for the overview)."""
    for proc in started:
        port = _ports(info)[proc.name]
        procs.wait_for(lambda p=port: procs.port_open(info.address, p, 0.2),  # type: ignore[misc]
                       timeout=timeout, what=f"the {proc.name} on {info.address}:{port}",
                       proc=proc)


def find(twin_dir: Path, name: str) -> list[int]:
    """PIDs on max-exfl016 whose command line runs `name`'s script (started by anyone)."""
    holder = hostmod.load_namespaces(Path(twin_dir))[HOST]
    inode = hostmod.namespace_inode(holder.pid)
    script = PROGRAMS[name][0].encode()
    found = []
    for pid in hostmod.namespace_members({inode}, {holder.pid, os.getpid()}):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(args) > 1 and args[1] == script:
            found.append(pid)
    return found


def kill(twin_dir: Path, name: str) -> list[int]:
    """``kill -9`` every process of `name` and wait until they are gone."""
    pids = find(twin_dir, name)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    procs.wait_for(lambda: not set(find(twin_dir, name)) & set(pids), timeout=10,
                   what=f"the killed {name} ({pids}) to go")
    return pids


def ensure_running(twin: Any) -> list[Proc]:
    """Start what of the two is not running, record it in `twin` and wait until it answers."""
    info = Offline.from_dict(twin.webservice)
    started = [start(twin.dir, name) for name in PROGRAMS if not find(twin.dir, name)]
    for proc in started:
        twin.procs = [p for p in twin.procs if p.name != proc.name]
        twin.record(proc)
    wait_ready(info, started)
    return started
