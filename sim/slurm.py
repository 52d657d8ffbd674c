"""Maxwell's Slurm for one twin: real munged, slurmctld and slurmd on one node.

The runbooks' one-liners (``squeue -u xcal -o ...``, ``sbatch``) meet real Slurm output,
not a fake.  Key, slurm.conf, state, pid files and logs live in ``<twin>/slurm/``; two
things live in ``/tmp/runbook-slurm/<cluster>/`` instead, world-traversable: munge's socket
(a socket path must stay under 108 bytes, and pytest's tmp paths do not) and slurmd's
spool (a job executes its script from there as the job's user, who cannot pass pytest's
0700 folders).  Ports and the cluster name are fresh per cluster, so that twins started
side by side (pytest-xdist workers) each see only their own jobs.

The daemons are each their own process (`sim.procs.start`) for the caller to record, so a
crashed caller's cluster can still be stopped by PID.  Every client call has a timeout:
``squeue`` takes 9 s to fail when slurmctld is down.

Get a running cluster with `start`, or overlap its start with other work as `sim.twin.up`
does: `configure`, `start_daemons`, `start_node` (or `start_maxwell_node`), `wait_ready`.
Stop it with `stop`, or with `cancel_jobs`, then the recorded processes, then `cleanup`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sim import _slurm_files, procs
from sim import hosts as hostmod
from sim.procs import Proc, TwinError

__all__ = ["SlurmCluster", "PARTITION", "USER", "CLIENT_HOSTS", "configure", "start_daemons",
           "start_node", "start_maxwell_node", "wait_ready", "start", "stop", "cancel_jobs",
           "cleanup", "job_processes", "env", "client", "ensure_user", "login_env"]

PARTITION = "upex"
"""Maxwell's partition for the facility's calibration jobs (`runbook dark --slurm`)."""
USER = "xcal"
CLIENT_HOSTS = ("max-exfl016", "max-exfl")
"""Twin hosts whose logins reach the twin's cluster: the ``webservice`` and ``maxwell``
groups of the xfel site; the node runs inside the first one the twin has."""
RUN_ROOT = Path("/tmp/runbook-slurm")
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
READY_S = 30.0
CLIENT_S = 15.0


@dataclass(frozen=True)
class SlurmCluster:
    """One cluster's folder, name and ports; get one from `configure` or `start`, or
    from ``SlurmCluster.from_dict(twin.slurm)``."""

    dir: Path
    name: str
    ctld_port: int
    node_port: int
    cpus: int
    procs: tuple[Proc, ...] = field(default=(), compare=False)

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def socket(self) -> Path:
        return self.run_dir / "munge.socket"

    @property
    def spool(self) -> Path:
        return self.run_dir / "spool"

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["procs"]
        return {**data, "dir": str(self.dir)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SlurmCluster:
        return cls(Path(str(data["dir"])), str(data["name"]), int(str(data["ctld_port"])),
                   int(str(data["node_port"])), int(str(data["cpus"])))


def env(conf: Path) -> dict[str, str]:
    """What a client's environment needs to reach the cluster of `conf`."""
    return {"SLURM_CONF": str(conf)}


def login_env(twin_dir: Path, host: str, path: str) -> dict[str, str]:
    """What a login on `host` adds to its environment (`path`: its PATH): on Maxwell's
    hosts, the twin's cluster and the ``sbatch`` that submits as the account."""
    folder = Path(twin_dir) / "slurm"
    if host not in CLIENT_HOSTS or not (folder / "slurm.conf").exists():
        return {}
    return {**env(folder / "slurm.conf"), "PATH": f"{folder / 'bin'}:{path}"}


def client(conf: Path, argv: Sequence[str], *, timeout: float = CLIENT_S
           ) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command against `conf`, killed after `timeout` seconds."""
    try:
        return subprocess.run(list(argv), env={**os.environ, **env(conf)}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TwinError(f"`{' '.join(argv)}` did not answer within {timeout:g} s "
                        f"(SLURM_CONF={conf})") from exc


def run(twin: Any, *argv: str) -> str:
    """A Slurm client command on `twin`'s cluster (what the faults do to Maxwell): its
    output, or TwinError with what Slurm said."""
    if not getattr(twin, "slurm", None):
        raise TwinError("this twin runs no Slurm (Maxwell)")
    got = client(SlurmCluster.from_dict(twin.slurm).conf, list(argv))
    if got.returncode != 0:
        raise TwinError(f"`{' '.join(argv)}` failed: {(got.stderr or got.stdout).strip()}")
    return got.stdout


def ensure_user(name: str = USER, *, timeout: float = 10.0) -> int:
    """The uid of the OS account `name`, made with useradd when missing.

    Slurm runs a job as a real uid, and ``squeue -u xcal`` looks the name up; the twin's
    own accounts are only homes on its hosts.  Twins starting together may both try:
    useradd then fails on the lock of /etc/passwd, so this polls until the account exists.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            pass
        if time.monotonic() >= deadline:
            raise TwinError(f"cannot create the OS account {name!r} within {timeout:g} s: "
                            f"{last or 'useradd gave no message'}")
        made = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/bash", name],
                              capture_output=True, text=True, check=False)
        last = made.stderr.strip()
        if made.returncode != 0:
            time.sleep(0.1)


