"""Checks for the online pipeline runbooks (11.5 no image updates, 11.6 slow, 11.7 GPU).

What the CAL_MANAGER scene shows at a glance, as checks: one property over many devices
(every splitter, every correction), splitter rates against "output every nth train",
min-modules against the modules that arrive, the pulse filter as images per second, a
latency or a rate sampled over a few seconds, and the log of the server running a device.

A device list comes from ``devices`` or from the manager's list property (the CAL_MANAGER
lists its ``splitters``, ``corrections``, ``gainAdjusts``), as ``karabo.constant_dates``
reads it.  Devices that do not answer make a check ``unknown`` unless the answer is clear
without them.  The pulse filter is parsed by `engine.pulse_filter`, never evaluated.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.context import Context
from engine.errors import RunbookError
from engine.pulse_filter import PulseFilterError, parse_pulse_filter
from engine.registry import check
from engine.result import Result

from ._compare import expectation_problems, numeric
from ._karabo import call_timeout, client_for

__all__ = [
    "DevicesProperty", "NthRate", "MinModules", "PulseFilter", "Latency", "RatesMatch",
    "ServerLog", "PulseFilterError", "parse_pulse_filter", "service_name",
    "devices_property", "nth_rate", "min_modules", "pulse_filter", "latency", "rates_match",
    "server_log",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Devices(_Model):
    devices: list[str] = Field(default_factory=list, description="explicit device ids")
    manager: str | None = Field(default=None, description="CAL_MANAGER listing the devices")
    list_property: str = Field(default="splitters", description="its property naming them")

    @model_validator(mode="after")
    def _source(self) -> _Devices:
        if not self.devices and not self.manager:
            raise ValueError("give devices, or a manager (and list_property)")
        return self


def _device_ids(p: _Devices, client: Any, timeout: float) -> list[str] | Result:
    devices = list(p.devices)
    if not devices and p.manager:
        listed = client.get(p.manager, [p.list_property], timeout).get(p.list_property)
        if not isinstance(listed, list) or not listed:
            return Result.unknown(f"{p.manager}.{p.list_property} names no devices: {listed!r}")
        devices = [str(d) for d in listed]
    return devices


def _read_many(client: Any, devices: list[str], keys: list[str], timeout: float
               ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every device at once: (values per device, reason per device that did not answer)."""
    futures = {d: client.submit("get", timeout, device=d, keys=keys) for d in devices}
    values: dict[str, dict[str, Any]] = {}
    unread: dict[str, str] = {}
    for device, fut in futures.items():
        try:
            values[device] = dict(fut.result(timeout=timeout + 5))
        except (RunbookError, TimeoutError) as exc:
            unread[device] = str(exc) or "no answer"
    return values, unread


def _short(device: str) -> str:
    return device.rsplit("/", 1)[-1]


# ---- pipeline.devices -----------------------------------------------------------------------

class DevicesProperty(_Devices):
    """One property over many devices: do all (or any) meet the expectation?"""

    property: str = Field(min_length=1)
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    at_least: float | None = None
    at_most: float | None = None
    expect: Literal["all", "any"] = "all"

    @model_validator(mode="after")
    def _one_expectation(self) -> DevicesProperty:
        if all(getattr(self, k) is None for k in ("equals", "in_", "at_least", "at_most")):
            raise ValueError("give at least one expectation: equals, in, at_least or at_most")
        return self


@check("pipeline.devices")
def devices_property(p: DevicesProperty, ctx: Context) -> Result:
    """ok when every device (``expect: all``) or at least one (``any``) meets it."""
    client, timeout = client_for(ctx), call_timeout(ctx)
    devices = _device_ids(p, client, timeout)
    if isinstance(devices, Result):
        return devices
    values, unread = _read_many(client, devices, [p.property], timeout)
    good: list[str] = []
    bad: list[str] = []
    for device, got in values.items():
        try:
            problems = expectation_problems(got.get(p.property), equals=p.equals, in_=p.in_,
                                            at_least=p.at_least, at_most=p.at_most)
        except ValueError as exc:
            problems = [str(exc)]
        (bad if problems else good).append(device)
    lines = [f"{d}.{p.property} = {values[d].get(p.property)!r}" for d in values]
    lines += [f"{d}: unreadable ({r})" for d, r in unread.items()]
    observed = {"values": {d: v.get(p.property) for d, v in values.items()},
                "meeting": good, "failing": bad, "unreadable": unread}
    head = f"{len(good)} of {len(devices)} devices meet it on {p.property}"
    evidence = f"{head}\n" + "\n".join(lines)
    if p.expect == "any":
        if good:
            return Result.ok(evidence, **observed)
        if unread:
            return Result.unknown(f"no device meets it, {len(unread)} did not answer",
                                  evidence=evidence, **observed)
        return _with_subject(Result.fail(evidence, **observed), p, bad)
    if bad:
        failing = f"failing: {', '.join(_short(d) for d in bad)}"
        return _with_subject(Result.fail(f"{failing}\n{evidence}", **observed), p, bad)
    if unread:
        return Result.unknown(f"{len(unread)} of {len(devices)} devices did not answer",
                              evidence=evidence, **observed)
    return Result.ok(evidence, **observed)


