"""Time at the edges: aware datetimes inside, ISO 8601 text outside.

Inside the package every time is an aware datetime; a naive one is refused because it
could mean the caller's zone or UTC. Text (CLI, REST, ZMQ) without an offset is read as
UTC, the zone in which the facility's servers log, and that rule is documented.
"""

from __future__ import annotations

from datetime import UTC, datetime

from caldb.errors import BadRequest

__all__ = ["require_aware", "parse_time", "format_time", "now"]


def now() -> datetime:
    return datetime.now(UTC)


def require_aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise BadRequest(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise BadRequest(f"{what} {value.isoformat()} has no time zone (add one, e.g. +00:00)")
    return value.astimezone(UTC)


def parse_time(text: str | None, what: str, default: datetime | None = None) -> datetime:
    """Parse ISO 8601 text; empty text means ``default`` (CalCat: empty means now)."""
    if text is None or text.strip() == "":
        if default is None:
            raise BadRequest(f"{what} is required")
        return default
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{what} {text!r} is not an ISO 8601 time") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()
