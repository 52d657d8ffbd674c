"""The twin's hosts: one loopback address each, a directory tree each, a mount namespace each.

A facility host is modelled by three things.  Its *address* (127.0.<slot>.<n>) lets every
service keep its facility port (sshd on 22, karabo-webserver on 8080) next to the same
service of another host.  Its *tree* (``<twin>/hosts/<name>/``) holds what differs between
hosts: ``scratch/<account>`` (the Karabo installations), ``home/<account>``, ``usr/local``
(CUDA versions).  Its *namespace* is a long-lived ``unshare -m -u`` process in which that
tree is bind-mounted at the facility paths (``/scratch``, ``/home``, ``/gpfs``,
``/usr/local``) and the hostname is the facility name, so that commands written for the
facility run verbatim; a command enters it with ``nsenter`` (see `enter_argv`).

The slot (third byte) is claimed with an flock under /tmp, so twins started side by side
(a test session and a fresh twin for one test) never share an address.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sim import procs
from sim._reachable import unblock_lines
from sim.procs import Proc, TwinError

__all__ = [
    "HostSpec",
    "TwinHost",
    "OPERATOR",
    "FACILITY_HOSTS",
    "SLOT_LOCK_DIR",
    "claim_slot",
    "allocate",
    "write_hosts",
    "load_hosts",
    "resolve",
    "make_tree",
    "ensure_mountpoints",
    "start_namespace",
    "start_namespaces",
    "load_namespaces",
    "enter_argv",
    "namespace_inode",
    "namespace_members",
    "login_env",
]

OPERATOR = "operator"
"""The personal account that the guidelines write as ``<username>`` (exflgateway, exflonc)."""

SLOT_LOCK_DIR = Path("/tmp/runbook-twin-slots")
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
MOUNTPOINTS = ("/scratch", "/gpfs")


@dataclass(frozen=True)
class HostSpec:
    """What a layout asks for: a facility host name, its accounts, its CUDA versions."""

    name: str
    accounts: tuple[str, ...]
    cuda: tuple[str, ...] = ()


FACILITY_HOSTS: tuple[HostSpec, ...] = (
    HostSpec("exflgateway", (OPERATOR,)),
    HostSpec("max-exfl016", ("xcal",)),
    HostSpec("exflonc10", (OPERATOR,)),
    HostSpec("exflonc17", (OPERATOR,)),
    HostSpec("exflonc14", (OPERATOR,)),
)
"""Hosts every twin has, whatever the instruments (guidelines 1, 4, 10.1, 12)."""


@dataclass(frozen=True)
class TwinHost:
    """One facility host of a running twin; get them from `allocate` or `load_hosts`."""

    name: str
    address: str
    root: Path
    accounts: tuple[str, ...]
    cuda: tuple[str, ...] = field(default=())

    def home(self, account: str) -> Path:
        return self.root / "home" / account

    def scratch(self, account: str) -> Path:
        return self.root / "scratch" / account


def claim_slot(lock_dir: Path = SLOT_LOCK_DIR) -> tuple[int, int]:
    """Lock a free slot (1..254); returns (slot, fd). The slot is held while fd is open.

    Pass the fd to a long-lived process (the SSH gateway) to keep the claim for the
    twin's lifetime; closing every copy releases it.  The free slot used longest ago is
    taken, so a twin that has just gone down is not followed at once by another on the
    same addresses (whose ports its `down` is still checking).
    """
    lock_dir.mkdir(parents=True, exist_ok=True)

    def last_used(slot: int) -> float:
        try:
            return (lock_dir / f"slot-{slot}.lock").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    for slot in sorted(range(1, 255), key=last_used):
        fd = os.open(lock_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.utime(fd)
        return slot, fd
    raise TwinError(f"all 254 twin address slots are taken (locks in {lock_dir})")


def _merge(specs: Iterable[HostSpec]) -> list[HostSpec]:
    merged: dict[str, HostSpec] = {}
    for spec in specs:
        if not spec.name or "/" in spec.name or spec.name.startswith("."):
            raise TwinError(f"invalid host name {spec.name!r}")
        old = merged.get(spec.name)
        if old is None:
            merged[spec.name] = HostSpec(spec.name, tuple(dict.fromkeys(spec.accounts)),
                                         tuple(dict.fromkeys(spec.cuda)))
        else:
            merged[spec.name] = HostSpec(
                spec.name,
                tuple(dict.fromkeys(old.accounts + spec.accounts)),
                tuple(dict.fromkeys(old.cuda + spec.cuda)),
            )
    return list(merged.values())


def allocate(twin_dir: Path, slot: int, specs: Iterable[HostSpec]) -> dict[str, TwinHost]:
    """Give each host (merged by name, in first-seen order) 127.0.<slot>.<n>, n from 1."""
    if not 1 <= slot <= 254:
        raise TwinError(f"slot {slot} is outside 1..254")
    merged = _merge(specs)
    if len(merged) > 254:
        raise TwinError(f"{len(merged)} hosts do not fit one slot (254 addresses)")
    return {
        spec.name: TwinHost(
            name=spec.name,
            address=f"127.0.{slot}.{n}",
            root=twin_dir / "hosts" / spec.name,
            accounts=spec.accounts,
            cuda=spec.cuda,
        )
        for n, spec in enumerate(merged, start=1)
    }


def write_hosts(twin_dir: Path, hosts: Mapping[str, TwinHost]) -> Path:
    """Write hosts.json, the twin's DNS: {name: address}."""
    path = twin_dir / "hosts.json"
    path.write_text(json.dumps({h.name: h.address for h in hosts.values()}, indent=1) + "\n")
    return path


