"""Checks of guidelines 11.1 and 11.2 that cross two sources: what the RESTART or
CAL_MANAGER device says (Karabo) against what a restart host holds (its service folders,
run files and CUDA folders, over SSH), or one device against the devices it manages.

- `restart.new_servers` (11.1): services on a host that are neither calibration servers
  nor matched by the RESTART device's "Omit from restart";
- `restart.filter_coverage` (11.1): the host webserver's ``--filter`` must name every
  calibration server there that is not omitted from restart;
- `restart.webserver_template` (11.1): the RESTART device's webserver template must
  address the host's webserver (its ``{host}`` and the ``--port`` of its run file);
- `restart.gpu_servers` (11.2): the GPU servers' run files put CUDA on PATH, and the
  CUDA folders they name are installed on the host;
- `restart.pipeline_devices` (11.2): the devices a CAL_MANAGER manages, by state and
  status (e.g. splitters in ERROR "Received data before initialization").

Which services are "calibration servers" is a list of globs on the service folder names
(default ``*_cal_*``, the naming of the guidelines' webserver filter
``cppspb_spb_cal_1 pyspb_spb_cal_1 mlspb_spb_cal_1``).  A host that cannot be reached or
a device that does not answer gives `unknown` with the reason; the subject is the host
(``user@host``) or the device.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
import shlex
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.context import Context
from engine.registry import check
from engine.result import Result

from ._karabo_check import RunFile, filter_covers, parse_run_file

if TYPE_CHECKING:
    from ._ssh import CommandResult

__all__ = [
    "RestartHost", "TemplateCheck", "GpuServers", "PipelineDevices", "omitted",
    "new_servers", "filter_coverage", "webserver_template", "gpu_servers",
    "pipeline_devices",
]

_q = shlex.quote
_CALIBRATION = ["*_cal_*"]


def omitted(server: str, omit: str) -> bool:
    """Whether "Omit from restart" (comma-separated regular expressions, each matching a
    part of a server name, as the RESTART device reads it) spares `server`."""
    for expr in (e.strip() for e in omit.split(",")):
        if not expr:
            continue
        try:
            if re.search(expr, server):
                return True
        except re.error:
            if expr in server:
                return True
    return False


def _matches(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


class _Host(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    user: str = Field(min_length=1, description="the instrument account, e.g. spbonc")
    karabo_root: str | None = Field(default=None, description="default /scratch/<user>/karabo")

    def root(self) -> str:
        return self.karabo_root or f"/scratch/{self.user}/karabo"

    def who(self) -> str:
        return f"{self.user}@{self.host}"


def _remote(p: _Host, ctx: Context, command: str) -> CommandResult | Result:
    """Run `command` (already quoted) on the host; an unreachable host is an unknown."""
    from . import _ssh

    pool = _ssh.pool_for(ctx)
    try:
        return pool.run(p.host, p.user, command,
                        min(pool.settings.command_timeout, ctx.timeout * 0.9), read_only=True)
    except _ssh.SshError as exc:
        result = Result.unknown(str(exc))
        result.subject = p.who()
        return result


def _property(ctx: Context, device: str, prop: str) -> Any:
    from ._karabo import call_timeout, client_for

    return client_for(ctx).get(device, [prop], call_timeout(ctx)).get(prop)


def _verdict(p: _Host, problems: list[str], evidence: str, **observed: Any) -> Result:
    return Result(outcome="fail" if problems else "ok", reason="; ".join(problems),
                  evidence=evidence + ("\n" + "; ".join(problems) if problems else ""),
                  observed=observed, subject=p.who())


# ---- what a host holds: its services and one run file --------------------------------------

_NO_SERVICES = "@@runbook: no service folder@@"


def _host_files(p: _Host, ctx: Context, run_of: str | None
                ) -> tuple[list[str], str | None] | Result:
    """The service folders of the installation, and the run file of `run_of` (None if
    it cannot be read), in one remote command."""
    token = f"@@runbook-{secrets.token_hex(4)}@@"
    service = f"{p.root()}/var/service"
    parts = [f"d={_q(service)}",
             f'[ -d "$d" ] || {{ echo {_q(_NO_SERVICES)}; exit 0; }}',
             'ls -1 -- "$d"']
    if run_of is not None:
        parts += [f"echo {token}", f'cat -- "$d"/{_q(run_of)}/run 2>/dev/null || true']
    got = _remote(p, ctx, "; ".join(parts))
    if isinstance(got, Result):
        return got
    if got.exit != 0:
        return _unknown(p, f"listing {service} failed (exit {got.exit})", got.stderr)
    if _NO_SERVICES in got.stdout:
        return _unknown(p, f"no Karabo installation at {p.root()} ({service} is missing)")
    listing, _, run = got.stdout.partition(f"{token}\n")
    return listing.split(), (run if run.strip() else None)


def _unknown(p: _Host, reason: str, evidence: str = "") -> Result:
    result = Result.unknown(reason, evidence=evidence)
    result.subject = p.who()
    return result


# ---- restart.new_servers, restart.filter_coverage -------------------------------------------

class RestartHost(_Host):
    """A restart host against the RESTART device (11.1).

    `calibration`: globs naming the calibration servers, which the restart must restart;
    `omit_property`: the RESTART property holding "Omit from restart".
    """

    restart: str = Field(min_length=1, description="the RESTART device id")
    calibration: list[str] = Field(default_factory=lambda: list(_CALIBRATION), min_length=1)
    omit_property: str = "omitFromRestart"
    webserver: str = Field(default="webserver", description="the webserver's service folder")


@check("restart.new_servers")
def new_servers(p: RestartHost, ctx: Context) -> Result:
    """ok when every service on the host is a calibration server or omitted from restart.

    A new server that is neither stalls the restart (11.1): the webserver will not act on
    it, and the RESTART device retries it for ever.
    """
    omit = str(_property(ctx, p.restart, p.omit_property) or "")
    got = _host_files(p, ctx, None)
    if isinstance(got, Result):
        return got
    services, _ = got
    new = [s for s in services if not _matches(s, p.calibration) and not omitted(s, omit)]
    spared = [s for s in services if omitted(s, omit)]
    evidence = (f"{p.who()}$ ls {p.root()}/var/service\n" + "\n".join(services)
                + f"\n{p.restart}.{p.omit_property} = {omit!r}"
                + (f" (omits {', '.join(spared)})" if spared else ""))
    problems = [f"not omitted from restart: {', '.join(new)}"] if new else []
    return _verdict(p, problems, evidence, services=services, omit=omit, new=new)


@check("restart.filter_coverage")
def filter_coverage(p: RestartHost, ctx: Context) -> Result:
    """ok when the host webserver's ``--filter`` names every calibration server of the host
    that is not omitted from restart (11.1); no ``--filter`` acts on every server."""
    omit = str(_property(ctx, p.restart, p.omit_property) or "")
    got = _host_files(p, ctx, p.webserver)
    if isinstance(got, Result):
        return got
    services, text = got
    path = f"{p.root()}/var/service/{p.webserver}/run"
    if text is None:
        return _unknown(p, f"cannot read {path}")
    run = parse_run_file(text)
    wanted = [s for s in services
              if s != p.webserver and _matches(s, p.calibration) and not omitted(s, omit)]
    uncovered = [s for s in wanted if not filter_covers(run, s)]
    evidence = (f"{p.who()}$ cat {path}\n{text.rstrip()}\n"
                f"calibration servers not omitted ({p.restart}.{p.omit_property} = "
                f"{omit!r}): {', '.join(wanted) or 'none'}")
    problems = [f"--filter does not name {', '.join(uncovered)}"] if uncovered else []
    return _verdict(p, problems, evidence, filter=list(run.filter or []), wanted=wanted,
                    uncovered=uncovered)


# ---- restart.webserver_template -------------------------------------------------------------

class TemplateCheck(_Host):
    """The RESTART device's webserver template against the host's webserver (11.1)."""

    restart: str = Field(min_length=1, description="the RESTART device id")
    template_property: str = "webserverTemplate"
    webserver: str = Field(default="webserver", description="the webserver's service folder")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def template_problems(template: str, host: str, run: RunFile) -> list[str]:
    """How `template` (``http://{host}:8080``) misses the webserver of `run` on `host`."""
    if "{host}" not in template:
        return [f"the template {template!r} does not name {{host}}"]
    try:
        url = urlsplit(template.replace("{host}", host))
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
    except ValueError as exc:
        return [f"the template {template!r} is not a URL: {exc}"]
    problems = []
    if url.scheme not in _DEFAULT_PORTS:
        problems.append(f"the template's scheme is {url.scheme!r}, not http")
    if not (url.hostname or "").startswith(host.lower()):
        problems.append(f"the template addresses {url.hostname!r}, not {host}")
    if run.port is not None and port != run.port:
        problems.append(f"the template addresses port {port}, the webserver listens on "
                        f"--port {run.port}")
    return problems


@check("restart.webserver_template")
def webserver_template(p: TemplateCheck, ctx: Context) -> Result:
    """ok when the template, filled with this host, reaches the port of its webserver."""
    template = str(_property(ctx, p.restart, p.template_property) or "")
    got = _host_files(p, ctx, p.webserver)
    if isinstance(got, Result):
        return got
    _, text = got
    path = f"{p.root()}/var/service/{p.webserver}/run"
    if text is None:
        return _unknown(p, f"cannot read {path}")
    run = parse_run_file(text)
    if run.port is None:
        return _unknown(p, f"{path} names no --port", evidence=text)
    evidence = (f"{p.restart}.{p.template_property} = {template!r}\n"
                f"{p.who()}$ cat {path}\n{text.rstrip()}")
    return _verdict(p, template_problems(template, p.host, run), evidence,
                    template=template, port=run.port)


# ---- restart.gpu_servers --------------------------------------------------------------------

class GpuServers(_Host):
    """The run files of the host's GPU servers (11.2).

    `expect: cuda_on_path`: each puts a CUDA folder on PATH
    (``PATH=/usr/local/cuda-10.1/bin/:$PATH``); `cuda_installed`: each CUDA folder on
    those PATHs exists on the host (``ll /usr/local/cuda-10.1``), and so does `cuda_path`,
    the documented one, for a server without CUDA on PATH.
    """

    servers: list[str] = Field(default_factory=lambda: list(_CALIBRATION), min_length=1,
                               description="globs naming the GPU servers' service folders")
    expect: Literal["cuda_on_path", "cuda_installed"] = "cuda_on_path"
    cuda_path: str | None = Field(default=None, description="e.g. /usr/local/cuda-10.1")


def _cuda_root(folder: str) -> str:
    """/usr/local/cuda-10.1 for the PATH entry /usr/local/cuda-10.1/bin/."""
    return re.sub(r"/bin$", "", folder.rstrip("/"))


@check("restart.gpu_servers")
def gpu_servers(p: GpuServers, ctx: Context) -> Result:
    token = f"@@runbook-{secrets.token_hex(4)}@@"
    service = f"{p.root()}/var/service"
    command = "; ".join([
        f"d={_q(service)}",
        f'[ -d "$d" ] || {{ echo {_q(_NO_SERVICES)}; exit 0; }}',
        f'for s in $(ls -1 -- "$d"); do echo "{token} $s"; cat -- "$d/$s/run" '
        "2>/dev/null; done",
    ])
    got = _remote(p, ctx, command)
    if isinstance(got, Result):
        return got
    if _NO_SERVICES in got.stdout:
        return _unknown(p, f"no Karabo installation at {p.root()} ({service} is missing)")
    runs: dict[str, RunFile] = {}
    for chunk in got.stdout.split(f"{token} ")[1:]:
        name, _, text = chunk.partition("\n")
        if _matches(name.strip(), p.servers):
            runs[name.strip()] = parse_run_file(text)
    if not runs:
        return _unknown(p, f"no service under {service} matches {', '.join(p.servers)}")
    folders = sorted({d for r in runs.values() for d in r.cuda_dirs}
                     | ({p.cuda_path} if p.cuda_path else set()))
    exists = _existing(p, ctx, folders) if folders else {}
    if isinstance(exists, Result):
        return exists
    lines, problems = [f"{p.who()}: GPU servers ({', '.join(p.servers)}) under {service}"], []
    for name, run in runs.items():
        shown = ", ".join(f"{d} {'exists' if exists.get(d) else 'MISSING'}"
                          for d in run.cuda_dirs)
        lines.append(f"{name}/run: " + (f"PATH={':'.join(run.path)}: {shown}" if shown
                                        else "no CUDA on PATH"))
        if p.expect == "cuda_on_path" and not run.cuda_dirs:
            problems.append(f"{name} puts no CUDA on PATH")
        if p.expect == "cuda_installed":
            used = run.cuda_dirs or ((p.cuda_path,) if p.cuda_path else ())
            missing = sorted({_cuda_root(d) for d in used if not exists.get(d)})
            if missing:
                problems.append(f"{name} uses {', '.join(missing)}, not installed on "
                                f"{p.host}")
    if p.cuda_path:
        lines.append(f"ls -d {p.cuda_path}: "
                     + ("exists" if exists.get(p.cuda_path) else "MISSING"))
    evidence = "\n".join(lines)
    return _verdict(p, problems, evidence, servers=sorted(runs),
                    cuda={n: list(r.cuda_dirs) for n, r in runs.items()},
                    folders={d: bool(exists.get(d)) for d in folders})


def _existing(p: _Host, ctx: Context, folders: list[str]) -> dict[str, bool] | Result:
    command = "; ".join(f"[ -d {_q(d)} ] && printf 'dir %s\\n' {_q(d)} "
                        f"|| printf 'nodir %s\\n' {_q(d)}" for d in folders)
    got = _remote(p, ctx, command)
    if isinstance(got, Result):
        return got
    found = {}
    for line in got.stdout.splitlines():
        state, _, folder = line.partition(" ")
        found[folder] = state == "dir"
    return found


# ---- restart.pipeline_devices ---------------------------------------------------------------

class PipelineDevices(BaseModel):
    """The devices a CAL_MANAGER manages (its `lists` properties), by state and status.

    fail when a device is in none of `states`, or its status matches `status_matches`
    (e.g. ``Received data before initialization``); a device that does not answer counts
    against `states` (it cannot have initialised), not against `status_matches`.
    """

    model_config = ConfigDict(extra="forbid")

    manager: str = Field(min_length=1)
    lists: list[str] = Field(default_factory=lambda: ["splitters", "corrections",
                                                      "gainAdjusts", "appenders"],
                             min_length=1)
    states: list[str] | None = Field(default=None, description="e.g. [ON, ACTIVE]")
    status_matches: str | None = Field(default=None, description="regular expression")

    @model_validator(mode="after")
    def _something(self) -> PipelineDevices:
        if self.states is None and self.status_matches is None:
            raise ValueError("give states, status_matches or both")
        if self.status_matches is not None:
            try:
                re.compile(self.status_matches)
            except re.error as exc:
                raise ValueError(f"bad regular expression {self.status_matches!r}: "
                                 f"{exc}") from exc
        return self


@check("restart.pipeline_devices")
def pipeline_devices(p: PipelineDevices, ctx: Context) -> Result:
    from engine.errors import RunbookError

    from ._karabo import call_timeout, client_for

    client, timeout = client_for(ctx), call_timeout(ctx)
    listed = client.get(p.manager, p.lists, timeout)
    devices = [str(d) for key in p.lists for d in (listed.get(key) or [])]
    if not devices:
        return Result.unknown(f"{p.manager} lists no devices in {', '.join(p.lists)}")
    futures = {d: client.submit("get", timeout, device=d, keys=["state", "status"])
               for d in devices}
    seen: dict[str, dict[str, str]] = {}
    away: dict[str, str] = {}
    for device, fut in futures.items():
        try:
            got = fut.result(timeout=timeout + 5)
            seen[device] = {"state": str(got.get("state")), "status": str(got.get("status"))}
        except (RunbookError, TimeoutError) as exc:
            away[device] = str(exc) or "no answer"
    bad = {d: s for d, s in seen.items()
           if (p.states is not None and s["state"] not in p.states)
           or (p.status_matches is not None and re.search(p.status_matches, s["status"]))}
    away_bad = away if p.states is not None else {}
    lines = [f"{d}: {s['state']} ({s['status']})" for d, s in bad.items()]
    lines += [f"{d}: does not answer ({r})" for d, r in away_bad.items()]
    observed: dict[str, Any] = {"bad": sorted([*bad, *away_bad]), "states": seen,
                                "unreachable": away}
    want = " and ".join(([f"state in {p.states}"] if p.states else [])
                        + ([f"status not matching {p.status_matches!r}"]
                           if p.status_matches else []))
    head = f"{len(bad) + len(away_bad)} of {len(devices)} devices of {p.manager} miss: {want}"
    if bad or away_bad:
        result = Result.fail(head + "\n" + "\n".join(lines), **observed)
    elif away and len(away) == len(devices):
        result = Result.unknown(f"none of the {len(devices)} devices answers", **observed)
    else:
        result = Result.ok(f"all {len(seen)} answering devices of {p.manager} meet: {want}",
                           **observed)
    result.subject = p.manager
    return result
