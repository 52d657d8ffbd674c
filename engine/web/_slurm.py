"""The Slurm panel's source: `squeue` for the calibration account, as section 4.2.3 runs it,
on the webservice host over the site's own SSH (the dashboard host need not be a Maxwell
node)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..context import Context
from ..errors import RunbookError
from ..runs import Session
from ._views import SlurmSource

__all__ = ["squeue_source"]

_FORMAT = "%i|%j|%T|%M|%P|%R"
_KEYS = ("job_id", "name", "state", "elapsed", "partition", "reason")


def squeue_source(session: Session, timeout: float = 20.0) -> SlurmSource | None:
    """None when the site names no webservice host (nothing to ask)."""
    ctx = session.inventory.context(None)
    hosts = ctx["site"]["groups"].get("webservice") or []
    account = ctx["vars"].get("slurm_user")
    if not hosts or not account:
        return None
    entry = session.registry.get("ssh.command")
    params = entry.model.model_validate({
        "host": hosts[0], "user": account, "timeout": timeout,
        "argv": ["squeue", "-h", "-u", account, "-o", _FORMAT]})

    def jobs() -> Sequence[Mapping[str, Any]]:
        context = Context(mode="diagnose", site=ctx["site"]["name"],
                          transport=ctx["site"]["transport"], timeout=timeout,
                          vars=dict(ctx["vars"]))
        try:
            result = entry.fn(params, context)
        finally:
            context.resources.close()
        if result.outcome != "ok":
            raise RunbookError(result.reason or result.evidence.strip()[-300:]
                               or f"squeue on {hosts[0]} failed")
        lines = str(result.observed.get("stdout", "")).splitlines()
        if len(lines) > 1 and result.observed.get("stdout_truncated"):
            lines = lines[1:]
        return [dict(zip(_KEYS, line.split("|", len(_KEYS) - 1), strict=False))
                for line in lines if line.strip()]
    return jobs
