"""The SSH transport of the ssh.* checks: fabric connections, one per (account, host) per walk.

Fabric resolves each host through the site's ssh_config (HostName, Port, ProxyJump,
IdentityFile, UserKnownHostsFile), so the twin and the facility are reached the same way.
What fabric and paramiko do slowly or unsafely by default is done here once:

- the ssh_config is parsed once per file version and each host's lookup is cached (paramiko
  scans every Host block and resolves the local user name on each lookup);
- the private key and the known_hosts file are read once (paramiko re-reads them for every
  connection), and unknown host keys are rejected unless the ssh_config says otherwise
  (fabric's default is to accept any host key);
- the TCP socket is opened here with TCP_NODELAY (paramiko leaves Nagle on, which costs
  tens of milliseconds per handshake round trip);
- `Connection` objects are built under one lock with their own `connect_kwargs`: fabric
  otherwise writes the IdentityFile list into the shared `Config` on every construction;
- commands run on a paramiko channel of the open connection, read with `select`, instead of
  through invoke's runner, which starts threads and polls for every command.

Quoting is done here: callers hand argument lists to `command_line`, never shell strings
built from values.
"""

from __future__ import annotations

import os
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fabric
import paramiko

from engine.context import Context
from engine.errors import TransportError

__all__ = [
    "SshError", "SshTimeout", "SshSettings", "CommandResult", "SshPool", "pool_for",
    "prefetch", "command_line", "combined_script", "split_combined",
]

MAX_OUTPUT = 8 * 1024 * 1024
BATCH_WINDOW = 0.004
"""Seconds without a new command to a host after which its batch is sent."""
BATCH_MAX_WAIT = 0.025
"""Seconds the first command of a batch waits at most for others to join it."""
MAX_BATCH = 16
_BUILD_LOCK = threading.Lock()


class SshError(TransportError):
    """A host could not be reached, refused us, or did not answer in time."""


class SshTimeout(SshError):
    """A command (or the connection for it) took longer than its timeout."""


@dataclass(frozen=True)
class SshSettings:
    """The site's `transport.ssh`; get one with `SshSettings.from_transport(ctx.transport)`."""

    config: str | None = None
    known_hosts: str | None = None
    identity: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    concurrency: int = 32

    @classmethod
    def from_transport(cls, transport: Mapping[str, Any]) -> SshSettings:
        raw = dict(transport.get("ssh") or {})
        known = {k: raw[k] for k in cls.__dataclass_fields__ if raw.get(k) is not None}
        return cls(**known)


@dataclass(frozen=True)
class CommandResult:
    """What one remote command gave back; `exit` is None when it died of a signal."""

    command: str
    exit: int | None
    stdout: str
    stderr: str
    seconds: float
    connection: str = "opened"   # "opened" or "reused": was the connection new for it?


def command_line(argv: Sequence[str]) -> str:
    """One shell command from an argument list, every argument quoted."""
    if not argv:
        raise ValueError("empty command")
    return shlex.join(str(a) for a in argv)


# ---- cached site material: ssh_config, keys, known_hosts ---------------------------------

class _CachedSSHConfig(paramiko.SSHConfig):
    """paramiko's SSHConfig with each host's lookup computed once."""

    def __init__(self) -> None:
        super().__init__()
        self._looked_up: dict[str, paramiko.SSHConfigDict] = {}
        self._lookup_lock = threading.Lock()

    def lookup(self, hostname: str) -> paramiko.SSHConfigDict:
        with self._lookup_lock:
            found = self._looked_up.get(hostname)
            if found is None:
                found = super().lookup(hostname)
                self._looked_up[hostname] = found
        return paramiko.SSHConfigDict(
            {k: list(v) if isinstance(v, list) else v for k, v in found.items()})


_cache: dict[tuple[str, str, int], Any] = {}
_cache_lock = threading.Lock()


