"""Which runbook step encodes each actionable item of the guidelines.

The guidelines are the specification; `docs/guidelines-outline.yaml` lists every section
and every actionable bullet in it. An item is done when a runbook step names it in
`source:`, or when the outline says why only a person can do it. Everything else is
missing, and a source that names no item of the outline is a typo, reported where it
was written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticError

from . import _yaml
from .errors import ValidationError

if TYPE_CHECKING:
    from rich.console import Console

    from .loader import Catalog

__all__ = [
    "OUTLINE", "Outline", "OutlineSection", "OutlineItem", "ItemCoverage", "CoverageReport",
    "load_outline", "coverage", "render_coverage", "coverage_json",
]

OUTLINE = Path(__file__).resolve().parent.parent / "docs" / "guidelines-outline.yaml"

SectionId = Annotated[str, Field(pattern=r"^\d+(\.\d+)*$")]
ItemId = Annotated[str, Field(pattern=r"^\d+(\.\d+)*#[1-9]\d*$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Status = Literal["covered", "human-only", "missing"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutlineItem(_Model):
    id: ItemId
    text: Text
    label: str | None = None
    human_only: Text | None = None


class OutlineSection(_Model):
    id: SectionId
    title: Text
    note: str = ""
    items: list[OutlineItem]


def _key(section_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in section_id.split("."))


class Outline(_Model):
    """The guidelines' sections and actionable items; get one with `load_outline(path)`."""

    sections: list[OutlineSection] = Field(min_length=1)

    def section(self, section_id: str) -> OutlineSection | None:
        return next((s for s in self.sections if s.id == section_id), None)

    def item_ids(self) -> set[str]:
        return {item.id for s in self.sections for item in s.items}


def _order_problems(outline: Outline, positions: _yaml.Positions) -> list[str]:
    """Sections in the guidelines' order, once each; items numbered 1, 2, ... in each."""
    out = []
    first: dict[str, _yaml.Pos] = {}
    previous: str | None = None
    for i, section in enumerate(outline.sections):
        pos = positions.at(("sections", i, "id"))
        if section.id in first:
            out.append(f"{pos}: duplicate section '{section.id}' (first at line "
                       f"{first[section.id].line})")
        elif previous is not None and _key(section.id) < _key(previous):
            out.append(f"{pos}: section '{section.id}' comes after '{previous}'; keep the "
                       "guidelines' order")
        first.setdefault(section.id, pos)
        previous = section.id
        for n, item in enumerate(section.items, start=1):
            want = f"{section.id}#{n}"
            if item.id != want:
                out.append(f"{positions.at(('sections', i, 'items', n - 1, 'id'))}: item {n} "
                           f"of section {section.id} must have id '{want}', not '{item.id}' "
                           "(items count from 1 in the guidelines' order)")
    return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_outline(path: Path = OUTLINE) -> Outline:
    """Load and check the outline; every problem is reported at its `file:line:col`."""
    data, positions = _yaml.load_yaml(path, _display(path))
    if not isinstance(data, dict):
        raise ValidationError([f"{positions.at(())}: the outline must be a mapping "
                               "with a 'sections' list"])
    try:
        outline = Outline.model_validate(data)
    except PydanticError as exc:
        raise ValidationError(_yaml.pydantic_problems(exc, positions, model=Outline)) from exc
    problems = _order_problems(outline, positions)
    if problems:
        raise ValidationError(problems)
    return outline


@dataclass(frozen=True)
class ItemCoverage:
    section: str
    id: str
    text: str
    status: Status
    covered_by: list[str]
    human_only: str | None = None
    label: str | None = None


@dataclass
class CoverageReport:
    """What `coverage(catalog, outline_path, sections)` found: per item, and the typos."""

    items: list[ItemCoverage]
    sections: list[OutlineSection]
    problems: list[str] = field(default_factory=list)
    selected: list[str] | None = None

    def count(self, status: Status) -> int:
        return sum(1 for item in self.items if item.status == status)

    @property
    def ok(self) -> bool:
        return not self.problems and self.count("missing") == 0


def _selected(section_id: str, prefixes: list[str] | None) -> bool:
    if prefixes is None:
        return True
    return any(section_id == p or section_id.startswith(p + ".") for p in prefixes)


