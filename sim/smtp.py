"""The twin's mail relay: an aiosmtpd sink on loopback that keeps every message it accepts.

The facility's relay is not named in the guidelines and cannot be reached from here, so
the ``sim`` site sends its mail to this sink; tests and people read what arrived with
`sim.mailbox`.  Each delivery is two files in the mail folder, each written to a
temporary name and renamed, the side file first, so that a reader never sees half a
message::

    <dir>/000001.json   {"seq", "mail_from", "rcpt_tos", "received", "peer", "tls",
                         "auth_user", "size"}
    <dir>/000001.eml    the message as it came over the wire

Run as ``python -m sim.smtp --dir DIR [--host 127.0.0.1] [--port 0]``; once it listens it
writes ``DIR/server.json`` (``{host, port, pid, security, auth}``), and it removes that
file again when SIGTERM or SIGINT stops it.  ``--cert/--key`` offer STARTTLS, ``--ssl``
makes the listener implicit TLS with the same pair, and ``--auth-file`` (lines
``user:password``) makes AUTH mandatory, as a real submission relay does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import signal
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["SERVER_FILE", "Sink", "read_users", "main"]

SERVER_FILE = "server.json"
HOSTNAME = "smtp.twin"  # fixed: aiosmtpd would otherwise ask DNS for the machine's FQDN


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def read_users(path: Path) -> dict[str, str]:
    """``user:password`` per line; blank lines and ``#`` comments are skipped."""
    users: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            user, sep, password = line.partition(":")
            if not sep:
                raise SystemExit(f"{path}: a line without ':' (write user:password)")
            users[user.strip()] = password
    return users


class Sink:
    """The aiosmtpd handler (and authenticator) that stores messages in `folder`."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None,
                 implicit_tls: bool = False) -> None:
        self.folder = folder
        self.users = users or {}
        self.implicit_tls = implicit_tls
        seqs = [int(p.stem) for p in folder.glob("*.eml") if p.stem.isdigit()]
        self.next_seq = max(seqs, default=0) + 1

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        known = self.users.get(user)
        given = auth_data.password.decode("utf-8", "replace")
        if known is None or not hmac.compare_digest(known.encode(), given.encode()):
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=user)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8")
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        side = {
            "seq": seq,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "received": datetime.now(UTC).isoformat(),
            "peer": list(session.peer) if isinstance(session.peer, tuple) else session.peer,
            "tls": self.implicit_tls or session.ssl is not None,
            "auth_user": session.auth_data if session.authenticated else None,
            "size": len(content),
        }
        _write_atomic(self.folder / f"{seq:06d}.json", json.dumps(side, indent=1).encode())
        _write_atomic(self.folder / f"{seq:06d}.eml", content)
        return "250 Message accepted for delivery"


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(args: argparse.Namespace) -> None:
    folder: Path = args.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    users = read_users(args.auth_file) if args.auth_file else {}
    sink = Sink(folder, users, implicit_tls=args.ssl)
    tls = _tls_context(args.cert, args.key) if args.cert else None
    implicit = tls if args.ssl else None

    def factory() -> SMTP:
        return SMTP(sink, hostname=HOSTNAME, ident="twin smtp sink",
                    tls_context=None if args.ssl else tls,
                    auth_required=bool(users), auth_require_tls=not args.ssl,
                    authenticator=sink.authenticate if users else None)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host=args.host, port=args.port, ssl=implicit)
    port = server.sockets[0].getsockname()[1]
    security = "ssl" if args.ssl else "starttls" if tls else "plain"
    info = {"host": args.host, "port": port, "pid": os.getpid(), "security": security,
            "auth": bool(users)}
    _write_atomic(folder / SERVER_FILE, json.dumps(info).encode())
    print(f"smtp sink on {args.host}:{port} ({security}), mail in {folder}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            (folder / SERVER_FILE).unlink()
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.smtp")
    parser.add_argument("--dir", type=Path, required=True, help="where messages are kept")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--cert", "--starttls-cert", type=Path, help="PEM certificate")
    parser.add_argument("--key", "--starttls-key", type=Path, help="PEM private key")
    parser.add_argument("--ssl", action="store_true", help="implicit TLS instead of STARTTLS")
    parser.add_argument("--auth-file", type=Path, help="user:password lines; AUTH required")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.ssl and not args.cert:
        parser.error("--ssl needs --cert and --key")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
