"""Checks and actions on Karabo devices, through the middlelayer client of `checks._karabo`.

Each check answers ok or fail only from what the devices said.  A broker that cannot be
reached, a device absent from the topology or a device that does not answer in time is
`unknown` with that reason (the client raises `TransportError`s, which the walker turns
into unknowns).  Karabo itself is imported only in the client's own process.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.context import Context
from engine.registry import check
from engine.result import Result

from ._compare import expectation_problems, numeric, same
from ._karabo import call_timeout, client_for

__all__ = [
    "DeviceState", "PropertyCheck", "PropertiesTable", "DevicesOnline", "Rates",
    "ConstantDates", "StateSince", "numeric", "same", "expectation_problems",
    "device_state", "state_since", "device_property", "properties_table", "devices_online", "rates",
    "constant_dates",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- device_state ---------------------------------------------------------------------------

class DeviceState(_Model):
    device: str = Field(min_length=1)
    states: list[str] = Field(min_length=1, description="allowed states, e.g. [ACTIVE]")


def _state(p_device: str, ctx: Context) -> dict[str, Any]:
    return client_for(ctx).get(p_device, ["state", "status"], call_timeout(ctx))


@check("karabo.device_state")
def device_state(p: DeviceState, ctx: Context) -> Result:
    """ok when the device's state is one of ``states``."""
    got = _state(p.device, ctx)
    state, status = str(got.get("state")), str(got.get("status", ""))
    evidence = f"{p.device} is {state}" + (f" ({status})" if status else "")
    if state in p.states:
        return Result.ok(evidence, state=state, status=status)
    return Result.fail(f"{evidence}, expected {' or '.join(p.states)}", state=state,
                       status=status)


class StateSince(DeviceState):
    since: float = Field(description="Unix time; e.g. {{ started_at }} in a postcondition")


@check("karabo.state_since")
def state_since(p: StateSince, ctx: Context) -> Result:
    """ok when the device is in one of ``states`` and its state changed at or after
    ``since`` (Karabo's timestamp): a slot call's postcondition. A state that was already
    there before the call (ACTIVE from the last restart) does not count."""
    got = client_for(ctx).request("stamps", call_timeout(ctx), device=p.device,
                                  keys=["state"]).get("state")
    if not got:
        return Result.unknown(f"{p.device} did not give its state")
    state, at = str(got[0]), got[1]
    if at is None:
        return Result.unknown(f"{p.device} is {state}, with no timestamp", state=state)
    when = time.strftime("%H:%M:%S", time.localtime(at))
    evidence = f"{p.device} is {state} since {when}"
    if state in p.states and at >= p.since:
        return Result.ok(evidence, state=state, changed=at)
    why = ("before the action began" if state in p.states
           else f"expected {' or '.join(p.states)}")
    return Result.fail(f"{evidence}, {why}", state=state, changed=at)


# ---- property -------------------------------------------------------------------------------

class PropertyCheck(_Model):
    device: str = Field(min_length=1)
    property: str = Field(min_length=1, description="dotted paths allowed: a.b.c")
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    at_least: float | None = None
    at_most: float | None = None
    not_empty: bool | None = None
    matches: str | None = Field(default=None, description="regular expression (re.search)")

    @model_validator(mode="after")
    def _one_expectation(self) -> PropertyCheck:
        if all(getattr(self, k) is None for k in
               ("equals", "in_", "at_least", "at_most", "not_empty", "matches")):
            raise ValueError("give at least one expectation: equals, in, at_least, at_most, "
                             "not_empty or matches")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches: bad regular expression: {exc}") from exc
        return self


@check("karabo.property")
def device_property(p: PropertyCheck, ctx: Context) -> Result:
    """ok when the property's value meets every given expectation."""
    value = client_for(ctx).get(p.device, [p.property], call_timeout(ctx)).get(p.property)
    shown = f"{p.device}.{p.property} = {value!r}"
    try:
        problems = expectation_problems(value, equals=p.equals, in_=p.in_,
                                        at_least=p.at_least, at_most=p.at_most,
                                        not_empty=p.not_empty, matches=p.matches)
    except ValueError as exc:
        return Result.unknown(f"{shown}: {exc}", value=value)
    if problems:
        return Result.fail(f"{shown}: {'; '.join(problems)}", value=value)
    return Result.ok(shown, value=value)


# ---- properties_table -----------------------------------------------------------------------

