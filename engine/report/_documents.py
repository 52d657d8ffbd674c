"""The file forms of one report: JSON, Markdown, self-contained HTML, and PDF from it."""

from __future__ import annotations

import json
from typing import Any

import jinja2

from ..result import Report
from ._facts import call_text, evidence_head, section, when

__all__ = ["report_dict", "to_json", "to_markdown", "to_html", "to_pdf"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("engine.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_ENV.filters["when"] = when


def report_dict(report: Report) -> dict[str, Any]:
    """The machine form: `runbook`, `instrument`, `findings`, `unknowns`, then the steps."""
    data = report.model_dump(mode="json")
    data["exit_code"] = report.exit_code
    return data


def to_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2) + "\n"


def _timeline(report: Report, width: int = 640) -> list[dict[str, Any]]:
    """Bars of the steps that took time, placed by when they started: what ran at once,
    and what was slow (an unknown that timed out shows as the long bar)."""
    timed = [s for s in report.steps if s.at is not None and s.duration > 0]
    if not timed or report.started is None:
        return []
    t0 = min(report.started, *(s.at or 0 for s in timed))
    span = max(max((s.at or 0) + s.duration for s in timed) - t0, 1e-3)
    return [{"id": s.id, "outcome": s.outcome, "subject": s.subject or "",
             "x": round((s.at - t0) / span * width, 1) if s.at else 0.0,
             "w": max(round(s.duration / span * width, 1), 1.0),
             "y": i * 14, "duration": s.duration} for i, s in enumerate(timed)]


def _view(report: Report, title: str | None) -> dict[str, Any]:
    findings: list[dict[str, Any]] = []
    for f in report.findings:
        evidence = [{**ev, "head": evidence_head(ev),
                     "call": call_text(ev.get("check"), ev.get("with"))} for ev in f.evidence]
        findings.append({**f.model_dump(mode="json"), "evidence": evidence,
                         "section": section(f.source)})
    cited: dict[str, Any] = {}
    for view in findings:
        ref = view["section"]
        entry = cited.setdefault(ref["id"], {**ref, "items": []})
        if ref["item"] and ref["item"] not in entry["items"]:
            entry["items"].append(ref["item"])
    return {"r": report, "title": title or f"{report.runbook} ({report.mode})",
            "findings": findings, "cited": sorted(cited.values(), key=lambda c: c["id"]),
            "timeline": _timeline(report), "exit_code": report.exit_code}


def to_markdown(report: Report, title: str | None = None) -> str:
    return _ENV.get_template("report.md.j2").render(_view(report, title))


def to_html(report: Report, title: str | None = None) -> str:
    """One file: inline CSS and an inline SVG figure, nothing fetched when it opens."""
    return _ENV.get_template("report.html.j2").render(_view(report, title))


def to_pdf(report: Report, title: str | None = None) -> bytes:
    """The HTML form printed by WeasyPrint, as the facility's reports are PDFs."""
    from weasyprint import HTML  # pango and friends: only when a PDF is asked for
    pdf: bytes = HTML(string=to_html(report, title)).write_pdf()
    return pdf
