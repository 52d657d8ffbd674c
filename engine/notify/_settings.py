"""The site's mail relay as `send` needs it, with the password looked up only when used.

The password is resolved at send time, not at load time, so that planning, validating or
diagnosing with a site never needs the secret, and a rotated password is picked up by the
next message.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic

from .._inventory_models import SmtpTransport
from ..errors import RunbookError

__all__ = ["MailSettings", "Security"]

Security = Literal["plain", "starttls", "ssl"]


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MailSettings:
    """`transport.smtp` of a site. Get one with
    ``MailSettings.from_transport(ctx.transport.get("smtp"))`` in a check or action, or
    from ``inventory.context(None)["site"]["transport"]["smtp"]``."""

    host: str | None = None
    port: int = 25
    security: Security = "starttls"
    sender: str = "det-support@xfel.eu"
    timeout: float = 10.0
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    cafile: str | None = None

    @classmethod
    def from_transport(cls, smtp: Mapping[str, Any] | None) -> MailSettings:
        """From the plain dict of the template context (null keys are left out there)."""
        try:
            model = SmtpTransport.model_validate(dict(smtp or {}))
        except pydantic.ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'smtp'}: {e['msg']}"
                               for e in exc.errors())
            raise RunbookError(f"transport.smtp of this site is not valid: {detail}") from exc
        return cls(**model.model_dump(exclude={"password"}))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def require_host(self) -> str:
        """The relay's host, or a RunbookError when this site sends no mail."""
        if not self.host:
            raise RunbookError(
                "mail is not configured for this site: transport.smtp.host is null. Name "
                "the relay in a site overlay (see docs/inventory.md, 'Mail')")
        return self.host

    def password(self) -> str | None:
        """The password from `password_env` or `password_file`; None when no `user`."""
        if self.user is None:
            return None
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise RunbookError(
                    f"the mail password for '{self.user}' is read from the environment "
                    f"variable {self.password_env}, which is not set (or empty)")
            return value
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise RunbookError(f"cannot read the mail password for '{self.user}' from "
                                   f"{path}: {reason}") from exc
            value = text.rstrip("\r\n")
            if not value:
                raise RunbookError(f"the mail password file {path} is empty")
            return value
        raise RunbookError(f"mail user '{self.user}' has neither password_env nor "
                           "password_file")

    def check_safe(self) -> None:
        """Refuse to log in over an unencrypted connection that leaves this machine."""
        if self.user is not None and self.security == "plain" and self.host \
                and not _loopback(self.host):
            raise RunbookError(
                f"refused to send the mail password of '{self.user}' unencrypted to "
                f"{self.address}: set transport.smtp.security to starttls or ssl")
