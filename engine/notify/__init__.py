"""Mail from the engine: the site's relay (`transport.smtp`), messages from templates,
and `send`, which turns every smtplib, ssl and socket error into a RunbookError.

    settings = MailSettings.from_transport(ctx.transport.get("smtp"))
    message = restart_notice(settings.sender, ["spb@xfel.eu"], start, end)
    accepted = send(settings, message)
"""

from ._mail import SUPPORT_CONTACT, compose, mail_templates, render_mail, restart_notice
from ._send import recipients, send
from ._settings import MailSettings, Security

__all__ = [
    "MailSettings",
    "Security",
    "SUPPORT_CONTACT",
    "compose",
    "mail_templates",
    "recipients",
    "render_mail",
    "restart_notice",
    "send",
]
