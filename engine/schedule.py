"""Health checks on a schedule: `schedules.yaml`, served by APScheduler or handed to the OS.

::

    site: xfel                 # optional: else --site, $RUNBOOK_SITE
    email: true                # default for every schedule
    schedules:
      spb-online:
        instrument: SPB        # or "all"
        cron: "*/15 * * * *"   # minute hour day month weekday; 6 fields: seconds first
        checks: [pipeline, karabo, caldb-remote]   # default: every health check
        email: true
        always: false          # mail even when nothing changed

Each job coalesces missed runs into one, never overlaps itself, and runs a missed start
only within `misfire_grace` seconds of its time.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from ._yaml import load_yaml, problem, pydantic_problems
from .errors import RunbookError, ValidationError

__all__ = ["Schedule", "Schedules", "load_schedules", "default_file", "trigger", "next_runs",
           "crontab", "systemd_units", "serve"]

REPO = Path(__file__).resolve().parent.parent


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instrument: str = Field(min_length=1)
    cron: str = Field(min_length=1)
    checks: list[str] = Field(default_factory=list)
    email: bool | None = None
    always: bool = False


class Schedules(BaseModel):
    """From `load_schedules(path)`; `name` -> Schedule, in file order."""

    model_config = ConfigDict(extra="forbid")

    site: str | None = None
    email: bool = True
    misfire_grace: Annotated[int, Field(ge=1)] = 300
    schedules: dict[str, Schedule] = Field(min_length=1)


def default_file() -> Path:
    return Path(os.environ.get("RUNBOOK_SCHEDULES") or REPO / "schedules.yaml")


def _fields(cron: str) -> list[str]:
    parts = cron.split()
    if len(parts) not in (5, 6):
        raise ValueError(f"'{cron}' has {len(parts)} fields; write 5 (minute hour day month "
                         "weekday) or 6 (seconds first)")
    return parts


def trigger(cron: str, timezone: Any = None) -> Any:
    """The APScheduler cron trigger of a 5- or 6-field expression (ValueError if bad)."""
    from apscheduler.triggers.cron import CronTrigger
    parts = _fields(cron)
    second = parts.pop(0) if len(parts) == 6 else "0"
    minute, hour, day, month, dow = parts
    return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                       day_of_week=_apscheduler_dow(dow), timezone=timezone)


def _apscheduler_dow(field: str) -> str:
    """cron counts weekdays from Sunday=0, APScheduler 3 from Monday=0: use names."""
    names = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]

    def one(part: str) -> str:
        if part.isdigit():
            return names[int(part)] if int(part) < 8 else part
        if "-" in part and all(p.isdigit() for p in part.split("-", 1)):
            a, b = part.split("-", 1)
            return f"{one(a)}-{one(b)}"
        return part
    return ",".join(one(p) for p in field.split(","))


def load_schedules(path: Path) -> Schedules:
    """Every problem of the file at its `file:line:col`, or the schedules."""
    data, positions = load_yaml(path)
    try:
        loaded = Schedules.model_validate(data if data is not None else {})
    except PydanticError as exc:
        raise ValidationError(pydantic_problems(exc, positions, model=Schedules)) from None
    problems = []
    for name, sched in loaded.schedules.items():
        try:
            trigger(sched.cron)
        except ValueError as exc:
            problems.append(problem(positions.at(("schedules", name, "cron")),
                                    f"bad cron expression: {exc}"))
    if problems:
        raise ValidationError(problems)
    return loaded


def next_runs(schedules: Schedules, count: int = 3,
              now: datetime | None = None) -> dict[str, list[datetime]]:
    from tzlocal import get_localzone
    zone = get_localzone()
    now = now or datetime.now(zone)
    out: dict[str, list[datetime]] = {}
    for name, sched in schedules.schedules.items():
        trig, previous, times = trigger(sched.cron, zone), None, []
        moment = now
        for _ in range(count):
            nxt = trig.get_next_fire_time(previous, moment)
            if nxt is None:
                break
            times.append(nxt)
            previous, moment = nxt, nxt
        out[name] = times
    return out


def command(schedules: Schedules, name: str, site: str | None) -> list[str]:
    """The `runbook health` command line that one schedule runs."""
    sched = schedules.schedules[name]
    beside = Path(sys.executable).parent / "runbook"  # this installation's, for cron's PATH
    argv = [str(beside) if beside.exists() else "runbook", "health",
            "--instrument", sched.instrument]
    site = site or schedules.site
    if site:
        argv += ["--site", site]
    for check in sched.checks:
        argv += ["--check", check]
    if sched.email if sched.email is not None else schedules.email:
        argv.append("--email")
    if sched.always:
        argv.append("--always")
    return argv


def crontab(schedules: Schedules, site: str | None = None) -> str:
    lines = ["# runbook health checks (from schedules.yaml); install with `crontab -e`"]
    for name, sched in schedules.schedules.items():
        if len(_fields(sched.cron)) == 6:
            raise RunbookError(f"schedule '{name}': cron has no seconds field; "
                               "use `runbook schedule serve` for it")
        lines.append(f"{sched.cron} {shlex.join(command(schedules, name, site))}"
                     f"  # {name}")
    return "\n".join(lines) + "\n"


_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _calendar_field(field: str, first: int, what: str) -> str:
    if field == "*":
        return "*"
    if field.startswith("*/") and field[2:].isdigit():
        return f"{first}/{field[2:]}"
    out = []
    for part in field.split(","):
        if part.isdigit():
            out.append(part)
        elif "-" in part and all(p.isdigit() for p in part.split("-", 1)):
            a, b = part.split("-", 1)
            out.append(f"{a}..{b}")
        else:
            raise RunbookError(f"cannot write the {what} field '{field}' as a systemd "
                               "OnCalendar; use `runbook schedule serve` or --cron")
    return ",".join(out)


def on_calendar(cron: str) -> str:
    """A 5-field cron expression as systemd's OnCalendar."""
    parts = _fields(cron)
    if len(parts) == 6:
        raise RunbookError(f"'{cron}' has seconds; systemd timers here take 5 fields")
    minute, hour, day, month, dow = parts
    days = ""
    if dow != "*":
        names = []
        for part in dow.split(","):
            if part.isdigit() and int(part) < 8:
                names.append(_DOW[int(part)])
            elif "-" in part and all(p.isdigit() and int(p) < 8 for p in part.split("-", 1)):
                a, b = part.split("-", 1)
                names.append(f"{_DOW[int(a)]}..{_DOW[int(b)]}")
            else:
                raise RunbookError(f"cannot write the weekday field '{dow}' for systemd")
        days = ",".join(names) + " "
    return (f"{days}*-{_calendar_field(month, 1, 'month')}-{_calendar_field(day, 1, 'day')} "
            f"{_calendar_field(hour, 0, 'hour')}:{_calendar_field(minute, 0, 'minute')}:00")