def _cached(kind: str, path: str, load: Any) -> Any:
    """`load(path)` once per file version (path and modification time)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise SshError(f"cannot read {kind} {path}: {exc.strerror}") from exc
    key = (kind, path, mtime)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load(path)
        return _cache[key]


def _load_config(path: str) -> _CachedSSHConfig:
    try:
        return _CachedSSHConfig.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise SshError(f"cannot parse ssh_config {path}: {exc}") from exc


def _load_key(path: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise SshError(f"cannot load SSH key {path}: {exc}") from exc


def _load_host_keys(path: str) -> paramiko.HostKeys:
    try:
        return paramiko.HostKeys(path)
    except (OSError, paramiko.SSHException) as exc:
        raise SshError(f"cannot read known_hosts {path}: {exc}") from exc


class _Site:
    """What every connection of one site shares: config, key, host keys, fabric Config."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        path = _expand(settings.config)
        self.ssh_config = (_cached("ssh_config", path, _load_config) if path
                           else _CachedSSHConfig())
        self.fabric_config = fabric.Config(ssh_config=self.ssh_config,
                                           overrides={"run": {"in_stream": False}})

    def key_for(self, lookup: Mapping[str, Any]) -> paramiko.PKey | None:
        candidates = ([self.settings.identity] if self.settings.identity
                      else list(lookup.get("identityfile", [])))
        for candidate in candidates:
            path = _expand(candidate)
            if path and os.path.exists(path):
                return _cached("key", path, _load_key)
        return None

    def host_keys_for(self, lookup: Mapping[str, Any]) -> paramiko.HostKeys | None:
        wanted = self.settings.known_hosts or lookup.get("userknownhostsfile")
        if wanted:
            path = os.path.expandvars(os.path.expanduser(str(wanted).split()[0]))
        else:
            path = os.path.expanduser("~/.ssh/known_hosts")
            if not os.path.exists(path):
                return None
        return _cached("known_hosts", path, _load_host_keys)


def _expand(path: str | None) -> str | None:
    return os.path.expandvars(os.path.expanduser(path)) if path else None


_sites: dict[SshSettings, _Site] = {}


def _site(settings: SshSettings) -> _Site:
    with _cache_lock:
        found = _sites.get(settings)
    if found is None:
        found = _Site(settings)
        with _cache_lock:
            found = _sites.setdefault(settings, found)
    return found


# ---- one connection per (account, host) ----------------------------------------------------

@dataclass
class _Batch:
    commands: list[str] = field(default_factory=list)
    limits: list[float] = field(default_factory=list)
    last: float = 0.0
    closed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    results: list[CommandResult] = field(default_factory=list)
    error: SshError | None = None


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: fabric.Connection | None = None
    error: SshError | None = None


