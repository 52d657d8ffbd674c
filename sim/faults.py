"""Apply a scenario's faults to a running twin, as causes.

A fault does what happens at the facility: it edits a host's files (run files, the
webserver filter), stops or starts services with daemontools, starts an extra or old
installation, or sets device properties through Karabo (an operator's action or a
hardware fault's effect).  Symptoms then follow from the devices' own behaviour; nothing
here sets a state.  ``apply_fault(twin, fault, instrument=None)``; the twin is anything with
``dir``, ``hosts``, ``topics``, ``broker_url`` and ``karabo_dirs`` (``sim.twin.Twin`` or
``sim.layout.KaraboSide``).  Each kind is documented in docs/scenarios.md.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from engine.errors import RunbookError
from sim import _faults_caldb as caldb_faults
from sim import _faults_offline as offline_faults
from sim import karabo_env as kenv
from sim.devices.client import run_actions
from sim.layout import MODULES, InstrumentLayout, instrument_layout
from sim.scenario import Fault, Scenario

__all__ = ["apply_fault", "apply_scenario", "FaultError", "TwinLike"]


INIT_TIMEOUT_S = 30.0  # CAL_MANAGER's own default (tests shorten it to see 11.2 sooner)


class FaultError(RunbookError):
    """A fault could not be applied (unknown host, module, or a step that failed)."""


class TwinLike(Protocol):
    dir: Any
    karabo_dirs: Any

    @property
    def hosts(self) -> dict[str, Any]: ...
    @property
    def topics(self) -> dict[str, str]: ...
    @property
    def broker_url(self) -> Any: ...


def apply_scenario(twin: TwinLike, scenario: Scenario) -> None:
    for fault in scenario.faults:
        apply_fault(twin, fault, scenario.instrument)


def apply_fault(twin: TwinLike, fault: Fault, instrument: str | None = None) -> None:
    """Make ``fault`` happen in ``twin`` (for ``instrument``, or the fault's own)."""
    name = (getattr(fault, "instrument", None) or instrument or _only(twin)).upper()
    if name not in twin.topics:
        raise FaultError(f"{fault.kind}: instrument {name} is not running in this twin "
                         f"(running: {', '.join(sorted(twin.topics))})")
    ctx = _Ctx(twin, name, instrument_layout(name, twin_dir=str(Path(twin.dir).resolve())))
    handler = _HANDLERS.get(fault.kind)
    if handler is None:
        raise FaultError(f"no handler for fault kind {fault.kind!r}")
    handler(ctx, fault)


def _only(twin: TwinLike) -> str:
    if len(twin.topics) != 1:
        raise FaultError("several instruments run in this twin: name the fault's instrument")
    return next(iter(twin.topics))


class _Ctx:
    def __init__(self, twin: TwinLike, instrument: str, layout: InstrumentLayout) -> None:
        self.twin, self.instrument, self.layout = twin, instrument, layout
        self.ids = layout.devices
        self.low = instrument.lower()

    def karabo(self, host: str, account: str | None = None) -> Path:
        hosts = self.twin.hosts
        if host not in hosts:
            raise FaultError(f"unknown host {host!r} for {self.instrument}")
        return kenv.karabo_dir_for(hosts[host], account or self.layout.instrument.account)

    def restart_host(self, host: str) -> int:
        if host not in self.layout.restart_hosts:
            raise FaultError(f"{host} is not a restart host of {self.instrument} "
                             f"({', '.join(self.layout.restart_hosts)})")
        return self.layout.restart_hosts.index(host)

    def act(self, *actions: dict[str, Any]) -> list[Any]:
        return run_actions(str(self.twin.broker_url), self.twin.topics[self.instrument],
                           list(actions))

    def get(self, device: str, *keys: str) -> dict[str, Any]:
        return dict(self.act({"device": device, "get": list(keys)})[0])


def _wait(what: str, predicate: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise FaultError(f"timed out after {timeout:g} s waiting for {what}")


def _svok(karabo: Path, service: str) -> bool:
    return kenv.supervised(karabo, service)


def _new_server(ctx: _Ctx, f: Any) -> None:
    i = ctx.restart_host(f.host)
    karabo = ctx.karabo(f.host)
    name = f.name or f"ml{ctx.low}_{ctx.low}_new_{i}"
    spec = kenv.ServerSpec(name=name, server_id=f"ml{ctx.instrument}/{name.split('_', 1)[1]}",
                           device_classes=("TwinAppender",), host_name=f.host)
    kenv.add_server(karabo, spec)
    _wait(f"svscan to pick up {name}", lambda: _svok(karabo, name))  # svscan rescans every 5 s
    kenv.svc(karabo, "-u", name)


def _webserver_down(ctx: _Ctx, f: Any) -> None:
    ctx.restart_host(f.host)
    kenv.svc(ctx.karabo(f.host), "-d", "webserver")


def _webserver_filter(ctx: _Ctx, f: Any) -> None:
    i = ctx.restart_host(f.host)
    plan = ctx.layout.install(f.host, ctx.layout.instrument.account)
    # Default: the guidelines' own example, whose last entry is cut short (11.1).
    flt = f.filter if f.filter is not None else [f"cpp{ctx.low}_{ctx.low}_cal_{i}",
                                                  f"py{ctx.low}_{ctx.low}_cal_{i}",
                                                  f"ml{ctx.low}_{ctx.low}_cal_"]
    assert plan.webserver is not None
    karabo = ctx.karabo(f.host)
    kenv.write_run_file(karabo, "webserver",
                        kenv.webserver_run_file(replace(plan.webserver, filter=tuple(flt))))
    kenv.svc(karabo, "-t", "webserver")


def _bad_template(ctx: _Ctx, f: Any) -> None:
    ctx.act({"device": ctx.ids["restart"], "set": {"webserverTemplate": f.template}})


def _detector_pushing(ctx: _Ctx, f: Any) -> None:
    det = ctx.ids["detector"]
    if f.during == "constants":
        ctx.act({"device": det, "set": {"startSendingWhen": "Loading constants"}})
        return
    state = ctx.get(det, "state")["state"]
    if state != "ACQUIRING":
        ctx.act({"device": det, "call": "start"})


def _karabo_not_started(ctx: _Ctx, f: Any) -> None:
    # After a reboot svscan runs again, but services are "normally down": nobody ran
    # karabo-start, so neither the servers nor the webserver came up.
    ctx.restart_host(f.host)
    karabo = ctx.karabo(f.host)
    services = kenv.services_of(karabo)
    kenv.svc(karabo, "-d", *services)
    _wait(f"the services of {karabo} to stop",
          lambda: not any(kenv.service_up(karabo, s) for s in services), timeout=30.0)


def _cuda_missing(ctx: _Ctx, f: Any) -> None:
    ctx.restart_host(f.host)
    plan = ctx.layout.install(f.host, ctx.layout.instrument.account)
    karabo = ctx.karabo(f.host)
    for spec in plan.servers:
        text = kenv.server_run_file(replace(spec, cuda=f.cuda_version, host_name=f.host))
        kenv.write_run_file(karabo, spec.name, text)
        kenv.svc(karabo, "-t", spec.name)


def _old_installation(ctx: _Ctx, f: Any) -> None:
    host = f.host or ctx.layout.online_cluster
    hosts = ctx.twin.hosts
    if host not in hosts:
        raise FaultError(f"unknown host {host!r}")
    devices: dict[str, dict[str, Any]] = {}
    current: dict[Path, set[str]] = {}
    for m in f.modules:
        corr = ctx.ids["corrections"][m]
        plan, spec = ctx.layout.server_of(corr)
        devices[corr] = dict(spec.devices[corr])
        current.setdefault(ctx.karabo(plan.host), set()).add(spec.name)
    # The host came back from a reboot first: its old installation autostarts and takes
    # the ids while the current servers are down; when these come up, the ids are in use.
    for karabo, names in current.items():
        kenv.svc(karabo, "-d", *names)
    _wait("the current correction servers to stop",
          lambda: not any(kenv.service_up(k, n) for k, ns in current.items() for n in ns))
    spec = kenv.ServerSpec(name=f"ml{ctx.low}_{ctx.low}_cal_old",
                           server_id=f"ml{ctx.instrument}/{ctx.low}_cal_old",
                           device_classes=("TwinCorrection",), devices=devices)
    old = kenv.install_karabo(hosts[host], ctx.layout.instrument.account,
                              broker_url=str(ctx.twin.broker_url),
                              topic=ctx.twin.topics[ctx.instrument], servers=[spec],
                              webserver=None)
    if str(old) not in [str(k) for k in ctx.twin.karabo_dirs]:
        ctx.twin.karabo_dirs.append(str(old))
        if hasattr(ctx.twin, "save"):
            ctx.twin.save()
    kenv.start_karabo(old)
    first = next(iter(devices))
    _wait(f"{first} from {host}", lambda: _answers(ctx, first), timeout=40.0)
    for karabo, names in current.items():
        kenv.svc(karabo, "-u", *names)


def _answers(ctx: _Ctx, device: str) -> bool:
    try:
        ctx.get(device, "state")
    except RunbookError:
        return False
    return True


def _caldb_down(ctx: _Ctx, f: Any) -> None:
    plan = next(p for p in ctx.layout.installs if p.account == "xcal")
    host = f.host or plan.host
    kenv.svc(ctx.karabo(host, "xcal"), "-d", *[s.name for s in plan.servers])


def _operating_condition(ctx: _Ctx, f: Any) -> None:
    mgr = ctx.ids["cal_manager"]
    rows = ctx.get(mgr, "operatingConditions")["operatingConditions"]
    table = [{"parameter": str(r[0]), "value": str(r[1])} for r in rows]
    for row in table:
        if row["parameter"] == f.parameter:
            row["value"] = f.value
            break
    else:
        table.append({"parameter": f.parameter, "value": f.value})
    ctx.act({"device": mgr, "set": {"operatingConditions": table}})


def _operation_changed(ctx: _Ctx, f: Any) -> None:
    values: dict[str, Any] = {}
    if f.acquisition_rate is not None:
        values["acquisitionRate"] = f.acquisition_rate
    if f.memory_cells is not None:
        values["memoryCells"] = f.memory_cells
    ctx.act({"device": ctx.ids["detector"], "set": values})


def _daq_not_monitoring(ctx: _Ctx, f: Any) -> None:
    rc = ctx.ids["run_controller"]
    state = ctx.get(rc, "state")["state"]
    if state == "ACQUIRING":
        ctx.act({"device": rc, "call": "monitor"})
    if state != "IGNORING":
        ctx.act({"device": rc, "call": "ignore"})


def _detector_not_sending(ctx: _Ctx, f: Any) -> None:
    det = ctx.ids["detector"]
    if f.cause == "unpowered":
        ctx.act({"device": det, "set": {"powered": False}})
    elif f.cause == "unconfigured":
        ctx.act({"device": det, "set": {"configured": False}})
    elif ctx.get(det, "state")["state"] == "ACQUIRING":
        ctx.act({"device": det, "call": "stop"})


def _aggregator_error(ctx: _Ctx, f: Any) -> None:
    ctx.act({"device": ctx.ids["aggregators"][f.module], "set": {"hardwareFault": f.reason}})


def _module_not_sending(ctx: _Ctx, f: Any) -> None:
    det = ctx.ids["detector"]
    missing = list(ctx.get(det, "modulesNotSending")["modulesNotSending"] or [])
    if f.module not in missing:
        ctx.act({"device": det, "set": {"modulesNotSending": sorted([*missing, f.module])}})


def _min_modules(ctx: _Ctx, f: Any) -> None:
    targets = {"raw": ["raw_appender"], "corrected": ["corrected_appender"],
               "both": ["raw_appender", "corrected_appender"]}[f.appender]
    ctx.act(*[{"device": ctx.ids[t], "set": {"minModules": f.value}} for t in targets])


def _output_every_nth(ctx: _Ctx, f: Any) -> None:
    ctx.act({"device": ctx.ids["cal_manager"], "set": {"outputEveryNthTrain": f.value}})


def _pulse_filter(ctx: _Ctx, f: Any) -> None:
    ctx.act({"device": ctx.ids["cal_manager"],
             "set": {"pulseFilter": f.expression, "outputEveryNthTrain": f.every_nth}})


def _wrong_daq_output(ctx: _Ctx, f: Any) -> None:
    splitter = ctx.ids["splitters"][f.module]
    channel = f.channel or f"{splitter}:output_0"
    ctx.act({"device": ctx.ids["corrections"][f.module], "set": {"dataInput": channel}})


def _gui_server(ctx: _Ctx, f: Any) -> None:
    ctx.act({"device": ctx.ids["gui_server"], "set": {"networkFault": "client queue stuck"}})


_HANDLERS = {
    "new_server": _new_server, "webserver_down": _webserver_down,
    "webserver_filter": _webserver_filter, "bad_webserver_template": _bad_template,
    "detector_pushing": _detector_pushing, "karabo_not_started": _karabo_not_started,
    "cuda_missing": _cuda_missing, "old_installation": _old_installation,
    "caldb_remote_down": _caldb_down, "operating_condition": _operating_condition,
    "detector_operation_changed": _operation_changed,
    "daq_not_monitoring": _daq_not_monitoring, "detector_not_sending": _detector_not_sending,
    "aggregator_error": _aggregator_error, "module_not_sending": _module_not_sending,
    "min_modules": _min_modules, "output_every_nth": _output_every_nth,
    "pulse_filter": _pulse_filter, "wrong_daq_output": _wrong_daq_output,
    "gui_server_trouble": _gui_server, **offline_faults.HANDLERS, **caldb_faults.HANDLERS,
}


def heal(twin: TwinLike, instrument: str | None = None) -> None:
    """Undo every cause this module can make, back to the layout's baseline.

    The offline webservice and its overview are started again when dead (on a hosts-only
    twin that is all there is to heal).  Run files and webservers are rewritten from the
    layout, services not in the layout
    are removed, stopped installations and services are started again, and the
    properties that faults set are put back (but "output every nth train" and the pulse
    filter, the operator's settings, which ``sim.operate.online`` sets).  Devices keep
    their state: follow with INIT's start pipeline, or a RESTART first where the
    guidelines' remedy needs one, as after any repair at the facility.
    """
    offline_faults.heal(twin)
    caldb_faults.heal(twin)
    if not twin.karabo_dirs:  # a hosts-only twin: nothing of Karabo to heal
        return
    name = (instrument or _only(twin)).upper()
    ctx = _Ctx(twin, name, instrument_layout(name, twin_dir=str(Path(twin.dir).resolve())))
    hosts = twin.hosts
    wanted = {str(ctx.karabo(p.host, p.account)) for p in ctx.layout.installs}
    for karabo in [Path(k) for k in twin.karabo_dirs]:
        if str(karabo) not in wanted and ctx.low in karabo.name + str(karabo):
            if any(s.startswith(f"ml{ctx.low}_") for s in kenv.services_of(karabo)):
                kenv.stop_karabo(karabo)
    for plan in ctx.layout.hosts:
        for version in plan.cuda:
            (Path(hosts[plan.name].root) / "usr" / "local" / f"cuda-{version}" / "bin").mkdir(
                parents=True, exist_ok=True)
    for install in ctx.layout.installs:
        karabo = ctx.karabo(install.host, install.account)
        texts = {s.name: kenv.server_run_file(replace(s, host_name=install.host))
                 for s in install.servers}
        if install.webserver is not None:
            texts[install.webserver.name] = kenv.webserver_run_file(install.webserver)
        for extra in set(kenv.services_of(karabo)) - set(texts):
            kenv.remove_service(karabo, extra)
        changed = [n for n, t in texts.items()
                   if (karabo / "var" / "service" / n / "run").read_text() != t]
        for service in changed:
            kenv.write_run_file(karabo, service, texts[service])
        if not kenv.supervised(karabo, ".svscan"):
            kenv.start_karabo(karabo)
            continue
        kenv.svc(karabo, "-u", *texts)
        if changed:
            _restart_services(karabo, changed)
    ids = ctx.ids
    ins = ctx.layout.instrument
    _wait("the DAQ server", lambda: _answers(ctx, ids["detector"]), timeout=40.0)
    det, rc = (r["state"] for r in ctx.act({"device": ids["detector"], "get": ["state"]},
                                          {"device": ids["run_controller"], "get": ["state"]}))
    actions: list[dict[str, Any]] = []
    if det == "ACQUIRING":
        actions.append({"device": ids["detector"], "call": "stop"})
    actions.append({"device": ids["detector"], "set": {
        "powered": True, "configured": True, "modulesNotSending": [],
        "startSendingWhen": "", "acquisitionRate": ins.acquisition_rate,
        "memoryCells": ins.memory_cells}})
    if rc in ("IGNORING", "ACQUIRING"):
        actions.append({"device": ids["run_controller"], "call": "monitor"})
    for agg in ids["aggregators"]:
        actions.append({"device": agg, "set": {"hardwareFault": ""}})
    actions.append({"device": ids["restart"], "set": {
        "webserverTemplate": "http://{host}:8080", "omitFromRestart": "webserver"}})
    actions.append({"device": ids["gui_server"], "set": {"networkFault": ""}})
    ctx.act(*actions, *_pipeline_settings(ctx))
    _wait("the detector to be powered again",
          lambda: ctx.get(ids["detector"], "state")["state"] != "OFF")
    states = ctx.act(*[{"device": a, "get": ["state"]} for a in ids["aggregators"]])
    errors = [a for a, s in zip(ids["aggregators"], states, strict=True)
              if s["state"] == "ERROR"]
    if errors:
        ctx.act(*[{"device": a, "call": "reset"} for a in errors])


def _restart_services(karabo: Path, services: list[str]) -> None:
    """svc -t, and wait until each runs as a new process: until then its old devices may
    still answer, and a wait for every device would pass before they go."""
    old = {s: kenv.service_pid(karabo, s) for s in services}
    kenv.svc(karabo, "-t", *services)
    _wait(f"{', '.join(services)} to restart", lambda: all(
        kenv.service_pid(karabo, s) not in (None, old[s]) for s in services), timeout=30.0)


def _pipeline_settings(ctx: _Ctx) -> list[dict[str, Any]]:
    """Set-actions for the pipeline's settings that faults change and that differ now.

    Only differing ones: a RESTART may be killing these servers meanwhile (11.1), and a
    write to a dying device waits for its timeout.  A device not running now starts from
    the layout's configuration: nothing to put back there.
    """
    ids, ins = ctx.ids, ctx.layout.instrument
    wanted: dict[str, dict[str, Any]] = {
        ids["cal_manager"]: {
            "operatingConditions": [{"parameter": k, "value": v} for k, v in ins.conditions],
            "initTimeout": INIT_TIMEOUT_S},
        ids["raw_appender"]: {"minModules": MODULES},
        ids["corrected_appender"]: {"minModules": MODULES}}
    for splitter, corr in zip(ids["splitters"], ids["corrections"], strict=True):
        wanted[corr] = {"dataInput": f"{splitter}:gpu"}
    gone = set(ctx.act({"missing": list(wanted)})[0])
    devices = [d for d in wanted if d not in gone]
    now = ctx.act(*[{"device": d, "get": list(wanted[d])} for d in devices])
    actions = []
    for device, values in zip(devices, now, strict=True):
        differ = {k: v for k, v in wanted[device].items() if _plain(values[k]) != _plain(v)}
        if differ:
            actions.append({"device": device, "set": differ})
    return actions


def _plain(value: Any) -> Any:
    """A table as rows of strings, whether given as dicts or read back as tuples."""
    if isinstance(value, list) and value and isinstance(value[0], (dict, list, tuple)):
        return [tuple(str(x) for x in (row.values() if isinstance(row, dict) else row))
                for row in value]
    return value
