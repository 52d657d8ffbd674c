"""Bring the whole twin up and down: hosts, SSH gateway, Slurm, broker, Karabo, the sim site.

`up` records every process it starts in ``<twin>/state.json`` as soon as it has started
it, so that `down` can stop everything even after an `up` that failed half way or a
crashed caller.  `down` cancels every Slurm job first (a job's processes outlive slurmd),
stops by recorded PID (and process group), then sweeps every process still inside one of
the twin's host namespaces (what SSH sessions left behind, e.g. a ``karabo-start``), and
checks that the twin's ports are closed.

The Karabo side (broker, installations, layout, faults) comes from twin-karabo's modules;
all calls to them are in the `_karabo_*` functions below.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sim import hosts as hostmod
from sim import mailbox, offline, procs, site, slurm, sshd
from sim.devices.client import close_children
from sim.procs import Proc, TwinError

__all__ = ["Twin", "TwinFactory", "INSTRUMENTS", "default_dir", "up", "down", "status",
           "inject", "load"]

INSTRUMENTS = ("SPB", "MID", "FXE", "SCS")
REPO = Path(__file__).resolve().parents[1]
GATEWAY_READY_S = 20.0
SMTP_READY_S = 20.0


def default_dir() -> Path:
    return Path(os.environ.get("RUNBOOK_SIM_DIR") or REPO / ".twin").resolve()


@dataclass
class Twin:
    """A running twin as recorded in state.json; get one from `up` or `load`."""

    dir: Path
    instruments: tuple[str, ...]
    slot: int
    topic_prefix: str
    ssh_port: int = 22
    smtp_port: int | None = None
    broker_url: str | None = None
    topics: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    karabo_dirs: list[str] = field(default_factory=list)
    ns_inodes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    faults: list[dict[str, object]] = field(default_factory=list)
    slurm: dict[str, object] | None = None
    webservice: dict[str, object] | None = None

    @property
    def hosts(self) -> dict[str, hostmod.TwinHost]:
        return hostmod.load_hosts(self.dir)

    @property
    def ssh_config(self) -> Path:
        return site.SitePaths(self.dir).ssh_config

    @property
    def known_hosts(self) -> Path:
        return site.SitePaths(self.dir).known_hosts

    @property
    def site_file(self) -> Path:
        return site.SitePaths(self.dir).site

    @property
    def hosts_file(self) -> Path:
        return self.dir / "hosts.json"

    @property
    def slurm_conf(self) -> Path | None:
        """The twin's Slurm cluster, for `sim.slurm.client` or $SLURM_CONF (None before up)."""
        return slurm.SlurmCluster.from_dict(self.slurm).conf if self.slurm else None

    @property
    def mail_dir(self) -> Path:
        """Where the SMTP sink keeps what the `sim` site mailed (read with `sim.mailbox`)."""
        return self.dir / "mail"

    def save(self) -> None:
        data = {
            "dir": str(self.dir), "instruments": list(self.instruments), "slot": self.slot,
            "topic_prefix": self.topic_prefix, "ssh_port": self.ssh_port,
            "smtp_port": self.smtp_port, "broker_url": self.broker_url, "topics": self.topics,
            "procs": [p.to_dict() for p in self.procs], "karabo_dirs": self.karabo_dirs,
            "ns_inodes": self.ns_inodes, "timings": self.timings, "faults": self.faults,
            "slurm": self.slurm, "webservice": self.webservice,
        }
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(self.dir / "state.json")

    def record(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        self.save()
        return proc


TwinFactory = Callable[..., Twin]
"""The type of the tests' `twin_factory` fixture: ``make(instruments, karabo=..., ...)``."""


def load(twin_dir: Path) -> Twin:
    path = Path(twin_dir) / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TwinError(f"no twin recorded in {twin_dir} (no state.json)") from exc
    return Twin(
        dir=Path(data["dir"]), instruments=tuple(data["instruments"]), slot=data["slot"],
        topic_prefix=data["topic_prefix"], ssh_port=data["ssh_port"],
        smtp_port=data.get("smtp_port"), broker_url=data["broker_url"], topics=dict(data["topics"]),
        procs=[Proc.from_dict(p) for p in data["procs"]],
        karabo_dirs=list(data["karabo_dirs"]), ns_inodes=dict(data["ns_inodes"]),
        timings=dict(data["timings"]), faults=list(data.get("faults", [])),
        slurm=data.get("slurm"), webservice=data.get("webservice"),
    )


def _check_instruments(instruments: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(i.strip().upper() for i in instruments if i.strip()))
    unknown = [i for i in wanted if i not in INSTRUMENTS]
    if unknown or not wanted:
        raise TwinError(f"unknown instrument(s) {unknown or '(none given)'}; the twin models "
                        f"the MHz instruments {', '.join(INSTRUMENTS)}")
    return wanted


# ---- the calls into twin-karabo's modules -------------------------------------------------

_FALLBACK_HOSTS = {  # guidelines 11.1 (restart hosts, GPU) and 11.3 (calibration-DB hosts)
    "SPB": ("spb-br-sys-cal-[0-7]", "spbonc", "spb-br-sys-cal-[0-8]"),
    "FXE": ("sa1-br-sys-cal-[0-7]", "fxeonc", "fxe-br-sys-cal-[0-8]"),
    "SCS": ("scs-br-sys-cal-[0-7]", "scsonc", "scs-br-sys-cal-[0-8]"),
    "MID": ("mid-br-sys-cal-[0-7]", "midonc", "mid-br-sys-cal-[0-8]"),
}


def _karabo_available() -> bool:
    try:
        import sim.layout  # noqa: F401
    except ImportError:
        return False
    return True


def _host_specs(twin_dir: Path, instruments: Sequence[str]) -> list[hostmod.HostSpec]:
    specs: list[hostmod.HostSpec] = []
    if _karabo_available():
        from sim.layout import instrument_layout

        for instrument in instruments:
            for plan in instrument_layout(instrument, twin_dir=str(twin_dir)).hosts:
                specs.append(hostmod.HostSpec(plan.name, tuple(plan.accounts),
                                              tuple(plan.cuda)))
    else:
        from engine.hosts import expand_hosts

        for instrument in instruments:
            restart, account, caldb = _FALLBACK_HOSTS[instrument]
            specs += [hostmod.HostSpec(n, (account,), ("10.1",)) for n in expand_hosts(restart)]
            specs += [hostmod.HostSpec(n, ("xcal",)) for n in expand_hosts(caldb)]
    return specs + list(hostmod.FACILITY_HOSTS)


def _karabo_up(twin: Twin, hosts: dict[str, hostmod.TwinHost]) -> None:
    from sim import caldb_twin
    from sim.broker import Broker
    from sim.layout import install_instrument, instrument_layout

    port = procs.free_port()  # never 5672 by luck: two twins starting together would collide
    t0 = time.monotonic()
    broker = Broker.start(twin.dir, port=port)
    for pid in broker.pids:
        twin.record(Proc("broker", pid, procs.start_time(pid) or -1,
                         str(twin.dir / "broker" / "log" / "console.log")))
    twin.broker_url = broker.url
    twin.timings["broker_s"] = round(time.monotonic() - t0, 2)
    t0 = time.monotonic()
    caldb_twin.seed(twin.dir, twin.instruments)
    twin.timings["caldb_s"] = round(time.monotonic() - t0, 2)
    t0 = time.monotonic()
    expected: list[str] = []
    all_dirs: list[Path] = []
    for instrument in twin.instruments:
        layout = instrument_layout(instrument, twin_dir=str(twin.dir))
        dirs = install_instrument(layout, hosts, broker_url=broker.url,
                                  topic=twin.topics[instrument], twin_dir=twin.dir)
        twin.karabo_dirs += [str(d) for d in dirs]
        all_dirs += dirs
        expected += [f"{twin.topics[instrument]} {dev}" for dev in layout.device_ids]
    if twin.webservice and offline.HOST in hosts:  # the offline access points (12)
        from sim.karabo_env import install_karabo

        server = caldb_twin.max_web_server()
        topic = caldb_twin.max_web_topic(twin.topic_prefix)
        all_dirs.append(install_karabo(hosts[offline.HOST], offline.ACCOUNT,
                                       broker_url=broker.url, topic=topic, servers=[server],
                                       webserver=None))
        twin.karabo_dirs.append(str(all_dirs[-1]))
        expected += [f"{topic} {dev}" for dev in server.devices]
    twin.save()
    _start_installations(twin, all_dirs)
    twin.timings["karabo_s"] = round(time.monotonic() - t0, 2)
    t0 = time.monotonic()
    _wait_devices(twin, expected)
    twin.timings["devices_s"] = round(time.monotonic() - t0, 2)


def _start_installations(twin: Twin, dirs: Sequence[Path]) -> None:
    """start_karabo on every installation, several at a time (each waits for its svscan)."""
    from concurrent.futures import ThreadPoolExecutor

    from sim import karabo_env

    def one(karabo: Path) -> int | Exception:
        try:
            return karabo_env.start_karabo(karabo)
        except (TwinError, karabo_env.KaraboEnvError) as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, dirs))
    errors = []
    for karabo, result in zip(dirs, results, strict=True):
        if isinstance(result, Exception):
            errors.append(f"{karabo}: {result}")
            continue
        twin.procs.append(Proc(f"karabo:{karabo.parent.name}@{karabo.parents[2].name}", result,
                               procs.start_time(result) or -1,
                               str(karabo / "var" / "log" / "svscan" / "current")))
    twin.save()
    if errors:
        raise TwinError("Karabo did not start: " + "; ".join(errors))


