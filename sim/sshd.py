"""The twin's SSH gateway: one asyncssh process that answers for every facility host.

It listens on <host address>:22 for each host in hosts.json (or on a fallback port for
all of them when 22 cannot be bound) and tells hosts apart by the address that a
connection arrived on.  A session runs real bash inside that host's namespace (see
`sim.hosts`), as the account's login: $HOME is the account's home, USER/LOGNAME/HOSTNAME
are set, SSH_CLIENT/SSH_CONNECTION as OpenSSH sets them (so bash reads ~/.bashrc, as it
does under the facility's sshd).  Output, exit status and signals come back unchanged;
like OpenSSH, the session ends when bash has exited *and* its output pipes are closed.
``direct-tcpip`` channels (``ssh -L``, ``ProxyJump``/``-W``) are forwarded to twin hosts
only: a facility host name resolves through hosts.json and ``localhost`` means the host
itself.

Run as ``python -m sim.sshd --twin DIR``; it writes ``DIR/ssh/gateway.json`` with the
port once every listener is up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import cast

import asyncssh

from sim import hosts as hostmod
from sim import slurm
from sim.procs import Proc, TwinError, alive

__all__ = ["generate_keys", "KeyPaths", "key_paths", "read_gateway", "main"]

DEFAULT_PORT = 22
FALLBACK_PORT = 2222
ACCEPT_ENV_PREFIXES = ("LANG", "LC_")
_log = logging.getLogger("sim.sshd")


class KeyPaths:
    """Where a twin keeps its SSH material; get one from `key_paths`."""

    def __init__(self, twin_dir: Path) -> None:
        ssh = twin_dir / "ssh"
        self.dir = ssh
        self.identity = ssh / "id_ed25519"
        self.identity_pub = ssh / "id_ed25519.pub"
        self.host_key = ssh / "ssh_host_ed25519_key"
        self.host_key_pub = ssh / "ssh_host_ed25519_key.pub"
        self.gateway = ssh / "gateway.json"


def key_paths(twin_dir: Path) -> KeyPaths:
    return KeyPaths(twin_dir)


def generate_keys(twin_dir: Path) -> KeyPaths:
    """Create the twin's client key pair (for every account) and its host key, once."""
    paths = KeyPaths(twin_dir)
    paths.dir.mkdir(parents=True, exist_ok=True)
    for private, public, comment in (
        (paths.identity, paths.identity_pub, "runbook-twin"),
        (paths.host_key, paths.host_key_pub, "runbook-twin-host"),
    ):
        if private.exists():
            continue
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        private.write_bytes(key.export_private_key("openssh"))
        os.chmod(private, 0o600)
        public.write_bytes(key.export_public_key("openssh"))
    return paths


def read_gateway(twin_dir: Path) -> dict[str, object]:
    """What the running gateway wrote: its pid and port."""
    path = KeyPaths(twin_dir).gateway
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise TwinError(f"the SSH gateway of {twin_dir} is not running ({path} missing)") from exc


class _Gateway:
    """State shared by every connection of the gateway process."""

    def __init__(self, twin_dir: Path) -> None:
        self.twin_dir = twin_dir
        self.hosts = hostmod.load_hosts(twin_dir)
        self.namespaces = hostmod.load_namespaces(twin_dir)
        self.by_address = {h.address: h for h in self.hosts.values()}
        paths = KeyPaths(twin_dir)
        self.host_key = asyncssh.read_private_key(str(paths.host_key))
        self.client_key = asyncssh.read_public_key(str(paths.identity_pub))
        self.children: set[int] = set()
        self.port = DEFAULT_PORT

    def destination(self, host: hostmod.TwinHost, name: str) -> str | None:
        """Where a forwarded connection to `name` goes, seen from `host`; None: refuse."""
        if name in ("localhost", "127.0.0.1", "::1", "ip6-localhost", host.name):
            return host.address
        if name in self.hosts:
            return self.hosts[name].address
        if name in self.by_address or name.startswith("127."):
            return name
        return None