def _with_subject(result: Result, p: _Devices, failing: list[str]) -> Result:
    result.subject = failing[0] if len(failing) == 1 else p.manager
    return result


# ---- pipeline.nth_rate ----------------------------------------------------------------------

class NthRate(_Devices):
    """Are the splitters' input rates what "Output every nth train" makes them (11.5)?"""

    manager: str = Field(min_length=1, description="CAL_MANAGER (holds the nth setting)")
    property: str = "inputRate"
    nth_property: str = "outputEveryNthTrain"
    train_rate: float = Field(default=10.0, gt=0, description="trains per second (10 Hz)")
    tolerance: float = Field(default=0.25, gt=0, lt=1, description="relative")


@check("pipeline.nth_rate")
def nth_rate(p: NthRate, ctx: Context) -> Result:
    client, timeout = client_for(ctx), call_timeout(ctx)
    nth = numeric(client.get(p.manager, [p.nth_property], timeout).get(p.nth_property))
    if nth is None or nth < 1:
        return Result.unknown(f"{p.manager}.{p.nth_property} is not a positive number: {nth!r}")
    devices = _device_ids(p, client, timeout)
    if isinstance(devices, Result):
        return devices
    values, unread = _read_many(client, devices, [p.property], timeout)
    want = p.train_rate / nth
    rates = {d: numeric(v.get(p.property)) for d, v in values.items()}
    off = sorted(d for d, r in rates.items()
                 if r is None or abs(r - want) > p.tolerance * want)
    lines = [f"{_short(d)}: {r:g} Hz" if r is not None else f"{_short(d)}: not a number"
             for d, r in rates.items()] + [f"{_short(d)}: unreadable" for d in unread]
    evidence = (f"{p.manager}.{p.nth_property} = {nth:g}: expected {want:g} Hz "
                f"({p.train_rate:g} Hz / {nth:g}) at each device's {p.property}\n"
                + "\n".join(lines))
    observed = {"nth": nth, "expected": want, "rates": rates, "off": off,
                "unreadable": unread}
    if off:
        return _with_subject(Result.fail(f"not at {want:g} Hz: "
                                         f"{', '.join(_short(d) for d in off)}\n{evidence}",
                                         **observed), p, off)
    if unread:
        return Result.unknown(f"{len(unread)} devices did not answer", evidence=evidence,
                              **observed)
    return Result.ok(evidence, **observed)


# ---- pipeline.min_modules -------------------------------------------------------------------

class MinModules(_Model):
    """An APPENDER's min-modules against the modules that arrive (11.5, 10.2)."""

    appender: str = Field(min_length=1)
    available_from: str | None = Field(default=None, description="the appender whose count "
                                       "of arriving modules is what is available (RAW); "
                                       "default: the appender itself")
    min_property: str = "minModules"
    count_property: str = "modulesReceived"


@check("pipeline.min_modules")
def min_modules(p: MinModules, ctx: Context) -> Result:
    """fail when min-modules asks for more modules than arrive."""
    client, timeout = client_for(ctx), call_timeout(ctx)
    source = p.available_from or p.appender
    minimum = numeric(client.get(p.appender, [p.min_property], timeout).get(p.min_property))
    count = numeric(client.get(source, [p.count_property], timeout).get(p.count_property))
    if minimum is None or count is None:
        return Result.unknown(f"{p.appender}.{p.min_property} = {minimum!r}, "
                              f"{source}.{p.count_property} = {count!r}: not numbers")
    evidence = (f"{p.appender}.{p.min_property} = {minimum:g}; "
                f"{source}.{p.count_property} = {count:g} modules arrive")
    observed = {"min_modules": minimum, "available": count}
    result = (Result.fail(f"{evidence}: waits for more modules than arrive", **observed)
              if minimum > count else Result.ok(evidence, **observed))
    result.subject = p.appender
    return result


