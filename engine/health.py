"""Scheduled health checks: short diagnoses run unattended, one digest per instrument.

A health check is a diagnosis runbook in a folder named ``health`` (``runbooks/health/``).
Each run is kept in the store, so that the next one can say what is new and what was
resolved, and mail only when something changed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from .errors import RunbookError
from .loader import LoadedRunbook
from .result import Report
from .runs import Session, walk
from .store import Store

if TYPE_CHECKING:
    from .notify import MailSettings

__all__ = ["HealthRun", "health_checks", "check_line", "run_health", "record", "recipients",
           "digest", "health", "STATUS_ORDER"]

STATUS_ORDER = ("ok", "unknown", "fail")  # worst last


def health_checks(session: Session, names: list[str] | None = None) -> list[LoadedRunbook]:
    """The health runbooks, all or those named (by id, with or without `health-`)."""
    found = {lr.runbook.id: lr for lr in session.catalog.runbooks.values()
             if "health" in lr.path.parent.parts and lr.runbook.kind == "diagnosis"}
    if not names:
        return [found[k] for k in sorted(found)]
    chosen = []
    for name in names:
        key = name if name in found else f"health-{name}"
        if key not in found:
            raise RunbookError(f"unknown health check '{name}'; known: "
                               f"{', '.join(sorted(found)) or 'none'}")
        chosen.append(found[key])
    return chosen


def check_line(title: str, report: Report, run_id: str | None) -> dict[str, Any]:
    """One line of a digest: the check's status and what it found or could not tell."""
    status = ("fail" if report.findings or report.aborted
              else "unknown" if report.unknowns else "ok")
    findings = [{"id": f.id, "title": f.title, "subject": f.subject, "source": f.source,
                 "remedy": f.remedy} for f in report.findings]
    unknowns = [{"id": u.id, "subject": u.subject, "reason": u.reason}
                for u in report.unknowns]
    summary = str(findings[0]["title"] if findings else report.aborted or
                  (f"could not tell: {unknowns[0]['reason']}" if unknowns else "ok"))
    extra = len(findings) + len(unknowns) - 1
    if status != "ok" and extra > 0:
        summary += f" (and {extra} more)"
    return {"check": report.runbook, "title": title, "source": "", "status": status,
            "summary": summary, "findings": findings, "unknowns": unknowns,
            "run_id": run_id}


def _problems(checks: list[dict[str, Any]]) -> dict[str, str]:
    """What a digest compares between runs, keyed so that the same problem matches."""
    out: dict[str, str] = {}
    for c in checks:
        for f in c["findings"]:
            out[f"{c['check']}:{f['id']}:{f['subject'] or ''}"] = (
                f"{f['title']}" + (f" ({f['subject']})" if f["subject"] else ""))
        for u in c["unknowns"]:
            out[f"{c['check']}:?{u['id']}:{u['subject'] or ''}"] = (
                f"{c['title']}: could not tell: {u['reason']}")
    return out


@dataclass
class HealthRun:
    """One instrument's health run: from `run_health`."""

    site: str
    instrument: str
    started: float
    finished: float
    checks: list[dict[str, Any]]
    new: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    first: bool = False
    mailed: list[str] | None = None
    id: int | None = None

    @property
    def worst(self) -> str:
        return max((c["status"] for c in self.checks), key=STATUS_ORDER.index, default="ok")

    @property
    def changed(self) -> bool:
        """Worth a mail: something new or resolved, or a first run that is not all ok."""
        return bool(self.new or self.resolved or (self.first and self.worst != "ok"))


def run_health(session: Session, instrument: str, store: Store,
               checks: list[str] | None = None, concurrency: int = 8) -> HealthRun:
    """Walk every health check for `instrument` at once and compare with the last run."""
    chosen = health_checks(session, checks)
    name = session.inventory.instrument(instrument).name
    started = time.time()

    def one(lr: LoadedRunbook) -> dict[str, Any]:
        report, run_id = walk(session, "diagnose", lr.runbook.id, {}, instrument=name,
                              store=store)
        line = check_line(lr.runbook.title, report, run_id)
        line["source"] = lr.runbook.source
        return line

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(chosen)))) as pool:
        lines = list(pool.map(one, chosen))
    site = session.inventory.name
    previous = store.last_health(site, name)
    ids = {line["check"] for line in lines}
    # Only checks run both times: another schedule's set of checks resolves nothing.
    now = _problems(lines)
    before = _problems([c for c in previous["checks"] if c["check"] in ids]) if previous else {}
    return HealthRun(site=site, instrument=name, started=started, finished=time.time(),
                     checks=lines, new=[now[k] for k in now if k not in before],
                     resolved=[before[k] for k in before if k not in now],
                     first=previous is None)


def record(store: Store, run: HealthRun) -> HealthRun:
    run.id = store.add_health(run.site, run.instrument, run.started, run.finished, run.worst,
                              run.checks, run.new, run.resolved, run.mailed)
    return run


def recipients(session: Session, instrument: str) -> list[str]:
    """The instrument's addresses, then det-support (the site's `support_mail`)."""
    ctx = session.inventory.context(instrument)
    support = ctx["vars"].get("support_mail")
    return list(dict.fromkeys([*ctx["instrument"].get("mail", []),
                               *([support] if support else [])]))


def _mail_settings(session: Session) -> MailSettings:
    from .notify import MailSettings
    return MailSettings.from_transport(
        session.inventory.context(None)["site"]["transport"].get("smtp"))


def digest(session: Session, run: HealthRun, url: str | None = None) -> EmailMessage:
    from datetime import UTC, datetime

    from .notify import compose, render_mail
    settings = _mail_settings(session)
    subject, text, html = render_mail(
        "digest", site=run.site, instrument=run.instrument, worst=run.worst,
        checks=run.checks, new=run.new, resolved=run.resolved, first=run.first, url=url,
        started=datetime.fromtimestamp(run.started, UTC))
    return compose(settings.sender, recipients(session, run.instrument), subject, text, html)


def health(session: Session, instruments: list[str], store: Store, *,
           checks: list[str] | None = None, email: bool = False, always: bool = False,
           url: str | None = None) -> list[HealthRun]:
    """Run, compare, mail when something changed (or `always`), and keep every run."""
    from .notify import send
    runs = []
    for instrument in instruments:
        run = run_health(session, instrument, store, checks)
        if email and (always or run.changed):
            run.mailed = send(_mail_settings(session), digest(session, run, url))
        runs.append(record(store, run))
    return runs
