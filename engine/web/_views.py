"""What the templates show, built from the store's rows.

Health rows are written by `runbook health` and may come from an older version of it, so
each field is read with a default here once, and the templates (StrictUndefined) can
trust every name they use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InstrumentHealth", "SlurmPanel", "SlurmSource", "ago", "health_view",
           "slurm_panel", "utc"]

#: a Slurm source returns the calibration account's jobs, one mapping each
#: (job_id, name, state, elapsed, partition, reason; missing keys show empty)
SlurmSource = Callable[[], Sequence[Mapping[str, Any]]]

_STATUSES = ("ok", "fail", "unknown")


def utc(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def ago(stamp: float | None, now: float | None = None) -> str:
    if stamp is None:
        return ""
    seconds = max(0, int((now or time.time()) - stamp))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _finding(item: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(item.get(key)) for key in ("id", "title", "subject", "source", "remedy")}


def _unknown(item: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(item.get(key)) for key in ("id", "subject", "reason")}


def _check(item: Mapping[str, Any]) -> dict[str, Any]:
    status = _text(item.get("status"))
    return {
        "check": _text(item.get("check")), "title": _text(item.get("title") or item.get("check")),
        "source": _text(item.get("source")),
        "status": status if status in _STATUSES else "unknown",
        "summary": _text(item.get("summary")), "run_id": item.get("run_id") or None,
        "findings": [_finding(f) for f in item.get("findings") or [] if isinstance(f, Mapping)],
        "unknowns": [_unknown(u) for u in item.get("unknowns") or [] if isinstance(u, Mapping)],
    }


@dataclass
class InstrumentHealth:
    """One instrument's card: its newest health run, or none yet (`row is None`)."""

    site: str
    instrument: str
    diagnosable: bool
    row: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)


def health_view(rows: Sequence[Mapping[str, Any]], site: str | None,
                instruments: Sequence[str]) -> list[InstrumentHealth]:
    """The inventory's instruments in file order (with or without history), then any other
    (site, instrument) that the store has seen."""
    cards: dict[tuple[str, str], InstrumentHealth] = {}
    for name in instruments:
        cards[(site or "", name)] = InstrumentHealth(site or "", name, diagnosable=True)
    for row in rows:
        key = (_text(row.get("site")), _text(row.get("instrument")))
        card = cards.setdefault(key, InstrumentHealth(*key, diagnosable=False))
        worst = _text(row.get("worst"))
        card.row = {
            "started": row.get("started"), "finished": row.get("finished"),
            "worst": worst if worst in _STATUSES else "unknown",
            "new": list(row.get("new") or []), "resolved": list(row.get("resolved") or []),
            "mailed": row.get("mailed"),
        }
        card.checks = [_check(c) for c in row.get("checks") or [] if isinstance(c, Mapping)]
    return list(cards.values())


@dataclass
class SlurmPanel:
    """The Slurm panel: its jobs, or why there are none to show."""

    problem: str = ""
    jobs: list[dict[str, str]] = field(default_factory=list)
    running: int = 0
    pending: int = 0


_JOB_KEYS = ("job_id", "name", "state", "elapsed", "partition", "reason")


def slurm_panel(source: SlurmSource | None) -> SlurmPanel:
    """Ask the source once per page; a failing source is shown on the panel rather than
    failing the whole page, which is there to tell what else is wrong."""
    if source is None:
        return SlurmPanel(problem="no source configured")
    try:
        rows = list(source())
    except Exception as exc:  # a plug-in: whatever it raises is shown
        return SlurmPanel(problem=f"the Slurm source failed: {type(exc).__name__}: {exc}")
    jobs = [{key: _text(row.get(key)) for key in _JOB_KEYS} for row in rows]
    states = [job["state"].upper() for job in jobs]
    return SlurmPanel(jobs=jobs, running=sum(s in ("R", "RUNNING") for s in states),
                      pending=sum(s in ("PD", "PENDING") for s in states))