# ---- pipeline.pulse_filter ------------------------------------------------------------------

class PulseFilter(_Model):
    """The manager's pulse filter as images per second: train rate / nth x pulses (11.6)."""

    manager: str = Field(min_length=1)
    filter_property: str = "pulseFilter"
    nth_property: str = "outputEveryNthTrain"
    train_rate: float = Field(default=10.0, gt=0)
    cells: int | None = Field(default=None, ge=1, description="memory cells: clip indices")
    max_images_per_second: float | None = Field(default=None, gt=0)


@check("pipeline.pulse_filter")
def pulse_filter(p: PulseFilter, ctx: Context) -> Result:
    """fail when the filter cannot be read, selects nothing, or asks too many images/s."""
    got = client_for(ctx).get(p.manager, [p.filter_property, p.nth_property], call_timeout(ctx))
    text, nth = str(got.get(p.filter_property, "")), numeric(got.get(p.nth_property))
    shown = f"{p.manager}.{p.filter_property} = {text!r}"
    try:
        pulses = parse_pulse_filter(text, p.cells)
    except PulseFilterError as exc:
        return _subject(Result.fail(f"{shown}: {exc}", filter=text), p.manager)
    if not pulses:
        return _subject(Result.fail(f"{shown} selects no pulse", filter=text, pulses=0),
                        p.manager)
    if nth is None or nth < 1:
        return Result.unknown(f"{p.manager}.{p.nth_property} is not a positive number: "
                              f"{got.get(p.nth_property)!r}")
    images = p.train_rate / nth * len(pulses)
    evidence = (f"{shown}: {len(pulses)} pulses ({pulses[0]}..{pulses[-1]}); every "
                f"{nth:g}th train of {p.train_rate:g} Hz: {images:g} images/s per module")
    observed = {"filter": text, "pulses": len(pulses), "nth": nth, "images_per_second": images}
    if p.max_images_per_second is not None and images > p.max_images_per_second:
        return _subject(Result.fail(f"{evidence}, more than {p.max_images_per_second:g}",
                                    **observed), p.manager)
    return _subject(Result.ok(evidence, **observed), p.manager)


def _subject(result: Result, subject: str) -> Result:
    result.subject = subject
    return result


# ---- pipeline.latency and pipeline.rates_match ----------------------------------------------

class Latency(_Model):
    """A latency sampled ``samples`` times, ``interval`` apart: high, piling up, varying?"""

    device: str = Field(min_length=1)
    property: str = "latency"
    samples: int = Field(default=3, ge=2, le=20)
    interval: float = Field(default=1.0, gt=0, le=30)
    max_value: float | None = Field(default=None, description="ms; above is too slow")
    max_growth: float | None = Field(default=None, description="ms per second: piling up")
    max_spread: float | None = Field(default=None, description="ms between samples: varying")


def _samples(client: Any, device: str, keys: list[str], n: int, interval: float,
             timeout: float) -> tuple[list[dict[str, Any]], float]:
    got, start = [], time.monotonic()
    for i in range(n):
        if i:
            time.sleep(interval)
        got.append(client.get(device, keys, timeout))
    return got, time.monotonic() - start


@check("pipeline.latency")
def latency(p: Latency, ctx: Context) -> Result:
    raw, elapsed = _samples(client_for(ctx), p.device, [p.property], p.samples, p.interval,
                            call_timeout(ctx))
    values = [numeric(s.get(p.property)) for s in raw]
    if any(v is None for v in values):
        return Result.unknown(f"{p.device}.{p.property} is not a number: {values!r}")
    nums = [float(v) for v in values if v is not None]
    growth = (nums[-1] - nums[0]) / elapsed if elapsed > 0 else 0.0
    spread = max(nums) - min(nums)
    problems = []
    if p.max_value is not None and nums[-1] > p.max_value:
        problems.append(f"{nums[-1]:g} ms is above {p.max_value:g} ms")
    if p.max_growth is not None and growth > p.max_growth:
        problems.append(f"piling up by {growth:.0f} ms/s")
    if p.max_spread is not None and spread > p.max_spread:
        problems.append(f"varying by {spread:.0f} ms")
    evidence = (f"{p.device}.{p.property}: {', '.join(f'{v:g}' for v in nums)} ms over "
                f"{elapsed:.1f} s")
    observed = {"samples": nums, "growth_per_s": round(growth, 1), "spread": spread}
    if problems:
        return Result.fail(f"{evidence}: {'; '.join(problems)}", **observed)
    return Result.ok(evidence, **observed)


