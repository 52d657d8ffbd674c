"""Mail as a runbook step: `notify.send` renders a template of `engine.notify` and sends it
through the site's relay (`transport.smtp`).

Sending mail changes the world (people act on it), so it is an action: `diagnose` and
`plan` never call it, and a plan shows the resolved recipients and variables instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.context import Context
from engine.notify import MailSettings, compose, mail_templates, recipients, render_mail, send
from engine.registry import action, guard_mutation
from engine.result import Result

__all__ = ["NotifySend", "notify_send"]


def _address(value: str) -> str:
    if "{{" in value or "{%" in value:
        return value  # checked again once the walker has rendered it
    local, at, domain = value.partition("@")
    if not (local and at and "." in domain) or any(c in value for c in " ,<>\r\n"):
        raise ValueError(f"'{value}' is not a mail address")
    return value


class NotifySend(BaseModel):
    """``with: {template: restart-notice, to: [...], cc: [...], vars: {start, end}}``."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1)
    to: list[str] = Field(min_length=1)
    cc: list[str] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _known_template(cls, name: str) -> str:
        known = mail_templates()
        if name not in known:
            raise ValueError(f"no mail template '{name}' (templates: {', '.join(known)})")
        return name

    @field_validator("to", "cc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_address(v) for v in values]


@action("notify.send")
def notify_send(p: NotifySend, ctx: Context) -> Result:
    """Send one mail; recipients that the relay refuses make the action fail."""
    settings = MailSettings.from_transport(ctx.transport.get("smtp"))
    # "now": the time of sending, e.g. the end of the window of a restart notice (4.3).
    values = {k: datetime.now(UTC) if v == "now" else v for k, v in p.vars.items()}
    subject, text, html = render_mail(p.template, **values)
    message = compose(settings.sender, p.to, subject, text, html, cc=p.cc)
    guard_mutation(f"send the mail {subject!r} to {', '.join(p.to)}")
    accepted = send(settings, message)
    refused = [r for r in recipients(message) if r not in accepted]
    observed = {"subject": subject, "to": p.to, "cc": p.cc, "accepted": accepted,
                "refused": refused, "relay": settings.address,
                "message_id": str(message["Message-ID"])}
    evidence = (f"sent {subject!r} from {settings.sender} to {', '.join(accepted)} "
                f"through {settings.address} ({settings.security})")
    if refused:
        return Result.fail(f"{evidence}; the relay refused {', '.join(refused)}", **observed)
    return Result.ok(evidence, **observed)
