"""`runbook serve`: the dashboard under uvicorn."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from ..errors import RunbookError
from ..runs import Session
from ..store import Store
from ._views import SlurmSource
from .app import create_app

__all__ = ["serve"]

log = logging.getLogger(__name__)


def _state_file(state: Path | None) -> Path | None:
    if state is not None and state.is_dir():
        return state / "runbook.sqlite"
    return state


def serve(host: str = "127.0.0.1", port: int = 8090, site: str | None = None,
          reports: Path | None = None, state: Path | None = None, *,
          runbooks: list[Path] | None = None, slurm: SlurmSource | None = None) -> None:
    """Serve the dashboard until interrupted.

    `state` is the state file, or a folder holding `runbook.sqlite` (default: the one
    `runbook` itself uses). The site and runbooks load before the port opens, so that a
    mistake in them stops here with its message. The page has no login: it binds loopback
    unless told otherwise, and is meant to be reached through an ssh tunnel.
    """
    import uvicorn

    if reports is not None and not reports.is_dir():
        raise RunbookError(f"--reports {reports}: no such folder")
    store = Store.open(_state_file(state))
    session = Session.load(site, list(runbooks) if runbooks else None)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("serving the dashboard on %s: anyone who reaches it can start diagnoses",
                    host)
    if slurm is None:
        from ._slurm import squeue_source
        slurm = squeue_source(session)
    app = create_app(store, lambda: session, reports=reports, slurm=slurm)
    uvicorn.run(app, host=host, port=port, log_level="info")