class PropertiesTable(_Model):
    device: str = Field(min_length=1)
    property: str = "operatingConditions"
    key_column: str = "parameter"
    value_column: str = "value"
    no_none: bool = Field(default=True, description='no field may show "None" (11.3)')
    equals: dict[str, Any] = Field(default_factory=dict)
    empty: list[str] = Field(default_factory=list, description="e.g. [beam_energy]")
    required: list[str] = Field(default_factory=list, description="rows that must exist")


@check("karabo.properties_table")
def properties_table(p: PropertiesTable, ctx: Context) -> Result:
    """The CAL_MANAGER's common operating conditions: every rule of 11.3 at once."""
    rows = client_for(ctx).get(p.device, [p.property], call_timeout(ctx)).get(p.property)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return Result.unknown(f"{p.device}.{p.property} is not a table: {rows!r}")
    try:
        table = {str(r[p.key_column]): r[p.value_column] for r in rows}
    except KeyError as exc:
        return Result.unknown(f"{p.device}.{p.property} has no column {exc}",
                              columns=sorted({k for r in rows for k in r}))
    problems = []
    if p.no_none:
        problems += [f"{k} shows 'None'" for k, v in table.items() if str(v).strip() == "None"]
    for key in [*p.required, *p.equals, *p.empty]:
        if key not in table and f"{key} is missing" not in problems:
            problems.append(f"{key} is missing")
    for key, want in p.equals.items():
        if key in table and not same(table[key], want):
            problems.append(f"{key} is {table[key]!r}, expected {want!r}")
    for key in p.empty:
        if key in table and str(table[key]).strip() != "":
            problems.append(f"{key} is {table[key]!r}, expected empty")
    shown = ", ".join(f"{k}={v!r}" for k, v in table.items())
    evidence = f"{p.device}.{p.property}: {shown or '(no rows)'}"
    if problems:
        return Result.fail(f"{evidence}\n" + "; ".join(problems), rows=table, problems=problems)
    return Result.ok(evidence, rows=table)


# ---- devices_online -------------------------------------------------------------------------

class DevicesOnline(_Model):
    devices: list[str] | None = Field(default=None, description="explicit device ids")
    pattern: str | None = Field(default=None, description="regular expression on device ids")
    server_pattern: str | None = Field(default=None, description="... on their server ids")
    host_pattern: str | None = Field(default=None, description="... on their hosts")
    expect: Literal["all", "any", "none"] = "all"

    @model_validator(mode="after")
    def _selection(self) -> DevicesOnline:
        patterns = (self.pattern, self.server_pattern, self.host_pattern)
        if not self.devices and all(x is None for x in patterns):
            raise ValueError("give devices, or at least one of pattern, server_pattern, "
                             "host_pattern")
        for text in patterns:
            if text is not None:
                try:
                    re.compile(text)
                except re.error as exc:
                    raise ValueError(f"bad regular expression {text!r}: {exc}") from exc
        return self


def _selected(p: DevicesOnline, device: str, attrs: dict[str, Any]) -> bool:
    for pattern, value in ((p.pattern, device), (p.server_pattern, attrs.get("serverId")),
                           (p.host_pattern, attrs.get("host"))):
        if pattern is not None and not re.search(pattern, str(value or "")):
            return False
    return True


@check("karabo.devices_online")
def devices_online(p: DevicesOnline, ctx: Context) -> Result:
    """Which of the devices (listed, or matching the patterns) are in the topology."""
    topology = client_for(ctx).topology(call_timeout(ctx))["device"]
    online = {d: a for d, a in topology.items() if _selected(p, d, a)}
    if p.devices:
        present = [d for d in p.devices if d in online]
        missing = [d for d in p.devices if d not in online]
    else:
        present, missing = sorted(online), []
    where = {d: f"{online[d].get('serverId', '?')}@{online[d].get('host', '?')}"
             for d in present}
    lines = [f"online: {d} ({where[d]})" for d in present] + [f"missing: {d}" for d in missing]
    evidence = "\n".join(lines) or "no device matches"
    observed = {"present": present, "missing": missing, "where": where}
    if p.expect == "none":
        good = not present
    elif p.expect == "any":
        good = bool(present)
    else:
        good = bool(present) and not missing
    return Result.ok(evidence, **observed) if good else Result.fail(evidence, **observed)


# ---- rates ----------------------------------------------------------------------------------

class Rates(_Model):
    device: str = Field(min_length=1)
    property: str = Field(min_length=1)
    interval: float = Field(default=2.0, gt=0, le=60, description="seconds between samples")
    counter: bool = Field(default=False, description="a counter (e.g. trainId): its change "
                                                     "per second is the rate")
    min_rate: float | None = Field(default=None, ge=0, description="default: above zero")


