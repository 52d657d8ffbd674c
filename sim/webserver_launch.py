"""Run the real ``karabo-webserver`` bound to one address (``$RUNBOOK_TWIN_ADDRESS``).

karabo-webserver listens on every interface; in the twin each facility host has its own
loopback address and keeps the facility's port 8080 there, so the listen address is the
only thing changed.  ``$KARABO/bin/karabo-webserver`` execs this module, so the run file
stays the one the guidelines print (11.1).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["main"]


def main() -> int | None:
    from tornado.tcpserver import TCPServer

    address = os.environ.get("RUNBOOK_TWIN_ADDRESS", "127.0.0.1")
    original = TCPServer.listen

    def listen(self: TCPServer, port: int, address_: str | None = None, **kw: Any) -> None:
        original(self, port, address=address, **kw)

    TCPServer.listen = listen  # type: ignore[method-assign,assignment]
    from karabo.interactive.webserver import run_webserver

    sys.argv[0] = "karabo-webserver"
    return run_webserver()


if __name__ == "__main__":
    sys.exit(main())
