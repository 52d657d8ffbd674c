"""The terminal form: the path taken as a rich tree, then findings, evidence, unknowns."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..result import Report, StepRecord
from ._facts import call_text, evidence_head, when

__all__ = ["print_report", "print_plan"]

_STYLE = {
    "ok": ("✔", "green"), "fail": ("✘", "red"), "unknown": ("?", "yellow"),
    "finding": ("●", "bold magenta"), "planned": ("·", "cyan"), "timeout": ("⌛", "red"),
    "done": ("✔", "green"), "failed": ("✘", "red"), "declined": ("✋", "yellow"),
    "confirmed": ("✔", "green"), "skipped": ("–", "dim"), "called": ("↳", "blue"),
    "expanded": ("⇉", "blue"), "exhausted": ("↺", "red"),
}


def _first_line(text: str, width: int = 100) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _label(rec: StepRecord) -> Text:
    icon, style = _STYLE.get(rec.outcome, ("•", "white"))
    text = Text()
    text.append(f"{icon} ", style=style)
    text.append(rec.id, style="bold")
    text.append(f" [{rec.source}]", style="dim")
    if rec.subject:
        text.append(f" {rec.subject}", style="cyan")
    text.append(f" {rec.outcome}", style=style)
    detail = rec.reason or _first_line(rec.evidence)
    if rec.kind == "finding":
        detail = rec.evidence
    if detail:
        text.append(f" — {detail}", style="dim" if rec.kind != "finding" else style)
    if rec.duration >= 0.01:
        text.append(f" ({rec.duration:.2f} s)", style="dim")
    return text


def _tree(report: Report, title: str) -> Tree:
    root = Tree(Text(title, style="bold"))
    branches: dict[str, Tree] = {report.runbook: root}
    for rec in report.steps:
        parent = root
        parts = rec.branch.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            if key not in branches:
                branches[key] = parent.add(Text(parts[depth - 1], style="blue"))
            parent = branches[key]
        parent.add(_label(rec))
    return root


def _finding_panel(i: int, f: Any) -> Panel:
    body: list[Any] = []
    meta = f"source {f.source}" + (f" · subject {f.subject}" if f.subject else "")
    body.append(Text(meta, style="dim"))
    for ev in f.evidence:
        body.append(Text(evidence_head(ev) + ":", style="bold"))
        if ev.get("check"):
            body.append(Text(call_text(ev["check"], ev.get("with")), style="cyan"))
        body.append(Text(ev["evidence"].strip()[-1500:] or "(no output)", style="white"))
    if f.remedy:
        body.append(Text.assemble(("remedy: ", "bold green"), f.remedy.strip()))
    if f.contact:
        body.append(Text.assemble(("contact: ", "bold yellow"), f.contact))
    if f.fix:
        body.append(Text.assemble(("fix: ", "bold cyan"), f"runbook plan {f.fix['runbook']}"))
    return Panel(Group(*body), title=f"[bold magenta]Finding {i}: {escape(f.title)}",
                 title_align="left")


def print_report(report: Report, console: Console, title: str) -> None:
    console.print(_tree(report, title))
    for i, f in enumerate(report.findings, 1):
        console.print(_finding_panel(i, f))
    if report.unknowns:
        table = Table(title="Could not tell (unknown)", title_justify="left")
        for col in ("step", "subject", "reason"):
            table.add_column(col)
        for u in report.unknowns:
            table.add_row(u.id, u.subject or "", u.reason)
        console.print(table)
    if report.aborted:
        console.print(f"[bold red]Stopped:[/] {escape(report.aborted)}")
    n, n_unknown = len(report.findings), len(report.unknowns)
    verdict = ("[green]nothing found[/]" if not n and not n_unknown else
               f"[magenta]{n} finding(s)[/]"
               + (f", [yellow]{n_unknown} unknown(s)[/]" if n_unknown else ""))
    console.print(f"{report.runbook} on {report.instrument or '-'} ({report.site}, "
                  f"{when(report.started)}): {verdict}")


def print_plan(doc: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Plan of {doc['runbook']} for {doc['instrument'] or '-'} "
                        f"on site {doc['site']} (hash {doc['hash'][:12]})",
                  title_justify="left", show_lines=False)
    for col in ("#", "step", "kind", "src", "subject", "what", ""):
        table.add_column(col, overflow="fold")
    for i, s in enumerate(doc["steps"], 1):
        r = s["resolved"]
        if s["kind"] in ("check", "action", "wait"):
            what = f"{r.get(s['kind'])} {json.dumps(r.get('with', {}))}"
            if r.get("postcondition"):
                post = r["postcondition"]
                what += f"; resumed: done if {post['check']} {json.dumps(post['with'])}"
        elif s["kind"] == "manual":
            what = r["manual"] + (f"  [{r['confirm']}]" if r.get("confirm") else "")
        elif s["kind"] == "finding":
            what = r["finding"]
        elif s["kind"] == "foreach":
            what = f"over {r['over']}: {', '.join(r['items'])}"
        else:
            what = json.dumps(r)
        mark = "[bold red]DANGER[/]" if r.get("danger") else ""
        if s["outcome"] not in ("planned",):
            mark += f" probed: {s['outcome']}"
        branch = s["branch"].split("/", 1)[1] + " › " if "/" in s["branch"] else ""
        table.add_row(str(i), escape(branch + s["id"]), s["kind"], s["source"],
                      escape(s.get("subject") or ""), escape(what), mark)
    console.print(table)
