"""The SSH transport of the ssh.* checks: asyncssh connections, one per (account, host) per walk.

Hosts are resolved through the site's ssh_config (HostName, Port, User, IdentityFile,
UserKnownHostsFile, StrictHostKeyChecking, ProxyJump, ...), so the twin and the facility are
reached the same way.  What costs time on a fan-out over many hosts is done once or not at
all:

- one asyncio event loop thread runs every connection (`checks._ssh_exec`), instead of a
  client and a transport thread per host; its sockets have TCP_NODELAY;
- the ssh_config lookup, the private key and known_hosts are read once per file version
  and host (`checks._ssh_site`); unknown host keys are refused unless the ssh_config says
  otherwise;
- connections can be opened early (`prefetch`), and one open for a step is reused by the
  later steps of the walk;
- the commands of one step for one host (the checks of an `all`, which the walker starts
  side by side) go out as ONE remote execution (`checks._ssh_script`), each with its own
  output, exit status and time limit.

Quoting is done in `checks._ssh_script`: callers hand argument lists to `command_line`.
A command with a NUL byte, or a host or account that is not a plain name, is refused
(`UnsafeCommand`) before anything is sent: it could not arrive as the literal it was.
A command that its caller did not mark `read_only=True` may change the host: inside a plan
or diagnose walk it is refused (`MutationRefused`) before anything is sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from engine.context import Context
from engine.registry import guard_transport

from ._ssh_errors import SshError, SshTimeout, UnsafeCommand
from ._ssh_exec import execute, runner, translate
from ._ssh_script import check_literal, combined_script, command_line, split_combined
from ._ssh_site import SshSettings, Target, site_for

__all__ = [
    "SshError", "SshTimeout", "UnsafeCommand", "SshSettings", "CommandResult", "SshPool",
    "pool_for", "prefetch", "command_line", "combined_script", "split_combined",
]

BATCH_WINDOW = 0.004
"""Seconds without a new command to a host after which its batch is sent."""
BATCH_MAX_WAIT = 0.025
"""Seconds the first command of a batch waits at most for others (longer while the
connection it needs is still being opened: commands that come meanwhile join it)."""
MAX_BATCH = 16
GRACE = 2.0
"""Seconds a combined execution may run past its longest limit before the client gives up
on all of its commands (its own watchdog stops each command at that command's limit)."""
T = TypeVar("T")
_Key = tuple[str, str | None, int, Any]


@dataclass(frozen=True)
class CommandResult:
    """What one remote command gave back; `exit` is None when it died of a signal."""

    command: str
    exit: int | None
    stdout: str
    stderr: str
    seconds: float
    connection: str = "opened"   # "opened": the first command on its connection, else "reused"


@dataclass
class _Slot:
    conn: asyncssh.SSHClientConnection | None = None
    opening: asyncio.Future[asyncssh.SSHClientConnection] | None = None
    error: SshError | None = None
    used: bool = False      # by a command: an early (prefetched) connection is new to its first


@dataclass
class _Item:
    command: str
    limit: float                 # seconds, as the caller gave it
    start: float                 # loop time of the request
    future: asyncio.Future[CommandResult]

    @property
    def deadline(self) -> float:
        return self.start + self.limit


@dataclass
class _Batch:
    start: float
    last: float
    items: list[_Item] = field(default_factory=list)
    closed: bool = False


def _finish(item: _Item, result: CommandResult | BaseException) -> None:
    if item.future.done():
        return
    if isinstance(result, BaseException):
        item.future.set_exception(result)
    else:
        item.future.set_result(result)


def _guard(host: str, user: str | None, commands: Sequence[str], read_only: bool) -> None:
    """In the caller's thread (the SSH loop's thread does not see the walk's mode)."""
    if not read_only:
        shown = "; ".join(commands)
        guard_transport(f"run {shown[:200]!r} on {user + '@' if user else ''}{host} "
                        "(not marked read-only)")


class SshPool:
    """Connections of one walk, keyed by (account, host); get it with `pool_for(ctx)`.

    A host that could not be reached is not tried again in the same walk: every later
    check on it gets the same reason at once, instead of waiting for its own timeout.
    The methods block; they may be called from any thread but the SSH loop's own.
    """

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self._site = site_for(settings)
        self._runner = runner()
        self._slots: dict[_Key, _Slot] = {}
        self._batches: dict[_Key, _Batch] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._gate = asyncio.Semaphore(settings.concurrency)
        self._connecting = asyncio.Semaphore(settings.concurrency)
        self._closed = False
        self.batch_window = BATCH_WINDOW
        self.stats = {"opened": 0, "reused": 0, "failed": 0, "commands": 0, "executions": 0}

    # -- blocking API --------------------------------------------------------------------

    def connection(self, host: str, user: str | None, timeout: float | None = None
                   ) -> tuple[asyncssh.SSHClientConnection, str]:
        """The open connection to `user@host` and whether it was "opened" or "reused"."""
        limit = min(timeout or self.settings.connect_timeout, self.settings.connect_timeout)
        return self._call(self._connection(self._site.target(host, user), limit), limit)

    def run(self, host: str, user: str | None, command: str,
            timeout: float | None = None, *, read_only: bool = False) -> CommandResult:
        """Run one shell command line on `user@host` (quote it with `command_line`).

        `read_only=True` is the caller's word that the command changes nothing (a check's
        probe); any other command is refused inside a plan or diagnose walk.
        Commands for the same host that arrive within `batch_window` of each other (the
        checks of one step, run side by side by the walker), or while the connection they
        need is being opened, share one remote execution; each keeps its own time limit.
        """
        limit = timeout or self.settings.command_timeout
        check_literal(command)
        _guard(host, user, [command], read_only)
        return self._call(self._submit(self._site.target(host, user), command, limit), limit)

    def run_many(self, host: str, user: str | None, commands: Sequence[str],
                 timeout: float | None = None, *, read_only: bool = False
                 ) -> list[CommandResult]:
        """Several commands in ONE remote execution, run side by side on the host
        (`read_only` as for `run`, for all of them)."""
        limit = timeout or self.settings.command_timeout
        for command in commands:
            check_literal(command)
        _guard(host, user, commands, read_only)
        return self._call(self._many(self._site.target(host, user), commands, limit), limit)

    def prefetch(self, targets: Iterable[tuple[str | None, str]]
                 ) -> concurrent.futures.Future[None]:
        """Start opening connections to `(account, host)` pairs; returns at once.

        Failures are kept and reported by the first check that needs the host.
        """
        return self._runner.submit(self._prefetch(list(dict.fromkeys(targets))))

    def close(self) -> None:
        try:
            self._runner.call(self._close(), 10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            return

    def _call(self, coro: Coroutine[Any, Any, T], limit: float) -> T:
        try:
            return self._runner.call(coro, limit + GRACE + 1)
        except concurrent.futures.TimeoutError as exc:
            raise SshTimeout(f"no answer within {limit:g} s (the SSH loop is stuck)") from exc

    # -- connections (on the loop) ------------------------------------------------------

    async def _connection(self, target: Target, limit: float, via: _Key | None = None,
                          count: bool = True) -> tuple[asyncssh.SSHClientConnection, str]:
        if self._closed:
            raise SshError(f"{target.who}: the walk is over (its connections are closed)")
        key = (target.host, target.user, target.port, via)
        slot = self._slots.setdefault(key, _Slot())
        if slot.conn is not None and not slot.conn.is_closed():
            return slot.conn, self._how(slot, count)
        if slot.error is not None:
            raise slot.error
        if slot.opening is None or slot.opening.done():
            slot.opening = self._task(self._open(target, slot, via))
            # Its failure is kept in the slot: retrieved here, even if every waiter gave up.
            slot.opening.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            conn = await asyncio.wait_for(asyncio.shield(slot.opening), max(limit, 0.001))
        except TimeoutError as exc:
            raise SshTimeout(f"{target.who}: no SSH answer within {limit:g} s") from exc
        return conn, self._how(slot, count)

    def _how(self, slot: _Slot, count: bool) -> str:
        """ "opened" for the first command on a connection (an early one included), else
        "reused"; a prefetch (`count` false) uses nothing up."""
        if not count:
            return "opened"
        if not slot.used:
            slot.used = True
            return "opened"
        self.stats["reused"] += 1
        return "reused"

    async def _open(self, target: Target, slot: _Slot, via: _Key | None
                    ) -> asyncssh.SSHClientConnection:
        limit = self.settings.connect_timeout
        where = f"{target.address}:{target.port}"
        try:
            tunnel = (self._slots[via].conn if via is not None
                      else await self._tunnel(target, limit))
            async with self._connecting:    # not held while the jump hosts open
                conn = await asyncio.wait_for(asyncssh.connect(
                    target.host, options=target.options, config=None,
                    tunnel=tunnel if tunnel is not None else (),
                    connect_timeout=limit, login_timeout=limit), limit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is translated to SshError
            slot.error = translate(exc, target.who, where, limit)
            self.stats["failed"] += 1
            raise slot.error from exc
        slot.conn, slot.used = conn, False
        self.stats["opened"] += 1
        return conn

    async def _tunnel(self, target: Target, limit: float
                      ) -> asyncssh.SSHClientConnection | None:
        """The connection to the last ProxyJump hop, each hop through the one before."""
        via: _Key | None = None
        conn = None
        loop = asyncio.get_running_loop()
        for hop in target.jumps:
            hop_target = await loop.run_in_executor(
                None, self._site.target, hop.host, hop.user, hop.port)
            conn, _how = await self._connection(hop_target, limit, via)
            via = (hop_target.host, hop_target.user, hop_target.port, via)
        return conn

    async def _prefetch(self, targets: list[tuple[str | None, str]]) -> None:
        loop = asyncio.get_running_loop()

        async def one(user: str | None, host: str) -> None:
            try:
                target = await loop.run_in_executor(None, self._site.target, host, user)
            except SshError:
                return          # the check on the host reports it
            try:
                await self._connection(target, self.settings.connect_timeout, count=False)
            except SshError:
                # Not remembered: the first check on the host tries again (and a check that
                # waited for this attempt has its answer), so that an early hint never
                # decides what a later step sees.
                slot = self._slots.get((target.host, target.user, target.port, None))
                if slot is not None and slot.conn is None:
                    slot.error = None

        await asyncio.gather(*(one(user, host) for user, host in targets))

    async def _close(self) -> None:
        self._closed = True
        slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            if slot.opening is not None and not slot.opening.done():
                slot.opening.cancel()
        conns = [s.conn for s in slots if s.conn is not None]
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([self._task(c.wait_closed()) for c in conns], timeout=5)

    def _task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- commands (on the loop) ---------------------------------------------------------

    async def _submit(self, target: Target, command: str, limit: float) -> CommandResult:
        loop = asyncio.get_running_loop()
        self.stats["commands"] += 1
        key = (target.host, target.user, target.port, None)
        batch = self._batches.get(key)
        if batch is None or batch.closed or len(batch.items) >= MAX_BATCH:
            batch = self._batches[key] = _Batch(loop.time(), loop.time())
            self._task(self._lead(target, key, batch))
        item = _Item(command, limit, loop.time(), loop.create_future())
        batch.items.append(item)
        batch.last = loop.time()
        try:
            # The execution answers by the deadline (a single command is cut off there, a
            # combined one stops each command at its own); this only guards against a stuck
            # connection attempt.
            return await asyncio.wait_for(asyncio.shield(item.future), limit + 0.5)
        except TimeoutError as exc:
            item.future.cancel()
            raise SshTimeout(f"{target.who}: no answer within {limit:g} s") from exc

    async def _lead(self, target: Target, key: _Key, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        first = batch.items[0]
        opening = self._task(self._connection(target, self.settings.connect_timeout))
        cap = batch.start + max(self.batch_window, BATCH_MAX_WAIT)
        while self.batch_window > 0 and len(batch.items) < MAX_BATCH:
            until = min(batch.last + self.batch_window, cap)
            if loop.time() >= until:
                break
            await asyncio.sleep(until - loop.time())
        if not opening.done():
            await asyncio.wait([opening])   # commands that come meanwhile join this batch
        batch.closed = True
        if self._batches.get(key) is batch:
            del self._batches[key]
        try:
            conn, how = opening.result()
        except SshError as exc:
            for item in batch.items:
                _finish(item, exc)
            return
        if len(batch.items) == 1:
            await self._run_one(target, conn, how, first)
        else:
            await self._run_combined(target, conn, how, batch.items)

    async def _slot_for(self, target: Target, left: float, limit: float) -> None:
        try:
            await asyncio.wait_for(self._gate.acquire(), max(left, 0.001))
        except TimeoutError as exc:
            raise SshTimeout(f"{target.who}: waited {limit:g} s for a free SSH slot "
                             f"(concurrency {self.settings.concurrency})") from exc

    async def _run_one(self, target: Target, conn: asyncssh.SSHClientConnection, how: str,
                       item: _Item) -> None:
        loop = asyncio.get_running_loop()
        if item.future.done():
            return              # its caller gave up on it
        try:
            await self._slot_for(target, item.deadline - loop.time(), item.limit)
            try:
                left = item.deadline - loop.time()
                if left <= 0:
                    raise SshTimeout(f"{target.who}: no time left after connecting "
                                     f"(timeout {item.limit:g} s)")
                exit_, out, err = await execute(conn, item.command, left, target.who,
                                                item.limit)
            finally:
                self._gate.release()
        except SshError as exc:
            _finish(item, exc)
            return
        self.stats["executions"] += 1
        _finish(item, CommandResult(item.command, exit_, out.decode(errors="replace"),
                                    err.decode(errors="replace"), loop.time() - item.start,
                                    how))

    async def _run_combined(self, target: Target, conn: asyncssh.SSHClientConnection,
                            how: str, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        live = [i for i in items if not i.future.done()]
        for item in [i for i in live if i.deadline <= now]:
            _finish(item, SshTimeout(f"{target.who}: no answer within {item.limit:g} s"))
        live = [i for i in live if not i.future.done()]
        if len(live) <= 1:
            for item in live:
                await self._run_one(target, conn, how, item)
            return
        token = secrets.token_hex(6)
        limits = [i.deadline - now for i in live]
        script = combined_script([i.command for i in live], token, limits)
        longest = max(i.limit for i in live)
        try:
            await self._slot_for(target, max(limits), longest)
            try:
                exit_, out, err = await execute(conn, script, max(limits) + GRACE, target.who,
                                                longest, keep_input=True)
            finally:
                self._gate.release()
        except SshError as exc:
            if isinstance(exc, SshTimeout):
                exc = SshTimeout(f"{exc} (run together with {len(live) - 1} other "
                                 "command(s) for the same host)")
            for item in live:
                _finish(item, exc)
            return
        self.stats["executions"] += 1
        parts = split_combined(out, token, len(live))
        if parts is None:
            problem = SshError(f"{target.who}: the combined command gave no parsable output "
                               f"(exit {exit_}): "
                               f"{err.decode(errors='replace').strip()[-300:]}")
            for item in live:
                _finish(item, problem)
            return
        seconds = loop.time()
        for item, (code, o, e) in zip(live, parts, strict=True):
            _finish(item, SshTimeout(f"{target.who}: no answer within {item.limit:g} s")
                    if code is None else
                    CommandResult(item.command, code, o, e, seconds - item.start, how))

    async def _many(self, target: Target, commands: Sequence[str], limit: float
                    ) -> list[CommandResult]:
        loop = asyncio.get_running_loop()
        items = [_Item(c, limit, loop.time(), loop.create_future()) for c in commands]
        self.stats["commands"] += len(items)
        conn, how = await self._connection(target, limit)
        await self._run_combined(target, conn, how, items)
        return [await item.future for item in items]


# ---- per walk ---------------------------------------------------------------------------

def pool_for(ctx: Context) -> SshPool:
    """The walk's pool for the site's SSH settings, created on first use, closed at the end."""
    settings = SshSettings.from_transport(ctx.transport)
    pool: SshPool = ctx.resources.get(("ssh", settings), lambda: SshPool(settings),
                                      SshPool.close)
    return pool


def prefetch(ctx: Context, targets: Iterable[tuple[str | None, str]]) -> None:
    """Start opening connections to `(account, host)` pairs for the checks to come."""
    pool_for(ctx).prefetch(targets)
