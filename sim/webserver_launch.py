"""Run the real ``karabo-webserver`` bound to one address (``$RUNBOOK_TWIN_ADDRESS``).

karabo-webserver listens on every interface; in the twin each facility host has its own
loopback address and keeps the facility's port 8080 there, so the listen address is the
only thing changed.  ``$KARABO/bin/karabo-webserver`` execs this module, so the run file
stays the one the guidelines print (11.1).

Every service command it carries out (kill, group, up, down, once) is written to the twin's
mutation log (``sim.mutations``), with the caller: the ``X-Karabo-Caller`` header that the
twin's RESTART device sends (its own device id, internal: kept, so that a test can count
how often each server was restarted), else the address.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["main"]


CALLER_HEADER = "X-Karabo-Caller"


def _log_commands() -> None:
    """Wrap the webserver's ``control_service`` so that each command it carries out is
    logged with the caller of the request that asked for it (handlers run one at a time)."""
    from karabo.interactive import webserver as ws

    from sim import mutations

    caller: list[str | None] = [None]
    control = ws.control_service

    def control_service(server_id: str, command: str) -> bool:
        done = bool(control(server_id, command))
        who = caller[0]
        if done:  # RESTART's kills too (internal caller): they count the restarts
            kind = "kill" if command in ("kill", "group") else "service"
            mutations.record(None, kind, server_id, command, who)
        return done

    def traced(handler: Any) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            req = self.request
            caller[0] = req.headers.get(CALLER_HEADER) or req.remote_ip
            try:
                return handler(self, *args, **kwargs)
            finally:
                caller[0] = None
        return method

    ws.control_service = control_service
    ws.DaemonHandler.put = traced(ws.DaemonHandler.put)
    ws.MainHandler.post = traced(ws.MainHandler.post)


def main() -> int | None:
    from tornado.tcpserver import TCPServer

    address = os.environ.get("RUNBOOK_TWIN_ADDRESS", "127.0.0.1")
    original = TCPServer.listen

    def listen(self: TCPServer, port: int, address_: str | None = None, **kw: Any) -> None:
        original(self, port, address=address, **kw)

    TCPServer.listen = listen  # type: ignore[method-assign,assignment]
    _log_commands()
    from karabo.interactive.webserver import run_webserver

    sys.argv[0] = "karabo-webserver"
    return run_webserver()


if __name__ == "__main__":
    sys.exit(main())
