"""Secrets out of everything the engine writes or shows: reports, mails, the store.

A secret is any string value under a key that names one (password, token, secret,
identity, private key, credential) anywhere in the site. Replaced by ``***`` wherever it
occurs, also inside longer text such as a command line or a log excerpt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["SECRET_KEY", "MASK", "secret_values", "redact"]

SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|identity|private|credential|api_?key|key_?file",
    re.IGNORECASE)
# Where a secret is kept, not the secret: `password_env` names a variable, `password_file`
# a path; masking them would hide what an error message needs to say.
_POINTER = re.compile(r"pass(word|wd|phrase)?_(env|file)$", re.IGNORECASE)
MASK = "***"
_MIN = 3  # shorter values would mask ordinary words; nobody uses a 2-letter password


def secret_values(data: Any, secret: bool = False) -> set[str]:
    """String values under secret-looking keys, at any depth of a plain structure."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            named = bool(SECRET_KEY.search(str(key))) and not _POINTER.search(str(key))
            found |= secret_values(value, secret or named)
    elif isinstance(data, list | tuple):
        for value in data:
            found |= secret_values(value, secret)
    elif secret and isinstance(data, str) and len(data) >= _MIN:
        found.add(data)
    return found


def redact(data: Any, secrets: Iterable[str]) -> Any:
    """A copy of a plain structure (dicts, lists, strings) with every secret masked."""
    ordered = sorted({s for s in secrets if len(s) >= _MIN}, key=len, reverse=True)
    if not ordered:
        return data
    pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(MASK, value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return walk(data)