_PROBE = """
import os, sys, time
from sim.devices.client import ensure_client  # with the fix for Karabo's start race
from karabo.middlelayer import getDevices
ensure_client(os.environ["KARABO_BROKER"], os.environ["KARABO_BROKER_TOPIC"])
want = set(sys.argv[2:])
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    missing = want - set(getDevices())
    if not missing:
        print("all devices answer"); sys.exit(0)
    time.sleep(0.5)
print("missing:", " ".join(sorted(missing))); sys.exit(1)
"""


def _wait_devices(twin: Twin, expected: Sequence[str], timeout: float = 90.0) -> None:
    """Wait until every device of the layout is in the topology of its instrument's topic.

    Asked through the Karabo client in a child process, so that the caller's process never
    starts Karabo's event loop.
    """
    import subprocess

    by_topic: dict[str, list[str]] = {}
    for item in expected:
        topic, device = item.split(" ", 1)
        by_topic.setdefault(topic, []).append(device)
    log = twin.dir / "logs" / "device-probe.log"
    client_home = twin.dir / "logs" / "probe"
    (client_home / "var" / "data").mkdir(parents=True, exist_ok=True)
    for topic, devices in by_topic.items():
        env = {**os.environ, "KARABO_BROKER": str(twin.broker_url), "KARABO": str(client_home),
               "KARABO_BROKER_TOPIC": topic, "HOME": str(client_home)}
        try:
            res = subprocess.run([sys.executable, "-c", _PROBE, str(timeout), *devices],
                                 env=env, capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired as exc:
            raise TwinError(f"the device probe for {topic} hung; see {log}") from exc
        with open(log, "a") as out:
            out.write(res.stdout + res.stderr)
        if res.returncode != 0 and "missing:" not in res.stdout:
            raise TwinError(f"the device probe for {topic} failed: "
                            f"{(res.stdout + res.stderr).strip()[-500:]} (see {log})")
        if res.returncode != 0:
            raise TwinError(f"devices of {topic} did not all answer within {timeout:g} s: "
                            f"{res.stdout.strip()[-500:]} (see {log} and {twin.dir}/hosts/"
                            "*/scratch/*/karabo/var/log)")


def _karabo_down(twin: Twin) -> list[str]:
    """Take every installation down (svc -dx, then by PID), all at once: each waits."""
    if not twin.karabo_dirs:
        return []
    from concurrent.futures import ThreadPoolExecutor

    from sim import karabo_env

    def one(karabo: str) -> str | None:
        try:
            karabo_env.stop_karabo(Path(karabo))
        except (TwinError, karabo_env.KaraboEnvError) as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(twin.karabo_dirs))) as pool:
        return [p for p in pool.map(one, twin.karabo_dirs) if p is not None]


