"""The errors of the SSH transport (`checks._ssh` re-exports them)."""

from __future__ import annotations

from engine.errors import TransportError

__all__ = ["SshError", "SshTimeout", "UnsafeCommand"]


class SshError(TransportError):
    """A host could not be reached, refused us, or did not answer in time."""


class SshTimeout(SshError):
    """A command (or the connection for it) took longer than its timeout."""


class UnsafeCommand(SshError):
    """A value that cannot reach the remote side as a literal (a NUL byte ends a command
    line there), or a host or account name that is no name; refused before connecting."""