def _check_prefixes(outline: Outline, prefixes: list[str]) -> None:
    known = [s.id for s in outline.sections]
    bad = []
    for prefix in prefixes:
        if not re.fullmatch(r"\d+(\.\d+)*", prefix):
            bad.append(f"'{prefix}' is not a section number (e.g. 11 or 11.3)")
        elif not any(_selected(s, [prefix]) for s in known):
            bad.append(f"unknown section '{prefix}'{_yaml.did_you_mean(prefix, known)}")
    if bad:
        raise ValidationError(bad)


def _source_problem(source: str, outline: Outline, items: set[str]) -> str | None:
    section_id = source.partition("#")[0]
    section = outline.section(section_id)
    if section is None:
        hint = _yaml.did_you_mean(section_id, [s.id for s in outline.sections])
        return f"source '{source}' names unknown section '{section_id}'{hint}"
    if "#" in source and source not in items:
        hint = _yaml.did_you_mean(source, items)
        return (f"source '{source}' names no item of the outline: section {section_id} "
                f"has {len(section.items)} actionable item(s){hint}")
    return None


def coverage(catalog: Catalog, outline_path: Path = OUTLINE,
             sections: list[str] | None = None) -> CoverageReport:
    """Map every outline item to the steps that name it; `sections` limits the report.

    `sections` are prefixes: "11" selects 11 and 11.1-11.7, never 1 or 12. Problems (sources
    that name no section or item) count only where their section is selected.
    """
    outline = load_outline(outline_path)
    if sections is not None:
        _check_prefixes(outline, sections)
    items = outline.item_ids()
    covered: dict[str, list[str]] = {item: [] for item in items}
    problems: list[str] = []
    for rid in sorted(catalog.runbooks):
        lr = catalog.runbooks[rid]
        sources: list[tuple[str, str, _yaml.Pos]] = [
            (lr.runbook.source, rid, lr.pos("source"))]
        sources += [(step.source, f"{rid}:{sid}", lr.pos("steps", sid, "source"))
                    for sid, step in lr.runbook.steps.items()]
        for source, who, pos in sources:
            if not _selected(source.partition("#")[0], sections):
                continue
            problem = _source_problem(source, outline, items)
            if problem:
                problems.append(f"{pos}: {who}: {problem}")
            elif source in covered:
                covered[source].append(who)
    chosen = [s for s in outline.sections if _selected(s.id, sections)]
    report_items = []
    for section in chosen:
        for item in section.items:
            by = covered[item.id]
            status: Status = "covered" if by else \
                "human-only" if item.human_only else "missing"
            report_items.append(ItemCoverage(section.id, item.id, item.text, status, by,
                                             item.human_only, item.label))
    return CoverageReport(report_items, chosen, problems, sections)


_STYLE = {"covered": "green", "human-only": "cyan", "missing": "bold red"}


def render_coverage(report: CoverageReport, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Guideline coverage", show_lines=False, expand=False)
    for name in ("item", "text", "status", "covered by"):
        table.add_column(name, overflow="fold")
    by_section: dict[str, list[ItemCoverage]] = {}
    for item in report.items:
        by_section.setdefault(item.section, []).append(item)
    for section in report.sections:
        table.add_row(f"[bold]{section.id}[/]", f"[bold]{escape(section.title)}[/]", "",
                      "" if section.items else "[dim]no actionable item[/]")
        for item in by_section.get(section.id, []):
            detail = ", ".join(item.covered_by) or (item.human_only or "")
            table.add_row(item.id, escape(item.text), f"[{_STYLE[item.status]}]{item.status}[/]",
                          escape(detail))
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]{escape(problem)}[/]")
    verdict = "[green]ok[/]" if report.ok else "[bold red]incomplete[/]"
    console.print(f"{len(report.items)} items: {report.count('covered')} covered, "
                  f"{report.count('human-only')} human-only, {report.count('missing')} missing; "
                  f"{len(report.problems)} problem(s): {verdict}")


def coverage_json(report: CoverageReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "selected": report.selected,
        "summary": {"items": len(report.items), "covered": report.count("covered"),
                    "human_only": report.count("human-only"),
                    "missing": report.count("missing"), "problems": len(report.problems)},
        "sections": [{"id": s.id, "title": s.title, "items": [i.id for i in s.items]}
                     for s in report.sections],
        "items": [{"id": i.id, "section": i.section, "label": i.label, "text": i.text,
                   "status": i.status, "covered_by": i.covered_by, "human_only": i.human_only}
                  for i in report.items],
        "problems": report.problems,
    }
