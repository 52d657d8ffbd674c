"""One walk's report, rendered four ways (terminal, Markdown, HTML, JSON) and as PDF.

The report arrives already redacted (`engine.walk` masks the site's secrets), so no form
needs to think about them.
"""

from ._documents import report_dict, to_html, to_json, to_markdown, to_pdf
from ._terminal import print_plan, print_report

__all__ = ["report_dict", "to_json", "to_markdown", "to_html", "to_pdf", "print_report",
           "print_plan"]
