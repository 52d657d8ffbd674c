"""Checks for the constants runbooks (guidelines 11.3 and 11.4).

- `constants.operating_conditions`: the CAL_MANAGER's common operating conditions by the
  rules of 11.3 (no field showing "None", `beam_energy` usually empty); the subject is the
  offending parameter.
- `constants.conditions_match_detector`: the same table against what the detector itself
  runs (acquisition rate, memory cells), the comparison that *verify config* makes (11.4),
  read-only; the subject is the parameter that differs.
- `constants.corrections_status`: the status of every correction device that the
  CAL_MANAGER lists (11.3: "data arrived while loading").
- `constants.server_logs`: the device servers' logs of several hosts at once, as in 11.3's
  ``grep "Resource temporarily" /scratch/<account>/karabo/var/log/<server>/current``, for
  every server of each host and only since that server last started.

Each one only reads.  A broker or host that cannot be asked is `unknown`, never `ok`.
"""

from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.context import Context
from engine.registry import check
from engine.result import Result

from .karabo import same

__all__ = [
    "OperatingConditions", "ConditionsMatchDetector", "CorrectionsStatus", "ServerLogs",
    "operating_conditions", "conditions_match_detector", "corrections_status",
    "server_logs", "condition_table",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _karabo(ctx: Context) -> tuple[Any, float]:
    from ._karabo import call_timeout, client_for

    return client_for(ctx), call_timeout(ctx)


def condition_table(rows: Any, key: str = "parameter", value: str = "value"
                    ) -> dict[str, str] | None:
    """``{parameter: value}`` from a table property's rows; None when it is no table.  A
    missing value (null) reads "None", as the GUI shows it."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return None
    try:
        return {str(r[key]): str(r[value]) for r in rows}
    except KeyError:
        return None


def _read_table(client: Any, timeout: float, manager: str, prop: str
                ) -> dict[str, str] | Result:
    rows = client.get(manager, [prop], timeout).get(prop)
    table = condition_table(rows)
    if table is None:
        return Result.unknown(f"{manager}.{prop} is not a parameter/value table: {rows!r}")
    return table


def _shown(table: dict[str, str]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in table.items()) or "(no rows)"


# ---- constants.operating_conditions ---------------------------------------------------------

class OperatingConditions(_Model):
    """The common operating conditions of the CAL_MANAGER (11.3, Fig. 11.2)."""

    manager: str = Field(min_length=1, description="the CAL_MANAGER device")
    property: str = "operatingConditions"
    no_none: bool = Field(default=True, description='no field may show "None"')
    empty: list[str] = Field(default_factory=list, description="fields that should be "
                             "empty, e.g. [beam_energy]")


@check("constants.operating_conditions")
def operating_conditions(p: OperatingConditions, ctx: Context) -> Result:
    """ok when no field shows "None" and the `empty` fields are empty; the subject names
    the fields that break a rule."""
    client, timeout = _karabo(ctx)
    table = _read_table(client, timeout, p.manager, p.property)
    if isinstance(table, Result):
        return table
    bad: dict[str, str] = {}
    if p.no_none:
        bad |= {k: f"{k} shows 'None'" for k, v in table.items() if v.strip() == "None"}
    for key in p.empty:
        if key not in bad and table.get(key, "").strip():
            bad[key] = f"{key} is {table[key]!r}, expected empty"
    evidence = f"{p.manager}.{p.property}: {_shown(table)}"
    if not bad:
        return Result.ok(evidence, rows=table)
    result = Result.fail(f"{evidence}\n" + "; ".join(bad.values()), rows=table,
                         parameters=list(bad), problems=list(bad.values()))
    result.subject = ", ".join(bad)
    return result


# ---- constants.conditions_match_detector ----------------------------------------------------

_PAIRS = {"memory_cells": "memoryCells", "acquisition_rate": "acquisitionRate"}


class ConditionsMatchDetector(_Model):
    """Operating conditions against the detector's own settings (11.4 *verify config*)."""

    manager: str = Field(min_length=1, description="the CAL_MANAGER device")
    detector: str = Field(min_length=1, description="the detector's control device")
    property: str = "operatingConditions"
    pairs: dict[str, str] = Field(default_factory=lambda: dict(_PAIRS), min_length=1,
                                  description="condition name -> detector property")


@check("constants.conditions_match_detector")
def conditions_match_detector(p: ConditionsMatchDetector, ctx: Context) -> Result:
    """ok when every condition of `pairs` that the table has equals the detector's value
    (a condition the table lacks is not compared, as verify config does)."""
    client, timeout = _karabo(ctx)
    table = _read_table(client, timeout, p.manager, p.property)
    if isinstance(table, Result):
        return table
    wanted = {k: v for k, v in p.pairs.items() if k in table}
    if not wanted:
        return Result.unknown(f"{p.manager}.{p.property} has none of "
                              f"{', '.join(p.pairs)}: {_shown(table)}")
    detector = client.get(p.detector, sorted(set(wanted.values())), timeout)
    compared, differ = {}, {}
    for key, prop in wanted.items():
        actual = detector.get(prop)
        compared[key] = {"conditions": table[key], "detector": actual}
        if actual is None or not same(table[key], actual):
            differ[key] = (f"{key} is {actual!r} on the detector ({p.detector}.{prop}) but "
                           f"{table[key] or 'empty'!r} in the operating conditions")
    lines = [f"{k}: conditions {v['conditions']!r}, detector {v['detector']!r}"
             for k, v in compared.items()]
    evidence = f"{p.manager}.{p.property} against {p.detector}\n" + "\n".join(lines)
    if not differ:
        return Result.ok(evidence, compared=compared)
    result = Result.fail(evidence + "\n" + "; ".join(differ.values()), compared=compared,
                         parameters=list(differ))
    result.subject = ", ".join(differ)
    return result


# ---- constants.corrections_status -----------------------------------------------------------

class CorrectionsStatus(_Model):
    """The state and status of each correction device listed by the CAL_MANAGER."""

    manager: str = Field(min_length=1, description="the CAL_MANAGER device")
    list_property: str = "corrections"
    matches: str = Field(min_length=1, description="regular expression (re.search): a "
                         "status that matches it fails the check")

    @field_validator("matches")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from exc
        return value


@check("constants.corrections_status")
def corrections_status(p: CorrectionsStatus, ctx: Context) -> Result:
    """fail when a correction device's status matches `matches`; the subject names the
    first such device (all of them are in `observed.matching`)."""
    from engine.errors import RunbookError

    client, timeout = _karabo(ctx)
    listed = client.get(p.manager, [p.list_property], timeout).get(p.list_property)
    if not isinstance(listed, list) or not listed:
        return Result.unknown(f"{p.manager}.{p.list_property} names no devices: {listed!r}")
    devices = [str(d) for d in listed]
    futures = {d: client.submit("get", timeout, device=d, keys=["state", "status"])
               for d in devices}
    seen: dict[str, str] = {}
    unread: dict[str, str] = {}
    for device, fut in futures.items():
        try:
            got = fut.result(timeout=timeout + 5)
        except (RunbookError, TimeoutError) as exc:
            unread[device] = str(exc) or "no answer"
            continue
        seen[device] = f"{got.get('state')} ({got.get('status', '')})"
    regex = re.compile(p.matches)
    matching = [d for d, text in seen.items() if regex.search(text)]
    lines = [f"{d}: {t}" for d, t in seen.items()] + [f"{d}: unreadable ({r})"
                                                     for d, r in unread.items()]
    observed = {"statuses": seen, "matching": matching, "unreadable": unread}
    if matching:
        result = Result.fail(f"{len(matching)} of {len(devices)} devices match "
                             f"{p.matches!r}\n" + "\n".join(lines), **observed)
        result.subject = matching[0] if len(matching) == 1 else p.manager
        return result
    if unread:
        return Result.unknown(f"{len(unread)} of {len(devices)} devices could not be read",
                              evidence="\n".join(lines), **observed)
    return Result.ok(f"no device of {len(devices)} matches {p.matches!r}\n"
                     + "\n".join(lines), **observed)


# ---- constants.server_logs ------------------------------------------------------------------

class ServerLogs(_Model):
    """Lines of every device server's log (`<karabo_root>/var/log/<server>/current`) on
    each host that contain `pattern` (a fixed string, as `grep -F`)."""

    hosts: list[str] = Field(min_length=1)
    user: str = Field(min_length=1)
    karabo_root: str | None = Field(default=None, description="default /scratch/<user>/karabo")
    pattern: str = Field(min_length=1)
    since: str | None = Field(default=None, min_length=1, description="only the lines "
                              "after the last one containing this (a server's start line)")
    show: int = Field(default=20, ge=1, le=200, description="lines shown per host")


_AWK = r"""
index($0, ENVIRON["RB_SINCE"]) && ENVIRON["RB_SINCE"] != "" { n = 0 }
index($0, ENVIRON["RB_PATTERN"]) { n++; keep[n % k] = $0 }
END { n += 0; print "@@log " name " " n; s = n - k + 1; if (s < 1) s = 1
      for (i = s; i <= n; i++) print keep[i % k] }
"""


def _command(p: ServerLogs) -> str:
    root = p.karabo_root or f"/scratch/{p.user}/karabo"
    env = " ".join(f"{k}={shlex.quote(v or '')}" for k, v in
                   (("RB_PATTERN", p.pattern), ("RB_SINCE", p.since)))
    return "; ".join([
        f"export {env}",
        f"d={shlex.quote(root)}/var/log",
        '[ -d "$d" ] || { echo "$d: no such folder" >&2; exit 3; }',
        f'for f in "$d"/*/current; do [ -r "$f" ] || continue; s=${{f%/current}}; '
        f'awk -v k={p.show} -v name="${{s##*/}}" {shlex.quote(_AWK)} "$f"; done',
    ])


def _parse(text: str) -> dict[str, tuple[int, list[str]]]:
    logs: dict[str, tuple[int, list[str]]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@log "):
            _, name, count = line.split(" ", 2)
            current = []
            logs[name] = (int(count), current)
        elif logs:
            current.append(line)
    return logs


@check("constants.server_logs")
def server_logs(p: ServerLogs, ctx: Context) -> Result:
    """fail when a server log of a host has such lines (the subject names the first such
    `user@host`); a host that cannot be read makes it unknown unless lines were found."""
    from . import _ssh

    pool = _ssh.pool_for(ctx)
    limit = min(pool.settings.command_timeout, ctx.timeout * 0.9)
    command = _command(p)

    def one(host: str) -> tuple[str, Any]:
        try:
            return host, pool.run(host, p.user, command, limit, read_only=True)
        except _ssh.SshError as exc:
            return host, str(exc)

    with ThreadPoolExecutor(max_workers=min(16, len(p.hosts))) as workers:
        answers = dict(workers.map(one, p.hosts))
    found: dict[str, dict[str, int]] = {}
    lines: list[str] = []
    unread: dict[str, str] = {}
    logs = 0
    for host, got in answers.items():
        if isinstance(got, str):
            unread[host] = got
            continue
        if got.exit != 0:
            unread[host] = (got.stderr.strip().splitlines() or [f"exit {got.exit}"])[-1]
            continue
        parsed = _parse(got.stdout)
        logs += len(parsed)
        for server, (count, shown) in parsed.items():
            if count:
                found.setdefault(host, {})[server] = count
                lines += [f"{p.user}@{host}: {server}: {text}" for text in shown]
    total = sum(c for per in found.values() for c in per.values())
    since = f", since the last line with {p.since!r}" if p.since else ""
    head = (f"grep -F {shlex.quote(p.pattern)} <karabo>/var/log/<server>/current{since}: "
            f"{total} line(s) in {sum(len(v) for v in found.values())} of {logs} log(s) on "
            f"{len(p.hosts) - len(unread)} host(s)")
    notes = [f"{p.user}@{h}: unreadable ({r})" for h, r in unread.items()]
    evidence = "\n".join([head, *lines, *notes])
    observed = {"count": total, "found": found, "lines": lines, "unreadable": unread}
    if unread and not found:
        return Result.unknown(f"{len(unread)} of {len(p.hosts)} host(s) could not be read",
                              evidence=evidence, **observed)
    if not found:
        return Result.ok(evidence, **observed)
    result = Result.fail(evidence, **observed)
    result.subject = f"{p.user}@{next(iter(found))}"
    return result