def configure(twin_dir: Path, *, cpus: int | None = None) -> SlurmCluster:
    """Write a fresh ``<twin>/slurm``: slurm.conf (new ports and name), munge key, sbatch."""
    missing = [p for p in PROGRAMS if shutil.which(p, path=SBIN_PATH) is None]
    if missing:
        raise TwinError(f"Slurm is not installed ({', '.join(missing)} missing): run `make "
                        "system` (Debian's munge, slurmctld, slurmd, slurm-client)")
    ctld_port = node_port = procs.free_port()
    while node_port == ctld_port:
        node_port = procs.free_port()
    cluster = SlurmCluster(dir=Path(twin_dir).resolve() / "slurm",
                           name=f"twin{secrets.token_hex(4)}", ctld_port=ctld_port,
                           node_port=node_port, cpus=cpus or os.cpu_count() or 1)
    shutil.rmtree(cluster.dir, ignore_errors=True)
    for sub in ("state", "log", "munge", "bin"):
        (cluster.dir / sub).mkdir(parents=True)
    os.chmod(cluster.dir / "munge", 0o700)
    cluster.spool.mkdir(parents=True, exist_ok=True)
    for public in (RUN_ROOT, cluster.run_dir, cluster.spool):
        os.chmod(public, 0o755)
    cluster.conf.write_text(_slurm_files.conf_text(
        name=cluster.name, ctld_port=cluster.ctld_port, node_port=cluster.node_port,
        socket=str(cluster.socket), spool=str(cluster.spool), dir=str(cluster.dir),
        cpus=cluster.cpus, partition=PARTITION))
    sbatch = cluster.bin / "sbatch"
    sbatch.write_text(_slurm_files.sbatch_text(str(shutil.which("sbatch"))))
    sbatch.chmod(0o755)
    made = subprocess.run(["mungekey", "--create", "--keyfile",
                           str(cluster.dir / "munge" / "munge.key")],
                          capture_output=True, text=True, check=False, timeout=30)
    if made.returncode != 0:
        raise TwinError(f"mungekey failed: {made.stderr.strip()}")
    return cluster


def _daemon_env(cluster: SlurmCluster) -> dict[str, str]:
    return {**os.environ, "PATH": SBIN_PATH, **env(cluster.conf)}


def start_daemons(cluster: SlurmCluster) -> list[Proc]:
    """Start munged and slurmctld (the node comes with `start_node`); not yet ready."""
    munge, logs = cluster.dir / "munge", cluster.log_dir
    started = [procs.start(
        ["munged", "--foreground", "--force", f"--socket={cluster.socket}",
         f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
         f"--seed-file={munge / 'munged.seed'}", f"--log-file={logs / 'munged.log'}"],
        name="slurm:munged", log=logs / "munged.out", env=_daemon_env(cluster))]
    try:
        procs.wait_for(cluster.socket.exists, timeout=READY_S,
                       what=f"munged's socket {cluster.socket}", proc=started[0])
        started.append(procs.start(["slurmctld", "-D", "-i"], name="slurm:slurmctld",
                                   log=logs / "slurmctld.out", env=_daemon_env(cluster)))
    except BaseException:
        procs.stop_all(started)  # not yet the caller's to record
        raise
    return started


def start_node(cluster: SlurmCluster, prefix: Sequence[str] = ()) -> Proc:
    """Start slurmd; `prefix` (`sim.hosts.enter_argv`) runs it and its jobs on a twin host."""
    return procs.start([*prefix, "slurmd", "-D", "-N", "localhost"], name="slurm:slurmd",
                       log=cluster.log_dir / "slurmd.out", env=_daemon_env(cluster))


