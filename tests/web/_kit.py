"""What the dashboard's tests share: a lab diagnosis, a stored fault, a served app."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from engine.store import Store

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own download does not work here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]


def artifacts() -> Path:
    """Where screenshots go: `$RUNBOOK_ARTIFACTS`, else `artifacts/` (ignored by git)."""
    folder = Path(os.environ.get("RUNBOOK_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# A 10.1-shaped diagnosis for the `local` site: the marker file that a writer should
# keep fresh is missing, so it reports one finding without any facility or twin.
LAB_MARKER = """\
id: lab-marker
title: Lab - is the writer's marker file there?
kind: diagnosis
source: "10.1"
params:
  instrument: {type: instrument}
  marker: {type: str, default: "MARKER"}
start: marker
steps:
  marker:
    source: "10.1"
    check: local.file
    with: {path: "{{ params.marker }}", min_size: 1}
    on: {ok: end, fail: no-marker, unknown: end}
  no-marker:
    source: "10.1"
    finding: "No marker file at {{ params.marker }}"
    evidence: [marker]
    remedy: Start the writer, then check that it writes into this folder.
"""

#: a failed health check as `runbook health` stores it (section 10.2)
FAULT_CHECK: dict[str, Any] = {
    "check": "no-online-data", "title": "No data on online views", "source": "10.2",
    "status": "fail", "summary": "1 finding", "run_id": None,
    "findings": [{"id": "daq-not-monitoring",
                  "title": "The DAQ is in neither MONITOR nor RECORD state",
                  "subject": "LAB_DAQ/DM/RUN_CONTROLLER", "source": "10.2",
                  "remedy": "Put the DAQ into MONITOR."}],
    "unknowns": [],
}


def add_fault(store: Store, instrument: str = "LAB", site: str = "local",
              checks: list[dict[str, Any]] | None = None) -> None:
    now = time.time()
    store.add_health(site, instrument, now - 5, now, "fail", checks or [FAULT_CHECK],
                     new=["no-online-data/daq-not-monitoring"], resolved=[], mailed=None)


@contextmanager
def serving(app: ASGIApp, timeout: float = 10.0) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread; yield its base URL, stop it on the way out.

    The socket is bound here, before uvicorn starts, so no other process can take the
    port between choosing it and serving on it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the dashboard's server stopped while starting")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard did not start on port {port} in {timeout} s")
        time.sleep(0.01)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout):
        pass
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
