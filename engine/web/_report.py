"""A stored report as a whole HTML page: `engine.report.to_html`, with a way back."""

from __future__ import annotations

import re
from typing import Any

from ..report import to_html
from ..result import Report

__all__ = ["report_html", "with_nav"]


def report_html(data: dict[str, Any]) -> str:
    """The report dict of `Store.run()` as a self-contained HTML document."""
    return to_html(Report.model_validate(data))


_BODY = re.compile(r"<body(\s[^>]*)?>", re.IGNORECASE)


def with_nav(document: str, nav: str) -> str:
    """`nav` (already escaped HTML) just inside the document's body, so a report page leads
    back to the dashboard."""
    match = _BODY.search(document)
    if match is None:
        return nav + document
    return document[:match.end()] + nav + document[match.end():]
