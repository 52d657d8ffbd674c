"""Hand a message to the site's relay with smtplib; the one place where its errors,
and those of ssl and socket, become RunbookErrors that name the relay."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

from ..errors import RunbookError, TransportError
from ._settings import MailSettings

__all__ = ["send", "recipients"]


def recipients(message: EmailMessage) -> list[str]:
    """The envelope recipients: every address in To, Cc and Bcc, once each."""
    fields = [str(v) for key in ("To", "Cc", "Bcc") for v in message.get_all(key, [])]
    return list(dict.fromkeys(addr for _name, addr in getaddresses(fields) if addr))


def _tls(settings: MailSettings) -> ssl.SSLContext:
    cafile = str(Path(settings.cafile).expanduser()) if settings.cafile else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise RunbookError(f"cannot load transport.smtp.cafile {cafile}: {exc}") from exc


def _connect(settings: MailSettings, host: str) -> smtplib.SMTP:
    if settings.security == "ssl":
        return smtplib.SMTP_SSL(host, settings.port, timeout=settings.timeout,
                                context=_tls(settings))
    smtp = smtplib.SMTP(host, settings.port, timeout=settings.timeout)
    if settings.security == "starttls":
        try:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise RunbookError(
                    f"the mail relay {settings.address} does not offer STARTTLS: set "
                    "transport.smtp.security to ssl, or to plain for a loopback relay")
            smtp.starttls(context=_tls(settings))
            smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
    return smtp


def _deliver(settings: MailSettings, host: str, password: str | None,
             message: EmailMessage, to: list[str]) -> dict[str, tuple[int, bytes]]:
    with _connect(settings, host) as smtp:
        if settings.user is not None and password is not None:
            smtp.login(settings.user, password)
        return smtp.send_message(message, to_addrs=to)


def send(settings: MailSettings, message: EmailMessage) -> list[str]:
    """Send `message` to everyone in its To, Cc and Bcc; returns the recipients that the
    relay accepted (a relay that refuses all of them is an error)."""
    host = settings.require_host()
    settings.check_safe()
    password = settings.password()
    to = recipients(message)
    if not to:
        raise RunbookError(f"the mail {str(message['Subject'] or '')!r} has no recipients")
    where = f"mail relay {settings.address} ({settings.security})"
    try:
        refused = _deliver(settings, host, password, message, to)
    except smtplib.SMTPAuthenticationError as exc:
        raise TransportError(f"{where} refused the login of '{settings.user}': "
                             f"{exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        said = "; ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in exc.recipients.items())
        raise TransportError(f"{where} refused every recipient: {said}") from exc
    except smtplib.SMTPSenderRefused as exc:
        raise TransportError(f"{where} refused the sender {exc.sender}: "
                             f"{exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPResponseException as exc:
        raise TransportError(f"{where} answered {exc.smtp_code} "
                             f"{_text(exc.smtp_error)}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise TransportError(f"{where}: {exc} (does it need security: starttls or ssl, "
                             "or no user?)") from exc
    except smtplib.SMTPException as exc:
        raise TransportError(f"{where}: {exc}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise TransportError(f"{where}: its certificate is not trusted "
                             f"({exc.verify_message}); set transport.smtp.cafile to the CA "
                             "that signed it") from exc
    except ssl.SSLError as exc:
        raise TransportError(f"{where}: TLS failed: {exc.reason or exc}") from exc
    except TimeoutError as exc:
        raise TransportError(f"{where}: no answer within {settings.timeout:g} s") from exc
    except OSError as exc:
        raise TransportError(f"cannot reach {where}: {exc.strerror or exc}") from exc
    return [r for r in to if r not in refused]


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