def _listing(path: Path, prefix: str = "") -> tuple[str, ...]:
    if not path.is_dir():
        return ()
    return tuple(sorted(p.name[len(prefix):] for p in path.iterdir()
                        if p.is_dir() and not p.is_symlink() and p.name.startswith(prefix)))


def load_hosts(twin_dir: Path) -> dict[str, TwinHost]:
    """The hosts of the twin in `twin_dir`; accounts and CUDA versions are read off the trees."""
    path = twin_dir / "hosts.json"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TwinError(f"no twin in {twin_dir} (missing {path}); run `runbook sim up`") from exc
    hosts = {}
    for name, address in table.items():
        root = twin_dir / "hosts" / name
        hosts[name] = TwinHost(name=name, address=address, root=root,
                               accounts=_listing(root / "home"),
                               cuda=_listing(root / "usr" / "local", "cuda-"))
    return hosts


_dns_cache: dict[str, tuple[float, dict[str, str]]] = {}


def resolve(name: str) -> str:
    """Facility host name -> twin address, through the hosts.json named by $RUNBOOK_TWIN_HOSTS.

    Addresses pass through unchanged, so callers may resolve whatever they were given.
    """
    if name.replace(".", "").isdigit():
        return name
    table_path = os.environ.get("RUNBOOK_TWIN_HOSTS")
    if not table_path:
        raise TwinError(f"cannot resolve {name!r}: RUNBOOK_TWIN_HOSTS is not set")
    try:
        mtime = os.stat(table_path).st_mtime
    except FileNotFoundError as exc:
        raise TwinError(f"cannot resolve {name!r}: {table_path} does not exist") from exc
    cached = _dns_cache.get(table_path)
    if cached is None or cached[0] != mtime:
        cached = (mtime, json.loads(Path(table_path).read_text()))
        _dns_cache[table_path] = cached
    try:
        return cached[1][name]
    except KeyError:
        raise TwinError(f"unknown host {name!r} (not in {table_path})") from None


BASHRC = """\
# .bashrc of {account} on {host} (facility twin)
shopt -s expand_aliases
alias ll='ls -l'
"""

BASH_PROFILE = """\
# .bash_profile of {account} on {host} (facility twin)
[ -f ~/.bashrc ] && . ~/.bashrc
"""


def _usr_local_entries() -> list[os.DirEntry[str]]:
    return [e for e in os.scandir("/usr/local") if not e.name.startswith("cuda")]


def make_tree(host: TwinHost, twin_dir: Path) -> None:
    """Create the host's tree: scratch, home (with dot files), usr/local (with its CUDA)."""
    for account in host.accounts:
        host.scratch(account).mkdir(parents=True, exist_ok=True)
        home = host.home(account)
        home.mkdir(parents=True, exist_ok=True)
        for dot, text in ((".bashrc", BASHRC), (".bash_profile", BASH_PROFILE)):
            if not (home / dot).exists():
                (home / dot).write_text(text.format(account=account, host=host.name))
    local = host.root / "usr" / "local"
    local.mkdir(parents=True, exist_ok=True)
    for entry in _usr_local_entries():
        target = local / entry.name
        if entry.is_symlink():
            if not target.is_symlink():
                target.symlink_to(os.readlink(entry.path))
        elif entry.is_dir():
            target.mkdir(exist_ok=True)
    for version in host.cuda:
        cuda = local / f"cuda-{version}"
        for sub in ("bin", "lib64", "include"):
            (cuda / sub).mkdir(parents=True, exist_ok=True)
        (cuda / "version.txt").write_text(f"CUDA Version {version}\n")
    (host.root / "var" / "log").mkdir(parents=True, exist_ok=True)
    # The report tree of section 8, where dark characterization reports go.
    (twin_dir / "gpfs" / "exfel" / "d" / "cal" / "caldb_store" / "xfel" / "reports").mkdir(
        parents=True, exist_ok=True)


