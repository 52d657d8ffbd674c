"""What every form of a report says the same way: times, evidence headings, sections."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["when", "evidence_head", "call_text", "section", "SectionRef"]


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def call_text(check: str | None, params: dict[str, Any] | None) -> str:
    """The check with what it was asked: the command, the device and property, the host."""
    if not check:
        return ""
    shown = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                      for k, v in (params or {}).items())
    return f"{check}({shown})"


def evidence_head(ev: dict[str, Any]) -> str:
    parts = [f"evidence from {ev['step']}"]
    if ev.get("subject"):
        parts.append(f"on {ev['subject']}")
    if ev.get("at"):
        parts.append(f"at {when(ev['at'])}")
    return " ".join(parts)


class SectionRef(dict[str, str]):
    """`id` (e.g. 11.3), `title`, `item` (the text of 11.3#1, when the source names one)."""


@functools.cache
def _outline() -> Any:
    from ..coverage import load_outline
    from ..errors import RunbookError
    try:
        return load_outline()
    except (RunbookError, OSError):  # a report must render without the outline
        return None


def section(source: str) -> SectionRef:
    sid, _, item = source.partition("#")
    ref = SectionRef(id=sid, title="", item="", anchor="section-" + sid.replace(".", "-"))
    outline = _outline()
    found = outline.section(sid) if outline is not None else None
    if found is not None:
        ref["title"] = found.title
        if item:
            text = next((i.text for i in found.items if i.id == source), "")
            ref["item"] = text
    return ref
