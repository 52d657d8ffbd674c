"""Read what the twin's SMTP sink (`sim.smtp`) received, and start one for a test.

Kept apart from `sim.smtp` so that readers (tests, `sim.twin`) never import aiosmtpd.
Every wait polls with a deadline and says what it waited for.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from sim import procs
from sim.procs import Proc, TwinError

__all__ = ["Delivered", "SinkServer", "messages", "wait_for_messages", "server_info", "server_port",
           "start_sink", "SERVER_FILE"]

SERVER_FILE = "server.json"  # the same name as sim.smtp.SERVER_FILE
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Delivered:
    """One message as the sink stored it; get them with `messages` or `wait_for_messages`."""

    seq: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    received: datetime
    message: EmailMessage
    tls: bool
    auth_user: str | None
    path: Path

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def part(self, subtype: str) -> str:
        """The body of the text/<subtype> part ('plain' or 'html'), decoded."""
        body = self.message.get_body(preferencelist=(subtype,))
        if body is None or body.get_content_subtype() != subtype:
            raise AssertionError(f"{self.path.name} has no text/{subtype} part")
        return str(body.get_content())


def _read(eml: Path) -> Delivered:
    side = json.loads(eml.with_suffix(".json").read_text())
    with eml.open("rb") as fh:
        message = BytesParser(policy=policy.default).parse(fh)
    assert isinstance(message, EmailMessage)
    return Delivered(seq=int(side["seq"]), mail_from=side["mail_from"],
                     rcpt_tos=tuple(side["rcpt_tos"]),
                     received=datetime.fromisoformat(side["received"]), message=message,
                     tls=bool(side["tls"]), auth_user=side.get("auth_user"), path=eml)


def messages(folder: Path) -> list[Delivered]:
    """Every message in `folder`, oldest first (an empty list when there is no folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [_read(p) for p in sorted(folder.glob("[0-9]*.eml"))]


def wait_for_messages(folder: Path, count: int, timeout: float = 5.0) -> list[Delivered]:
    """Every message in `folder`, once there are at least `count`; AssertionError at the
    deadline, naming what did arrive."""
    deadline = time.monotonic() + timeout
    while True:
        got = messages(folder)
        if len(got) >= count:
            return got
        if time.monotonic() >= deadline:
            seen = "; ".join(f"{d.subject!r} to {', '.join(d.rcpt_tos)}" for d in got)
            raise AssertionError(f"waited {timeout:g} s for {count} message(s) in {folder}, "
                                 f"got {len(got)}" + (f": {seen}" if seen else ""))
        time.sleep(0.02)


def server_info(folder: Path) -> dict[str, object] | None:
    """What the running sink wrote (host, port, pid, security, auth), or None."""
    try:
        data: dict[str, object] = json.loads((Path(folder) / SERVER_FILE).read_text())
    except FileNotFoundError:
        return None
    return data


def server_port(folder: Path) -> int:
    """The port of the sink serving `folder`; TwinError when none is running."""
    info = server_info(folder)
    if info is None:
        raise TwinError(f"no SMTP sink is serving {folder} (no {SERVER_FILE})")
    return int(str(info["port"]))


@dataclass(frozen=True)
class SinkServer:
    """A running sink; get one from `start_sink`, end it with `stop()`."""

    proc: Proc
    folder: Path
    host: str
    port: int

    def stop(self) -> None:
        procs.stop(self.proc)


def start_sink(folder: Path, *options: str, host: str = "127.0.0.1",
               timeout: float = 10.0) -> SinkServer:
    """Start ``python -m sim.smtp`` on a free port of `host` and wait until it listens;
    `options` are more command-line options (``--cert``, ``--ssl``, ``--auth-file``)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SERVER_FILE).unlink(missing_ok=True)
    proc = procs.start([sys.executable, "-m", "sim.smtp", "--dir", str(folder), "--host", host,
                        "--port", "0", *options],
                       name="smtp", log=folder.parent / f"{folder.name}-smtp.log",
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        procs.wait_for(lambda: server_info(folder) is not None, timeout=timeout,
                       what=f"the SMTP sink to write {folder / SERVER_FILE}", proc=proc)
    except TwinError:
        procs.stop(proc)
        raise
    return SinkServer(proc, folder, host, server_port(folder))