@check("karabo.rates")
def rates(p: Rates, ctx: Context) -> Result:
    """Sample twice, ``interval`` apart: is the rate (or counter) updating?"""
    client, timeout = client_for(ctx), call_timeout(ctx)
    first = client.get(p.device, [p.property], timeout).get(p.property)
    t0 = time.monotonic()
    time.sleep(p.interval)
    second = client.get(p.device, [p.property], timeout).get(p.property)
    elapsed = time.monotonic() - t0
    a, b = numeric(first), numeric(second)
    if a is None or b is None:
        return Result.unknown(f"{p.device}.{p.property} is not a number: {first!r}, {second!r}")
    rate = (b - a) / elapsed if p.counter else min(a, b)
    threshold = p.min_rate
    good = rate > 0 if threshold is None else rate >= threshold
    evidence = f"{p.device}.{p.property}: {first!r}, then {second!r} {elapsed:.1f} s later"
    if p.counter:
        evidence += f" ({rate:g}/s)"
    observed = {"samples": [first, second], "rate": rate, "interval": round(elapsed, 3)}
    if good:
        return Result.ok(evidence, **observed)
    want = "above 0" if threshold is None else f"at least {threshold:g}"
    return Result.fail(f"{evidence}: not updating (rate {rate:g}, expected {want})", **observed)


# ---- constant_dates -------------------------------------------------------------------------

class ConstantDates(_Model):
    manager: str | None = Field(default=None, description="CAL_MANAGER: lists the devices")
    devices: list[str] | None = Field(default=None, description="or the correction devices")
    list_property: str = Field(default="corrections", description="manager property naming "
                                                                  "the correction devices")
    dates: list[str] | None = Field(default=None, description="date properties that must be "
                                    "set; default: <constant>Date of each name in the "
                                    "device's `constants`, else every *Date property")
    optional: list[str] = Field(default_factory=list, description="date properties that may "
                                                                  "stay empty")

    @model_validator(mode="after")
    def _source(self) -> ConstantDates:
        if not self.manager and not self.devices:
            raise ValueError("give manager or devices")
        return self


def _required_dates(conf: dict[str, Any], p: ConstantDates) -> list[str]:
    if p.dates is not None:
        wanted = list(p.dates)
    elif isinstance(conf.get("constants"), list):
        wanted = [f"{c[:1].lower()}{c[1:]}Date" for c in conf["constants"]]
    else:
        wanted = sorted(k for k in conf if k.endswith("Date") and "." not in k)
    return [d for d in wanted if d not in p.optional]


@check("karabo.constant_dates")
def constant_dates(p: ConstantDates, ctx: Context) -> Result:
    """ok when every correction device shows a date for each constant (10.2, 11.3)."""
    from engine.errors import RunbookError

    client, timeout = client_for(ctx), call_timeout(ctx)
    devices = list(p.devices or [])
    if p.manager:
        listed = client.get(p.manager, [p.list_property], timeout).get(p.list_property)
        if not isinstance(listed, list):
            return Result.unknown(f"{p.manager}.{p.list_property} is not a list: {listed!r}")
        devices += [str(d) for d in listed if str(d) not in devices]
    if not devices:
        return Result.unknown(f"{p.manager}.{p.list_property} names no devices")
    futures = {d: client.submit("configuration", timeout, device=d) for d in devices}
    empty: dict[str, list[str]] = {}
    dates: dict[str, dict[str, Any]] = {}
    unread: dict[str, str] = {}
    for device, fut in futures.items():
        try:
            conf = fut.result(timeout=timeout + 5)
        except (RunbookError, TimeoutError) as exc:
            unread[device] = str(exc) or "no answer"
            continue
        required = _required_dates(conf, p)
        dates[device] = {d: conf.get(d) for d in required}
        missing = [d for d in required if not str(conf.get(d) or "").strip()]
        if missing:
            empty[device] = missing
    lines = [f"{d}: {', '.join(f'{k}={v or EMPTY}' for k, v in shown.items())}"
             for d, shown in dates.items()] + [f"{d}: unreadable ({r})" for d, r in unread.items()]
    observed = {"empty": empty, "dates": dates, "unreadable": unread}
    evidence = "\n".join(lines)
    if empty:
        return Result.fail(f"{len(empty)} of {len(devices)} devices lack constant dates\n"
                           + evidence, **observed)
    if unread:
        return Result.unknown(f"{len(unread)} of {len(devices)} devices could not be read: "
                              + "; ".join(f"{d}: {r}" for d, r in unread.items()),
                              evidence=evidence, **observed)
    return Result.ok(f"all {len(devices)} devices show constant dates\n" + evidence, **observed)


EMPTY = "(empty)"