def systemd_units(schedules: Schedules, site: str | None = None) -> dict[str, str]:
    """File name -> text: one service and one timer per schedule (user units)."""
    units = {}
    for name, sched in schedules.schedules.items():
        unit = f"runbook-health-{name}"
        units[f"{unit}.service"] = (
            "[Unit]\nDescription=runbook health checks: " + name + "\n\n[Service]\n"
            "Type=oneshot\nExecStart=" + shlex.join(command(schedules, name, site)) + "\n")
        units[f"{unit}.timer"] = (
            "[Unit]\nDescription=Run " + unit + " on its schedule\n\n[Timer]\n"
            f"OnCalendar={on_calendar(sched.cron)}\nPersistent=true\n\n"
            "[Install]\nWantedBy=timers.target\n")
    return units


@dataclass
class Job:
    name: str
    schedule: Schedule
    email: bool


def serve(schedules: Schedules, run: Callable[[Job], None],
          stop: threading.Event | None = None) -> None:
    """Run every schedule until SIGTERM, SIGINT or `stop`: coalesced, never overlapping."""
    from apscheduler.schedulers.background import BackgroundScheduler
    stop = stop or threading.Event()
    scheduler = BackgroundScheduler()
    for name, sched in schedules.schedules.items():
        job = Job(name, sched, sched.email if sched.email is not None else schedules.email)
        scheduler.add_job(run, trigger(sched.cron), args=[job], id=name, name=name,
                          coalesce=True, max_instances=1,
                          misfire_grace_time=schedules.misfire_grace)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    scheduler.start()
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