class SshPool:
    """Connections of one walk, keyed by (account, host); get it with `pool_for(ctx)`.

    A host that could not be reached is not tried again in the same walk: every later
    check on it gets the same reason at once, instead of waiting for its own timeout.
    """

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self._site = _site(settings)
        self._slots: dict[tuple[str | None, str], _Slot] = {}
        self._lock = threading.Lock()
        self._gate = threading.BoundedSemaphore(settings.concurrency)
        self._batches: dict[tuple[str | None, str], _Batch] = {}
        self.batch_window = BATCH_WINDOW
        self.stats = {"opened": 0, "reused": 0, "failed": 0, "commands": 0, "executions": 0}

    def _slot(self, user: str | None, host: str) -> _Slot:
        with self._lock:
            return self._slots.setdefault((user, host), _Slot())

    def connection(self, host: str, user: str | None, timeout: float | None = None
                   ) -> tuple[fabric.Connection, str]:
        """The open connection to `user@host` and whether it was "opened" or "reused"."""
        slot = self._slot(user, host)
        with slot.lock:
            if slot.conn is not None and slot.conn.is_connected:
                with self._lock:
                    self.stats["reused"] += 1
                return slot.conn, "reused"
            if slot.error is not None:
                raise slot.error
            limit = min(timeout or self.settings.connect_timeout, self.settings.connect_timeout)
            try:
                slot.conn = self._open(host, user, limit)
            except SshError as exc:
                # Remember the failure for the rest of the walk, unless it was only this
                # check's short timeout that cut the connection attempt off.
                if not isinstance(exc, SshTimeout) or limit >= self.settings.connect_timeout:
                    slot.error = exc
                with self._lock:
                    self.stats["failed"] += 1
                raise
            with self._lock:
                self.stats["opened"] += 1
            return slot.conn, "opened"

    def _open(self, host: str, user: str | None, limit: float) -> fabric.Connection:
        site = self._site
        who = f"{user}@{host}" if user else host
        try:
            with _BUILD_LOCK:
                conn = fabric.Connection(
                    host, user=user, config=site.fabric_config,
                    connect_timeout=max(1, int(limit + 0.999)),
                    connect_kwargs={"banner_timeout": limit, "auth_timeout": limit})
        except (ValueError, KeyError, paramiko.SSHException) as exc:
            raise SshError(f"{who}: bad ssh_config entry: {exc}") from exc
        pkey = site.key_for(conn.ssh_config)
        if pkey is not None:
            conn.connect_kwargs.update(pkey=pkey, look_for_keys=False, allow_agent=False)
            conn.connect_kwargs.pop("key_filename", None)
        host_keys = site.host_keys_for(conn.ssh_config)
        client_keys = conn.client.get_host_keys()
        name = conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"
        for known in {name, conn.original_host if conn.port == 22
                      else f"[{conn.original_host}]:{conn.port}"}:
            for keytype, key in ((host_keys.lookup(known) or {}).items() if host_keys
                                 else ()):
                client_keys.add(name, keytype, key)
        strict = str(conn.ssh_config.get("stricthostkeychecking", "yes")).lower()
        conn.client.set_missing_host_key_policy(
            paramiko.AutoAddPolicy() if strict in ("no", "off", "accept-new")
            else paramiko.RejectPolicy())
        sock = None
        try:
            if not conn.gateway:
                sock = socket.create_connection((conn.host, conn.port), timeout=limit)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.connect_kwargs["sock"] = sock
            conn.open()
        except TimeoutError as exc:
            _close_quietly(conn, sock)
            raise SshTimeout(f"{who}: no SSH answer within {limit:g} s") from exc
        except paramiko.BadHostKeyException as exc:
            _close_quietly(conn, sock)
            raise SshError(f"{who}: host key does not match known_hosts") from exc
        except paramiko.AuthenticationException as exc:
            _close_quietly(conn, sock)
            raise SshError(f"{who}: authentication failed ({exc})") from exc
        except (paramiko.SSHException, EOFError) as exc:
            _close_quietly(conn, sock)
            raise SshError(f"{who}: SSH failed: {exc}") from exc
        except OSError as exc:
            _close_quietly(conn, sock)
            where = f"{conn.host}:{conn.port}"
            raise SshError(f"{who}: cannot connect to {where}: "
                           f"{exc.strerror or exc}") from exc
        return conn

    def _run_bytes(self, host: str, user: str | None, command: str, timeout: float | None
                   ) -> tuple[int | None, bytes, bytes, float, str]:
        limit = timeout or self.settings.command_timeout
        who = f"{user}@{host}" if user else host
        start = time.monotonic()
        if not self._gate.acquire(timeout=limit):
            raise SshTimeout(f"{who}: waited {limit:g} s for a free SSH slot "
                             f"(concurrency {self.settings.concurrency})")
        try:
            conn, how = self.connection(host, user, limit - (time.monotonic() - start))
            left = limit - (time.monotonic() - start)
            if left <= 0:
                raise SshTimeout(f"{who}: no time left after connecting (timeout {limit:g} s)")
            exit_, out, err = _execute(conn, command, left, who, limit)
        finally:
            self._gate.release()
        with self._lock:
            self.stats["executions"] += 1
        return exit_, out, err, time.monotonic() - start, how

    def run(self, host: str, user: str | None, command: str,
            timeout: float | None = None) -> CommandResult:
        """Run one shell command line on `user@host` (quote it with `command_line`).

        Commands for the same host that arrive within `batch_window` of each other (the
        checks of one step, run side by side by the walker) share one remote execution; the
        first waits for the others at most `BATCH_MAX_WAIT`.  The outputs come back when the
        last of them ends, so a command that hangs holds back the others of its batch.
        """
        limit = timeout or self.settings.command_timeout
        with self._lock:
            self.stats["commands"] += 1
            batch = self._batches.get((user, host))
            leader = batch is None or batch.closed or len(batch.commands) >= MAX_BATCH
            if leader:
                batch = self._batches[(user, host)] = _Batch()
            assert batch is not None
            index = len(batch.commands)
            batch.commands.append(command)
            batch.limits.append(limit)
            batch.last = time.monotonic()
        if leader:
            self._lead(host, user, batch)
        elif not batch.done.wait(limit):
            raise SshTimeout(f"{user}@{host}: no answer within {limit:g} s")
        if batch.error is not None:
            raise batch.error
        return batch.results[index]

    def _lead(self, host: str, user: str | None, batch: _Batch) -> None:
        try:
            cap = time.monotonic() + max(self.batch_window, BATCH_MAX_WAIT)
            while self.batch_window > 0:
                with self._lock:
                    until = min(batch.last + self.batch_window, cap)
                    full = len(batch.commands) >= MAX_BATCH
                now = time.monotonic()
                if now >= until or full:
                    break
                time.sleep(until - now)
            with self._lock:
                batch.closed = True
                if self._batches.get((user, host)) is batch:
                    del self._batches[(user, host)]
            commands, limit = list(batch.commands), max(batch.limits)
            if len(commands) == 1:
                exit_, out, err, seconds, how = self._run_bytes(host, user, commands[0], limit)
                batch.results = [CommandResult(commands[0], exit_, out.decode(errors="replace"),
                                               err.decode(errors="replace"), seconds, how)]
            else:
                batch.results = self.run_many(host, user, commands, limit)
        except SshTimeout as exc:
            shared = len(batch.commands) - 1
            batch.error = SshTimeout(f"{exc} (run together with {shared} other command(s) "
                                     "for the same host)") if shared else exc
        except SshError as exc:
            batch.error = exc
        finally:
            batch.done.set()

    def run_many(self, host: str, user: str | None, commands: Sequence[str],
                 timeout: float | None = None) -> list[CommandResult]:
        """Several commands in ONE remote execution, run side by side on the host."""
        token = secrets.token_hex(6)
        exit_, out, err, seconds, how = self._run_bytes(
            host, user, combined_script(commands, token), timeout)
        parts = split_combined(out, token, len(commands))
        if parts is None:
            who = f"{user}@{host}" if user else host
            raise SshError(f"{who}: the combined command gave no parsable output "
                           f"(exit {exit_}): {err.decode(errors='replace').strip()[-300:]}")
        return [CommandResult(cmd, code, o, e, seconds, how)
                for cmd, (code, o, e) in zip(commands, parts, strict=True)]

    def prefetch(self, targets: Iterable[tuple[str | None, str]]) -> list[threading.Thread]:
        """Open connections in the background so that the checks that follow find them open.

        Failures are kept and reported by the first check that needs the host.
        """
        threads = []
        for user, host in dict.fromkeys(targets):
            def one(u: str | None = user, h: str = host) -> None:
                try:
                    self.connection(h, u)
                except SshError:
                    return
            thread = threading.Thread(target=one, name=f"ssh-prefetch-{host}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def close(self) -> None:
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            if slot.conn is not None:
                slot.conn.close()


def _close_quietly(conn: fabric.Connection, sock: socket.socket | None) -> None:
    conn.client.close()
    if sock is not None:
        sock.close()


def _execute(conn: fabric.Connection, command: str, timeout: float, who: str, limit: float
             ) -> tuple[int | None, bytes, bytes]:
    deadline = time.monotonic() + timeout
    transport = conn.transport
    if transport is None or not transport.is_active():
        raise SshError(f"{who}: the connection was lost")
    try:
        chan = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SshError(f"{who}: cannot open a session: {exc}") from exc
    out = bytearray()
    err = bytearray()
    try:
        chan.exec_command(command)
        chan.shutdown_write()
        while True:
            if chan.recv_ready():
                out += chan.recv(65536)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            elif chan.eof_received or chan.closed:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                break
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SshTimeout(f"{who}: no answer within {limit:g} s")
                select.select([chan], [], [], left)
            if len(out) > MAX_OUTPUT or len(err) > MAX_OUTPUT:
                raise SshError(f"{who}: more than {MAX_OUTPUT} bytes of output")
        left = deadline - time.monotonic()
        if not chan.status_event.wait(max(0.0, left)):
            raise SshTimeout(f"{who}: no exit status within {limit:g} s")
        status = chan.exit_status
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SshError(f"{who}: the session broke: {exc}") from exc
    finally:
        chan.close()
    return (None if status == -1 else status), bytes(out), bytes(err)


# ---- several commands, one execution ------------------------------------------------------

def combined_script(commands: Sequence[str], token: str) -> str:
    """A bash script that runs `commands` side by side and prints a header line
    ``<token> <exit>...``, one ``<bytes>`` line per stdout and stderr, then the outputs.

    Outputs are buffered in files of $TMPDIR and read back with builtins, so that the only
    extra process is one `rm` (output after a NUL byte is lost).
    """
    n = len(commands)
    lines = ["LC_ALL=C; set -C; b=${TMPDIR:-/tmp}/.runbook.$$.$RANDOM"]
    for i, cmd in enumerate(commands):
        lines.append(f'( {cmd}\n) </dev/null >"$b.{i}o" 2>"$b.{i}e" & p{i}=$!')
    for i in range(n):
        lines.append(f"wait $p{i}; x{i}=$?")
    files = " ".join(f'"$b.{i}o" "$b.{i}e"' for i in range(n))
    lines += [
        f"v=(); for f in {files}; do IFS= read -r -d '' s <\"$f\"; v+=(\"$s\"); done",
        f"rm -f -- {files}",
        "echo " + shlex.quote(token) + " " + " ".join(f"$x{i}" for i in range(n)),
        'for s in "${v[@]}"; do echo "${#s}"; done',
        "printf '%s' \"${v[@]}\"",
    ]
    return "\n".join(lines) + "\n"


def split_combined(raw: bytes, token: str, n: int) -> list[tuple[int, str, str]] | None:
    """Undo `combined_script`'s framing; None when the output is not framed as expected."""
    head, _, rest = raw.partition(b"\n")
    fields = head.split()
    if len(fields) != n + 1 or fields[0].decode(errors="replace") != token:
        return None
    size_lines = rest.split(b"\n", 2 * n)
    if len(size_lines) != 2 * n + 1:
        return None
    try:
        codes = [int(f) for f in fields[1:]]
        sizes = [int(s) for s in size_lines[:2 * n]]
    except ValueError:
        return None
    body = size_lines[2 * n]
    parts: list[tuple[int, str, str]] = []
    at = 0
    for i in range(n):
        out = body[at:at + sizes[2 * i]]
        at += sizes[2 * i]
        err = body[at:at + sizes[2 * i + 1]]
        at += sizes[2 * i + 1]
        parts.append((codes[i], out.decode(errors="replace"), err.decode(errors="replace")))
    return parts


# ---- per walk ---------------------------------------------------------------------------

def pool_for(ctx: Context) -> SshPool:
    """The walk's pool for the site's SSH settings, created on first use, closed at the end."""
    settings = SshSettings.from_transport(ctx.transport)
    return ctx.resources.get(("ssh", settings), lambda: SshPool(settings),
                             SshPool.close)


def prefetch(ctx: Context, targets: Iterable[tuple[str | None, str]]) -> None:
    """Start opening connections to `(account, host)` pairs for the checks to come."""
    pool_for(ctx).prefetch(targets)
