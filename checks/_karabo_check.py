"""Parsers for what the ssh.* checks read on Karabo hosts: `karabo-check` lines and
daemontools run files.  Pure functions, so they are tested from tables without SSH.

`karabo-check` prints one `svstat` line per service of `$KARABO/var/service` (coloured
when it thinks it writes to a terminal).  Karabo's daemontools know these shapes::

    webserver: up (pid 1249) 2475094 seconds, normally down, running
    pyspb_spb_cal_1: down 12 seconds, normally up, want up, stopped
    mlspb_spb_cal_2: supervise not running
    gone: unable to chdir: file does not exist

A run file is the script that `supervise` executes (guidelines 11.1, 11.2)::

    exec envdir ../../environment env \\
    PATH=/usr/local/cuda-10.1/bin/:$PATH \\
    karabo-webserver serverId=webserver \\
    --port 8080 --filter cppspb_spb_cal_1 pyspb_spb_cal_1 mlspb_spb_cal_
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field

__all__ = ["ServerStatus", "parse_karabo_check", "match_servers", "RunFile", "parse_run_file",
           "service_name", "filter_covers"]

_STATES = ("stopped", "starting", "started", "running", "stopping", "failed", "orphanage",
           "status unknown")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(
    r"^(?P<name>[^:\s][^:]*):\s+(?P<status>up|down)\s+"
    r"(?:\(pid (?P<pid>\d+)\)\s+)?(?P<seconds>\d+) seconds(?P<rest>.*)$")
_PROBLEM = re.compile(
    r"^(?P<name>[^:\s][^:]*):\s+(?P<problem>supervise not running|unable to .*)$")


@dataclass(frozen=True)
class ServerStatus:
    """One service as `karabo-check` reports it."""

    name: str
    up: bool
    pid: int | None = None
    seconds: int | None = None
    normally: str | None = None      # "down" or "up": what the service does at boot
    want: str | None = None          # "up" or "down": a pending svc request
    paused: bool = False
    state: str | None = None         # Karabo's run state: running, stopped, failed, ...
    problem: str | None = None       # "supervise not running", "unable to ..."
    line: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"up": self.up, "pid": self.pid, "seconds": self.seconds,
                "normally": self.normally, "want": self.want, "paused": self.paused,
                "state": self.state, "problem": self.problem}


def parse_karabo_check(text: str) -> tuple[dict[str, ServerStatus], list[str]]:
    """Services by name, and the lines that were not service status lines."""
    servers: dict[str, ServerStatus] = {}
    other: list[str] = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        if not line:
            continue
        m = _LINE.match(line)
        if m:
            servers[m["name"]] = _status(m, line)
            continue
        p = _PROBLEM.match(line)
        if p:
            servers[p["name"]] = ServerStatus(name=p["name"], up=False, problem=p["problem"],
                                              line=line)
        else:
            other.append(line)
    return servers, other


def _status(m: re.Match[str], line: str) -> ServerStatus:
    normally = want = state = None
    paused = False
    for word in (w.strip() for w in m["rest"].split(",")):
        if word.startswith("normally "):
            normally = word.removeprefix("normally ")
        elif word.startswith("want "):
            want = word.removeprefix("want ")
        elif word == "paused":
            paused = True
        elif word == "once":
            want = "once"
        elif word in _STATES:
            state = word
    return ServerStatus(
        name=m["name"], up=m["status"] == "up", pid=int(m["pid"]) if m["pid"] else None,
        seconds=int(m["seconds"]), normally=normally, want=want, paused=paused, state=state,
        line=line)


def match_servers(servers: dict[str, ServerStatus], pattern: str) -> list[ServerStatus]:
    """Services named `pattern`, or matching it as a shell glob (`*_cal_*`).

    A server id such as ``pySPB/spb_cal_1`` is accepted for its service folder
    ``pyspb_spb_cal_1``, as karabo-check's own arguments are.
    """
    if pattern in servers:
        return [servers[pattern]]
    folder = service_name(pattern)
    if folder in servers:
        return [servers[folder]]
    return [s for name, s in servers.items()
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, folder)]


def service_name(server: str) -> str:
    """The service folder of a server id, as Karabo's scripts derive it."""
    return server.replace("/", "_").lower()


@dataclass(frozen=True)
class RunFile:
    """A daemontools run file of a Karabo service, as far as the checks need it."""

    program: str | None                  # karabo-webserver, karabo-middlelayerserver, ...
    server_id: str | None
    port: int | None
    filter: tuple[str, ...] | None       # None: no --filter (the webserver serves all)
    path: tuple[str, ...]                # PATH= entries, in order, without "$PATH"
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def cuda_dirs(self) -> tuple[str, ...]:
        return tuple(p for p in self.path if "cuda" in p.lower())


_ENV_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _command_words(text: str) -> list[str]:
    """The words of the `exec ...` line that starts the service, continuations joined."""
    joined = re.sub(r"\\\r?\n", " ", text)
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped.startswith("exec ") and not re.match(r"^exec\s+\d?>&", stripped):
            try:
                words = shlex.split(stripped, comments=True)
            except ValueError:
                return stripped.split()
            if len(words) > 1:
                return words[1:]
    return []


def parse_run_file(text: str) -> RunFile:
    """Program, serverId, --port, --filter and the PATH of a run file."""
    words = _command_words(text)
    problems: list[str] = []
    if not words:
        return RunFile(None, None, None, None, (), problems=("no exec line",))
    i = 0
    while i < len(words) and words[i] in ("envdir", "env", "setuidgid", "envuidgid"):
        i += 2 if words[i] in ("envdir", "setuidgid", "envuidgid") else 1
    env: dict[str, str] = {}
    while i < len(words) and _ENV_WORD.match(words[i]):
        key, _, value = words[i].partition("=")
        env[key] = value
        i += 1
    program = words[i] if i < len(words) else None
    args = tuple(words[i + 1:])
    server_id = port = None
    flt: list[str] | None = None
    j = 0
    while j < len(args):
        arg = args[j]
        if arg.startswith("serverId="):
            server_id = arg.removeprefix("serverId=")
        elif arg == "--port" or arg.startswith("--port="):
            value = arg.partition("=")[2] if "=" in arg else (
                args[j + 1] if j + 1 < len(args) else "")
            j += 0 if "=" in arg else 1
            try:
                port = int(value)
            except ValueError:
                problems.append(f"--port {value!r} is not a number")
        elif arg == "--filter":
            flt = []
            while j + 1 < len(args) and not args[j + 1].startswith("-"):
                flt.append(args[j + 1])
                j += 1
        j += 1
    path = tuple(p for p in env.get("PATH", "").split(":") if p and p != "$PATH")
    return RunFile(program, server_id, port, tuple(flt) if flt is not None else None, path,
                   env, args, tuple(problems))


def filter_covers(run: RunFile, server: str) -> bool:
    """Whether a webserver with this run file acts on `server` (a service or server id).

    Karabo's webserver keeps the services whose folder name is in `--filter` exactly; with
    no filter it acts on every service of the installation.
    """
    if run.filter is None or not run.filter:
        return True
    return server in run.filter or service_name(server) in run.filter
