"""What every `runbook` command shares: exit codes, the console, user errors as messages."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["EXIT_OK", "EXIT_FINDINGS", "EXIT_UNKNOWN", "EXIT_USAGE", "console", "fail", "guard"]

# A mistake exits 3 in every command, `validate` included (CONVENTIONS 3 says 1): in
# `diagnose`, 1 means findings, and a script at 3 a.m. must tell the two apart.
EXIT_OK, EXIT_FINDINGS, EXIT_UNKNOWN, EXIT_USAGE = 0, 1, 2, 3


def console() -> Console:
    from rich.console import Console
    return Console(highlight=False, soft_wrap=False)


def fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_USAGE)


def guard(fn: Any) -> Any:
    """Turn a user's mistake (a RunbookError) into its message and exit 3, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import RunbookError
        try:
            return fn(*args, **kwargs)
        except RunbookError as exc:
            fail(str(exc))
    return wrapper