class _HostServer(asyncssh.SSHServer):
    def __init__(self, gateway: _Gateway, host: hostmod.TwinHost) -> None:
        self.gateway = gateway
        self.host = host
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # An account exists while its home does: faults may add one to a running twin.
        return (key.public_data == self.gateway.client_key.public_data
                and "/" not in username and not username.startswith(".")
                and self.host.home(username).is_dir())

    def connection_requested(
            self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool | Awaitable[asyncssh.SSHTCPSession[bytes]]:
        target = self.gateway.destination(self.host, dest_host)
        if target is None or self.conn is None:
            _log.info("%s: refused forwarding to %s:%s", self.host.name, dest_host, dest_port)
            return False
        # asyncssh awaits this coroutine as the channel's session (what `True` would do,
        # but to the twin address instead of the name that only the twin can resolve).
        return cast(Awaitable[asyncssh.SSHTCPSession[bytes]],
                    self.conn.forward_connection(target, dest_port))

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


async def _pump_out(reader: asyncio.StreamReader | None, writer: object) -> None:
    if reader is None:
        return
    while chunk := await reader.read(65536):
        writer.write(chunk)  # type: ignore[attr-defined]
        await writer.drain()  # type: ignore[attr-defined]


async def _pump_in(process: asyncssh.SSHServerProcess, proc: asyncio.subprocess.Process
                   ) -> None:
    stdin = proc.stdin
    if stdin is None:
        return
    try:
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.SignalReceived as sig:
                _forward_signal(proc.pid, sig.signal)
                continue
            except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
                continue
            if not data:
                break
            stdin.write(data)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _session_env(gateway: _Gateway, host: hostmod.TwinHost, account: str,
                 process: asyncssh.SSHServerProcess) -> dict[str, str]:
    peer = process.get_extra_info("peername") or ("127.0.0.1", 0)
    local = process.get_extra_info("sockname") or (host.address, gateway.port)
    extra = {
        "SSH_CLIENT": f"{peer[0]} {peer[1]} {local[1]}",
        "SSH_CONNECTION": f"{peer[0]} {peer[1]} {local[0]} {local[1]}",
    }
    for key, value in process.env.items():
        if isinstance(key, str) and key.startswith(ACCEPT_ENV_PREFIXES):
            extra[key] = str(value)
    term = process.get_terminal_type()
    if term:
        extra["TERM"] = term
    extra.update(slurm.login_env(gateway.twin_dir, host.name, hostmod.LOGIN_PATH))
    return hostmod.login_env(host, account, extra)


async def _run_pty(argv: list[str], env: dict[str, str], process: asyncssh.SSHServerProcess,
                   gateway: _Gateway) -> int:
    """Run with a pseudo-terminal (``ssh -t``, fabric ``pty=True``): one merged stream."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    cols, rows, _, _ = process.get_terminal_size()
    if cols and rows:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        *_with_ctty(argv), stdin=slave, stdout=slave, stderr=slave, env=env,
    )  # not a group leader, so `setsid --ctty` makes the session without forking
    os.close(slave)
    gateway.children.add(proc.pid)
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(master)
        out.put_nowait(data)

    loop.add_reader(master, readable)

    async def feed() -> None:
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as size:
                fcntl.ioctl(master, termios.TIOCSWINSZ,
                            struct.pack("HHHH", size.height, size.width, 0, 0))
                continue
            except asyncssh.SignalReceived as sig:
                _forward_signal(proc.pid, sig.signal)
                continue
            except asyncssh.BreakReceived:
                continue
            if not data:
                return
            os.write(master, data)

    feeder = asyncio.create_task(feed())
    try:
        while data := await out.get():
            process.stdout.write(data)
            await process.stdout.drain()
        return await proc.wait()
    finally:
        feeder.cancel()
        loop.remove_reader(master)
        os.close(master)
        gateway.children.discard(proc.pid)


def _forward_signal(pid: int, name: str) -> None:
    """A client's ``signal`` request (RFC 4254 6.9) goes to the command's process group."""
    try:
        number = signal.Signals[f"SIG{name}"]
    except KeyError:
        _log.info("ignored unknown signal %r", name)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        group = os.getpgid(pid)
        if group != os.getpgrp():  # a pty command not yet in its own session
            os.killpg(group, number)


def _with_ctty(argv: list[str]) -> list[str]:
    split = argv.index("--", argv.index("env")) + 1  # after `env -C <home> --`
    return argv[:split] + ["setsid", "--ctty"] + argv[split:]


async def _handle(gateway: _Gateway, host: hostmod.TwinHost,
                  process: asyncssh.SSHServerProcess) -> None:
    account = process.get_extra_info("username")
    holder: Proc | None = gateway.namespaces.get(host.name)
    if holder is None or not alive(holder.pid, holder.start):
        process.stderr.write(f"{host.name}: host is down\n".encode())
        process.exit(255)
        return
    if process.subsystem is not None:
        process.stderr.write(f"subsystem {process.subsystem} is not available\n".encode())
        process.exit(1)
        return
    env = _session_env(gateway, host, account, process)
    command = process.command
    shell = ["/bin/bash", "-c", command] if command is not None else ["/bin/bash", "-l"]
    argv = hostmod.enter_argv(holder, f"/home/{account}") + shell
    _log.info("%s@%s: %s", account, host.name, command if command is not None else "<shell>")
    if process.get_terminal_type():
        rc = await _run_pty(argv, env, process, gateway)
    else:
        rc = await _run_pipes(argv, env, process, gateway)
    if rc < 0:
        name = signal.Signals(-rc).name.removeprefix("SIG")
        process.exit_with_signal(name)
    else:
        process.exit(rc)


async def _run_pipes(argv: list[str], env: dict[str, str], process: asyncssh.SSHServerProcess,
                     gateway: _Gateway) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
    )
    gateway.children.add(proc.pid)
    feeder = asyncio.create_task(_pump_in(process, proc))
    try:
        await asyncio.gather(_pump_out(proc.stdout, process.stdout),
                             _pump_out(proc.stderr, process.stderr))
        return await proc.wait()
    except (asyncssh.Error, ConnectionError, BrokenPipeError):
        # The client went away: hang up on the command, as sshd does.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGHUP)
        return await proc.wait()
    finally:
        feeder.cancel()
        gateway.children.discard(proc.pid)


async def _serve(twin_dir: Path, port: int, fallback_port: int) -> None:
    gateway = _Gateway(twin_dir)
    servers: list[asyncssh.SSHAcceptor] = []

    async def listen_all(p: int) -> None:
        gateway.port = p
        for host in gateway.hosts.values():
            def factory(h: hostmod.TwinHost = host) -> _HostServer:
                return _HostServer(gateway, h)

            def handler(proc: asyncssh.SSHServerProcess, h: hostmod.TwinHost = host
                        ) -> object:
                return _handle(gateway, h, proc)

            servers.append(await asyncssh.listen(
                host.address, p, server_factory=factory, server_host_keys=[gateway.host_key],
                process_factory=handler, encoding=None, allow_scp=False,
                x11_forwarding=False, agent_forwarding=False, login_timeout=30,
                reuse_address=True, backlog=256,
            ))

    try:
        await listen_all(port)
    except OSError as exc:
        if fallback_port == port:
            raise
        _log.warning("cannot listen on port %s (%s); using %s", port, exc, fallback_port)
        for server in servers:
            server.close()
        servers.clear()
        await listen_all(fallback_port)

    paths = KeyPaths(twin_dir)
    tmp = paths.gateway.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "port": gateway.port,
                               "hosts": len(gateway.hosts)}) + "\n")
    tmp.replace(paths.gateway)
    _log.info("listening on port %s for %d hosts", gateway.port, len(gateway.hosts))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    for pid in list(gateway.children):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGHUP)
    with contextlib.suppress(FileNotFoundError):
        paths.gateway.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.sshd")
    parser.add_argument("--twin", type=Path, required=True)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--fallback-port", type=int, default=FALLBACK_PORT)
    parser.add_argument("--lock-fd", type=int, default=None,
                        help="an inherited fd that holds the twin's slot lock (kept open)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.INFO)  # connections, forwards, closes
    asyncio.run(_serve(args.twin.resolve(), args.port, args.fallback_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