class RatesMatch(_Devices):
    """Do the components' update rates follow the SPLITTERs' rate (11.6)?"""

    reference_property: str = "inputRate"
    compare: list[str] = Field(min_length=1, description="devices whose rate must match")
    property: str = "updateRate"
    samples: int = Field(default=3, ge=1, le=20)
    interval: float = Field(default=1.0, gt=0, le=30)
    tolerance: float = Field(default=0.25, gt=0, lt=1, description="relative")


@check("pipeline.rates_match")
def rates_match(p: RatesMatch, ctx: Context) -> Result:
    client, timeout = client_for(ctx), call_timeout(ctx)
    refs = _device_ids(p, client, timeout)
    if isinstance(refs, Result):
        return refs
    lines: list[str] = []
    off: set[str] = set()
    rows: list[dict[str, Any]] = []
    for i in range(p.samples):
        if i:
            time.sleep(p.interval)
        ref_values, _ = _read_many(client, refs, [p.reference_property], timeout)
        flowing = [r for r in (numeric(v.get(p.reference_property))
                               for v in ref_values.values()) if r]
        if not flowing:
            return Result.unknown("no data flows through the reference devices: there is "
                                  "no rate to compare with", evidence="\n".join(lines))
        want = statistics.median(flowing)
        got, unread = _read_many(client, p.compare, [p.property], timeout)
        if unread:
            return Result.unknown(f"{', '.join(unread)} did not answer")
        rates = {d: numeric(v.get(p.property)) for d, v in got.items()}
        rows.append({"reference": want, "rates": rates})
        bad = [d for d, r in rates.items() if r is None or abs(r - want) > p.tolerance * want]
        off.update(bad)
        lines.append(f"splitters {want:g} Hz; " + ", ".join(
            f"{_short(d)} {r:g} Hz" if r is not None else f"{_short(d)} ?"
            for d, r in rates.items()))
    evidence = "\n".join(lines)
    if off:
        result = Result.fail(f"not matching the splitters' rate: "
                             f"{', '.join(_short(d) for d in sorted(off))}\n{evidence}",
                             samples=rows, off=sorted(off))
        result.subject = sorted(off)[0] if len(off) == 1 else p.manager
        return result
    return Result.ok(evidence, samples=rows)


# ---- pipeline.server_log --------------------------------------------------------------------

class ServerLog(_Model):
    """Errors in the log of the server that runs ``device`` (11.7): the server and host come
    from the topology, the log from ``<karabo_root>/var/log/<server>/current`` over SSH."""

    device: str = Field(min_length=1)
    user: str = Field(min_length=1, description="the account of that host's installation")
    karabo_root: str | None = Field(default=None, description="default /scratch/<user>/karabo")
    pattern: str = Field(default="ERROR", min_length=1)
    lines: int = Field(default=500, ge=1, description="the last lines of the log to read")


def service_name(server_id: str) -> str:
    """The daemontools service of a server id: ``mlSPB/spb_cal_2`` -> ``mlspb_spb_cal_2``."""
    return server_id.lower().replace("/", "_")


@check("pipeline.server_log")
def server_log(p: ServerLog, ctx: Context) -> Result:
    from . import ssh

    topology = client_for(ctx).topology(call_timeout(ctx))["device"]
    attrs = topology.get(p.device)
    if attrs is None:
        return Result.unknown(f"{p.device} is not in the topology: no server to look at")
    server, host = attrs.get("serverId"), attrs.get("host")
    if not server or not host:
        return Result.unknown(f"the topology names no server or host for {p.device}: {attrs}")
    root = p.karabo_root or f"/scratch/{p.user}/karabo"
    path = f"{root}/var/log/{service_name(str(server))}/current"
    grep = ssh.LogGrep(host=str(host), user=p.user, path=path, pattern=p.pattern,
                       lines=p.lines, expect="absent")
    result = ssh.ssh_log_grep(grep, ctx)
    result.evidence = f"{p.device} runs on {server} on {host}\n{result.evidence}"
    result.observed = {**result.observed, "server": server, "host": host}
    return result
