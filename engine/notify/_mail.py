"""Mail bodies: a text part for every reader and an HTML part for those who want one.

Templates live in ``templates/<name>.txt`` and ``templates/<name>.html``. The text
template sets the subject with ``{% set subject = ... %}``, so that one file holds the
words of a notice; HTML is autoescaped, text is not. A variable that a template needs
and is not given is an error naming it, never an empty gap in a mail to the facility.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    UndefinedError,
    select_autoescape,
)

from ..errors import RunbookError

__all__ = ["compose", "render_mail", "mail_templates", "restart_notice", "SUPPORT_CONTACT"]

SUPPORT_CONTACT = "det-support@xfel.eu"  # guidelines 4.3
_ADDRESS = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")


def _when(value: Any) -> str:
    """Times as people at the facility write them: datetimes, and epoch seconds (as UTC);
    strings are kept as given."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        zone = value.strftime(" %Z") if value.tzinfo else ""
        return value.strftime("%Y-%m-%d %H:%M") + zone
    return str(value)


@functools.cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("engine.notify", "templates"),
                      autoescape=select_autoescape(enabled_extensions=("html",),
                                                   default_for_string=False),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["when"] = _when
    return env


def mail_templates() -> list[str]:
    """Names that have both a text and an HTML template."""
    names = _env().list_templates()
    return sorted(n[:-4] for n in names if n.endswith(".txt") and n[:-4] + ".html" in names)


def render_mail(template_name: str, **variables: Any) -> tuple[str, str, str]:
    """(subject, text, html) of the template `template_name` with `variables`."""
    env = _env()
    try:
        text_template = env.get_template(f"{template_name}.txt")
        html_template = env.get_template(f"{template_name}.html")
    except TemplateNotFound as exc:
        known = ", ".join(mail_templates()) or "none"
        raise RunbookError(f"no mail template '{template_name}' (templates: {known})") from exc
    try:
        module = text_template.make_module(variables)
        subject = " ".join(str(getattr(module, "subject", "")).split())
        text = str(module)
        html = html_template.render(variables, subject=subject)
    except UndefinedError as exc:
        raise RunbookError(f"mail template '{template_name}': {exc.message}") from exc
    except TemplateError as exc:
        raise RunbookError(f"mail template '{template_name}': {exc}") from exc
    if not subject:
        raise RunbookError(f"mail template '{template_name}.txt' sets no subject")
    return subject, text, html


def _addresses(field: str, values: Iterable[str]) -> list[str]:
    out = [str(v).strip() for v in values]
    bad = [v for v in out if not _ADDRESS.match(v)]
    if bad:
        raise RunbookError(f"{field}: not a mail address: {', '.join(map(repr, bad))}")
    return out


def compose(sender: str, to: Sequence[str], subject: str, text: str, html: str,
            cc: Sequence[str] | None = None) -> EmailMessage:
    """A multipart/alternative message: `text` first, then `html` (what clients prefer)."""
    [sender] = _addresses("sender", [sender])
    to, cc = _addresses("to", to), _addresses("cc", cc or [])
    if not to:
        raise RunbookError(f"the mail {subject!r} has no recipient in 'to'")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def restart_notice(sender: str, to: Sequence[str], start: Any, end: Any,
                   contact: str = SUPPORT_CONTACT, reason: str | None = None,
                   cc: Sequence[str] | None = None) -> EmailMessage:
    """The notice of guidelines 4.3 step 4, after the calibration webservice was restarted:
    the window from `start` to `end` in which requests may have been lost."""
    subject, text, html = render_mail("restart-notice", start=start, end=end,
                                      contact=contact, reason=reason)
    return compose(sender, to, subject, text, html, cc=cc)