def start_maxwell_node(cluster: SlurmCluster, hosts: Mapping[str, hostmod.TwinHost],
                       namespaces: Mapping[str, Proc]) -> Proc:
    """slurmd inside the twin's Maxwell host: a job sees that host's /home and /gpfs and
    writes ``slurm-<id>.out`` into the submitter's home, which its account owns."""
    node = next((n for n in CLIENT_HOSTS if n in namespaces), None)
    if node is None:
        raise TwinError(f"the twin has none of Maxwell's hosts {', '.join(CLIENT_HOSTS)}")
    uid = ensure_user()
    for name in CLIENT_HOSTS:
        if name in hosts and USER in hosts[name].accounts:
            os.chown(hosts[name].home(USER), uid, uid)
    return start_node(cluster, hostmod.enter_argv(namespaces[node]))


def wait_ready(cluster: SlurmCluster, started: Sequence[Proc], *,
               timeout: float = READY_S) -> None:
    """Poll ``scontrol ping``, then ``sinfo`` until the node is idle; fail on a dead daemon."""
    deadline = time.monotonic() + timeout
    steps: tuple[tuple[list[str], Callable[[str], bool], str], ...] = (
        (["scontrol", "ping"], lambda out: " is UP" in out, "slurmctld to answer `scontrol ping`"),
        (["sinfo", "-h", "-o", "%T"], lambda out: out.split() == ["idle"],
         f"the node of {cluster.name} to be idle"))
    for argv, ready, what in steps:
        last = ""
        while not ready(last):
            dead = [p for p in started if not procs.alive(p.pid, p.start)]
            if dead:
                raise TwinError(f"{dead[0].name} exited while waiting for {what}; see "
                                f"{dead[0].log} and {cluster.log_dir}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TwinError(f"timed out after {timeout:g} s waiting for {what} (last "
                                f"answer: {last.strip()[-300:]!r}); see {cluster.log_dir}")
            if last:
                time.sleep(0.05)
            try:
                got = client(cluster.conf, argv, timeout=max(0.5, min(5.0, left)))
                last = got.stdout + got.stderr or "(nothing)"
            except TwinError as exc:
                last = str(exc)


def start(twin_dir: Path, *, cpus: int | None = None, timeout: float = READY_S
          ) -> SlurmCluster:
    """Configure and start a cluster in ``<twin_dir>/slurm``; returns it ready for jobs."""
    ensure_user()
    cluster = configure(twin_dir, cpus=cpus)
    started: list[Proc] = []
    try:
        started += start_daemons(cluster)
        started.append(start_node(cluster))
        wait_ready(cluster, started, timeout=timeout)
    except BaseException:
        stop(cluster, started)
        raise
    return replace(cluster, procs=tuple(started))


def _job_ids(cluster: SlurmCluster) -> list[str]:
    got = client(cluster.conf, ["squeue", "-h", "-o", "%A"], timeout=5.0)
    if got.returncode != 0:
        raise TwinError(f"squeue failed: {(got.stderr or got.stdout).strip()}")
    return got.stdout.split()


def cancel_jobs(cluster: SlurmCluster, daemons: Iterable[Proc], *,
                timeout: float = 15.0) -> list[str]:
    """scancel every job and wait until none is left; returns problems (empty when clean).

    Done before the daemons stop, because a job's processes outlive slurmd; skipped when
    slurmctld (among `daemons`) is gone, which squeue would take 9 s to find out.
    """
    ctld = [p for p in daemons if p.name == "slurm:slurmctld"]
    if not ctld or not procs.alive(ctld[0].pid, ctld[0].start):
        return []
    try:
        ids = _job_ids(cluster)
        if ids:
            client(cluster.conf, ["scancel", *ids], timeout=5.0)
            procs.wait_for(lambda: not _job_ids(cluster), timeout=timeout,
                           what=f"the jobs of {cluster.name} to end after scancel",
                           interval=0.1)
    except TwinError as exc:
        return [str(exc)]
    return []


def job_processes(cluster: SlurmCluster) -> list[int]:
    """Processes of this cluster's jobs: their environment names its slurm.conf."""
    mark = f"SLURM_CONF={cluster.conf}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ and any(v.startswith(b"SLURM_JOB_ID=") for v in environ):
            found.append(int(entry.name))
    return found


def cleanup(cluster: SlurmCluster) -> None:
    """After the daemons: kill what jobs left behind, remove the cluster's /tmp folder."""
    for pid in job_processes(cluster):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    shutil.rmtree(cluster.run_dir, ignore_errors=True)


def stop(cluster: SlurmCluster, started: Sequence[Proc] | None = None) -> list[str]:
    """scancel every job, stop the daemons by PID, clean up; returns problems."""
    daemons = list(cluster.procs if started is None else started)
    problems = cancel_jobs(cluster, daemons)
    try:
        procs.stop_all(list(reversed(daemons)))
    except TwinError as exc:
        problems.append(str(exc))
    cleanup(cluster)
    return problems