def ensure_mountpoints() -> None:
    """Create the empty facility mount points (/scratch, /gpfs) on this machine once."""
    for point in MOUNTPOINTS:
        try:
            os.makedirs(point, exist_ok=True)
        except OSError as exc:
            raise TwinError(f"cannot create mount point {point}: {exc} (the twin runs as root)"
                            ) from exc


def _namespace_script(host: TwinHost, twin_dir: Path) -> str:
    q = shlex.quote
    lines = [
        "set -e",
        f"mount --bind {q(str(host.root / 'scratch'))} /scratch",
        f"mount --bind {q(str(host.root / 'home'))} /home",
        f"mount --bind {q(str(twin_dir / 'gpfs'))} /gpfs",
    ]
    local = host.root / "usr" / "local"
    for entry in _usr_local_entries():
        if entry.is_dir() and not entry.is_symlink():
            lines.append(f"mount --bind {q(entry.path)} {q(str(local / entry.name))}")
    lines += [
        f"mount --rbind {q(str(local))} /usr/local",
        *unblock_lines(),
        f"hostname {q(host.name)}",
        "exec sleep infinity",
    ]
    return "\n".join(lines)


def start_namespace(host: TwinHost, twin_dir: Path) -> Proc:
    """Start the process that holds the host's mount and UTS namespace (not yet ready)."""
    (host.root / "scratch").mkdir(parents=True, exist_ok=True)
    (host.root / "home").mkdir(parents=True, exist_ok=True)
    argv = ["unshare", "--mount", "--uts", "--propagation", "private", "--",
            "/bin/bash", "-c", _namespace_script(host, twin_dir)]
    return procs.start(argv, name=f"ns:{host.name}",
                       log=twin_dir / "logs" / "namespaces" / f"{host.name}.log")


def _ready(proc: Proc) -> bool:
    try:
        return Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep"
    except FileNotFoundError:
        return False


def start_namespaces(twin_dir: Path, hosts: Mapping[str, TwinHost],
                     timeout: float = 30.0) -> dict[str, Proc]:
    """Start every host's namespace, wait until all are set up, record them."""
    ensure_mountpoints()
    started: dict[str, Proc] = {}
    try:
        for host in hosts.values():
            started[host.name] = start_namespace(host, twin_dir)
        for proc in started.values():
            procs.wait_for(lambda p=proc: _ready(p), timeout=timeout,  # type: ignore[misc]
                           what=f"namespace {proc.name}", proc=proc)
    except TwinError:
        procs.stop_all(list(started.values()))
        raise
    # Record the start time now that the process is the final `sleep` (same PID).
    ready = {name: Proc(p.name, p.pid, procs.start_time(p.pid) or p.start, p.log)
             for name, p in started.items()}
    (twin_dir / "namespaces.json").write_text(
        json.dumps({n: p.to_dict() for n, p in ready.items()}, indent=1) + "\n")
    return ready


def load_namespaces(twin_dir: Path) -> dict[str, Proc]:
    try:
        data = json.loads((twin_dir / "namespaces.json").read_text())
    except FileNotFoundError as exc:
        raise TwinError(f"no host namespaces recorded in {twin_dir}") from exc
    return {name: Proc.from_dict(rec) for name, rec in data.items()}


def namespace_inode(pid: int) -> int:
    """The mount namespace of `pid`, as the inode number that identifies it."""
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino


def namespace_members(inodes: set[int], exclude: set[int]) -> list[int]:
    """Processes inside any of these mount namespaces (what runs "on" those hosts)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/mnt").st_ino in inodes:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def enter_argv(holder: Proc, cwd: str = "/") -> list[str]:
    """Argument prefix that runs a program inside the host namespace held by `holder`."""
    # nsenter's own --wd resolves the path before it enters; env -C resolves it inside.
    return ["nsenter", f"--target={holder.pid}", "--mount", "--uts", "--",
            "env", "-C", cwd, "--"]


def login_env(host: TwinHost, account: str,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that sshd gives a login of `account` on `host`."""
    env = {
        "USER": account,
        "LOGNAME": account,
        "HOME": f"/home/{account}",
        "SHELL": "/bin/bash",
        "PATH": LOGIN_PATH,
        "HOSTNAME": host.name,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "MAIL": f"/var/spool/mail/{account}",
    }
    if extra:
        env.update(extra)
    return env