def _apply_scenario(twin: Twin, scenario: Path) -> None:
    try:
        from sim.faults import apply_fault
        from sim.scenario import load_scenario
    except ImportError as exc:
        raise TwinError(f"scenarios are not available in this twin yet ({exc})") from exc
    loaded = load_scenario(scenario)
    if loaded.instrument not in twin.instruments:
        raise TwinError(f"{scenario}: instrument {loaded.instrument} is not running in this "
                        f"twin (running: {', '.join(twin.instruments)})")
    if loaded.online:
        from sim.operate import online

        online(twin, loaded.instrument)
    for fault in loaded.faults:
        apply_fault(twin, fault, loaded.instrument)
        twin.faults.append({"file": str(scenario), "instrument": loaded.instrument,
                            "fault": fault.model_dump(mode="json")})
        twin.save()


# ---- up, down, status, inject ---------------------------------------------------------------

def _recorded_alive(twin_dir: Path) -> list[Proc]:
    try:
        twin = load(twin_dir)
    except TwinError:
        return []
    return [p for p in twin.procs if procs.alive(p.pid, p.start)]


def up(twin_dir: Path | None, instruments: Iterable[str], scenario: Path | None = None, *,
       karabo: bool | None = None, topic_prefix: str | None = None, ssh_port: int = 22,
       webservice: bool = True) -> Twin:
    """Start a twin in `twin_dir`; `karabo=False` starts hosts and SSH only.

    `webservice=False` leaves out the webservice and its overview: the twin's hosts share this
    machine's process table, so a `ps` on one twin's max-exfl016 lists every twin's
    webservice.py, and a kill by pattern reaches them all (twins side by side in a test
    session run them in one twin only)."""
    t_start = time.monotonic()
    twin_dir = Path(twin_dir).resolve() if twin_dir else default_dir()
    wanted = _check_instruments(instruments)
    with_karabo = _karabo_available() if karabo is None else karabo
    if _recorded_alive(twin_dir):
        raise TwinError(f"a twin is already running in {twin_dir}; run `runbook sim down`")
    if scenario is not None:  # a mistake in the file should cost nothing to find
        from sim.scenario import load_scenario

        load_scenario(scenario)
    twin_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("state.json", "namespaces.json", "hosts.json", "ssh/gateway.json"):
        (twin_dir / stale).unlink(missing_ok=True)
    slot, lock_fd = hostmod.claim_slot()
    prefix = topic_prefix or f"t{secrets.token_hex(4)}_"
    twin = Twin(dir=twin_dir, instruments=wanted, slot=slot, topic_prefix=prefix,
                topics={i: f"{prefix}{i}" for i in wanted})
    twin.save()
    try:
        # The mail sink and Slurm start first and are waited for last: their start-up
        # overlaps the hosts'.
        shutil.rmtree(twin.mail_dir, ignore_errors=True)
        mailer = twin.record(procs.start(
            [sys.executable, "-m", "sim.smtp", "--dir", str(twin.mail_dir), "--port", "0"],
            name="smtp", log=twin_dir / "logs" / "smtp.log",
            env={**os.environ, "PYTHONPATH": str(REPO)}))
        t0 = time.monotonic()
        cluster = slurm.configure(twin_dir)
        twin.slurm = cluster.to_dict()
        slurm_procs = [twin.record(p) for p in slurm.start_daemons(cluster)]
        slurm_s = time.monotonic() - t0
        hosts = hostmod.allocate(twin_dir, slot, _host_specs(twin_dir, wanted))
        for host in hosts.values():
            hostmod.make_tree(host, twin_dir)
        hostmod.write_hosts(twin_dir, hosts)
        t0 = time.monotonic()
        namespaces = hostmod.start_namespaces(twin_dir, hosts)
        for name, proc in namespaces.items():
            twin.procs.append(proc)
            twin.ns_inodes[name] = hostmod.namespace_inode(proc.pid)
        twin.save()
        twin.timings["namespaces_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        slurm_procs.append(twin.record(slurm.start_maxwell_node(cluster, hosts, namespaces)))
        slurm_s += time.monotonic() - t0
        t0 = time.monotonic()
        service = offline.install(twin_dir, hosts, cluster, access_points=with_karabo)
        offline_procs: list[Proc] = []
        if webservice:
            twin.webservice = service.to_dict()
            offline_procs = [twin.record(p)
                             for p in offline.start_all(twin_dir, namespaces[offline.HOST])]
        offline_s = time.monotonic() - t0
        t0 = time.monotonic()
        keys = sshd.generate_keys(twin_dir)
        gateway = twin.record(procs.start(
            [sys.executable, "-m", "sim.sshd", "--twin", str(twin_dir), "--port", str(ssh_port),
             "--lock-fd", str(lock_fd)],
            name="sshd", log=twin_dir / "logs" / "sshd.log", pass_fds=[lock_fd],
            env={**os.environ, "PYTHONPATH": str(REPO)}))
        procs.wait_for(keys.gateway.exists, timeout=GATEWAY_READY_S, what="the SSH gateway",
                       proc=gateway)
        twin.ssh_port = int(sshd.read_gateway(twin_dir)["port"])  # type: ignore[call-overload]
        site.write_ssh_files(twin_dir, hosts, twin.ssh_port)
        twin.timings["sshd_s"] = round(time.monotonic() - t0, 2)
        procs.wait_for(lambda: mailbox.server_info(twin.mail_dir) is not None,
                       timeout=SMTP_READY_S, what="the SMTP sink", proc=mailer)
        twin.smtp_port = mailbox.server_port(twin.mail_dir)
        t0 = time.monotonic()
        slurm.wait_ready(cluster, slurm_procs)
        twin.timings["slurm_s"] = round(slurm_s + time.monotonic() - t0, 2)
        t0 = time.monotonic()
        if offline_procs:
            offline.wait_ready(service, offline_procs)
        twin.timings["webservice_s"] = round(offline_s + time.monotonic() - t0, 2)
        if with_karabo:
            _karabo_up(twin, hosts)
        site.write_site(twin_dir, twin.broker_url, twin.topics, smtp_port=twin.smtp_port)
        twin.timings["up_s"] = round(time.monotonic() - t_start, 2)
        twin.save()
        if scenario is not None:
            _apply_scenario(twin, scenario)
    except BaseException:
        down(twin_dir)
        raise
    finally:
        os.close(lock_fd)
    return twin


def down(twin_dir: Path | None = None) -> list[str]:
    """Stop everything the twin in `twin_dir` started; returns problems (empty when clean)."""
    twin_dir = Path(twin_dir).resolve() if twin_dir else default_dir()
    try:
        twin = load(twin_dir)
    except TwinError:
        return []
    t0 = time.monotonic()
    close_children(twin.topic_prefix)
    cluster = slurm.SlurmCluster.from_dict(twin.slurm) if twin.slurm else None
    problems = slurm.cancel_jobs(cluster, twin.procs) if cluster else []
    problems += _karabo_down(twin)
    holders = {p.pid for p in twin.procs if p.name.startswith("ns:")}
    others = [p for p in twin.procs if p.pid not in holders]
    try:
        procs.stop_all(list(reversed(others)))
    except TwinError as exc:
        problems.append(str(exc))
    if cluster:
        slurm.cleanup(cluster)
    inodes = set(twin.ns_inodes.values())
    leftovers = hostmod.namespace_members(inodes, holders | {os.getpid()})
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    try:
        procs.wait_for(lambda: not hostmod.namespace_members(inodes, holders | {os.getpid()}),
                       timeout=5, what="processes in the twin's hosts to end")
        procs.stop_all([p for p in twin.procs if p.pid in holders])
    except TwinError as exc:
        problems.append(str(exc))
    hosts = hostmod.load_hosts(twin_dir) if (twin_dir / "hosts.json").exists() else {}
    open_ports = [f"{h.address}:{port}" for h in hosts.values()
                  for port in (twin.ssh_port, 8080, 8008) if procs.port_open(h.address, port, 0.2)]
    if open_ports:
        problems.append(f"ports still open after down: {', '.join(open_ports)}")
    (twin_dir / "ssh" / "gateway.json").unlink(missing_ok=True)
    twin.timings["down_s"] = round(time.monotonic() - t0, 2)
    twin.procs = []
    twin.save()
    (twin_dir / "state.json").replace(twin_dir / "state.down.json")
    return problems


def status(twin_dir: Path | None = None) -> dict[str, object]:
    """Instruments, hosts (with SSH liveness), services (with liveness) of the twin."""
    twin_dir = Path(twin_dir).resolve() if twin_dir else default_dir()
    twin = load(twin_dir)
    hosts = twin.hosts
    return {
        "dir": str(twin.dir),
        "instruments": list(twin.instruments),
        "topics": twin.topics,
        "broker": twin.broker_url,
        "ssh_port": twin.ssh_port,
        "smtp_port": twin.smtp_port,
        "slurm_conf": str(twin.slurm_conf) if twin.slurm_conf else None,
        "hosts": [{"name": h.name, "address": h.address, "accounts": list(h.accounts),
                   "ssh": procs.port_open(h.address, twin.ssh_port, 0.3)}
                  for h in hosts.values()],
        "services": [{"name": p.name, "pid": p.pid, "alive": procs.alive(p.pid, p.start)}
                     for p in twin.procs],
        "faults": twin.faults,
        "timings": twin.timings,
    }


def inject(twin_dir: Path | None, scenario_file: Path) -> Twin:
    """Apply the faults of `scenario_file` to the running twin."""
    twin = load(Path(twin_dir).resolve() if twin_dir else default_dir())
    if not _recorded_alive(twin.dir):
        raise TwinError(f"the twin in {twin.dir} is not running; run `runbook sim up`")
    _apply_scenario(twin, Path(scenario_file))
    return twin
