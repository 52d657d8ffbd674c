"""The asyncio side of the SSH transport: one event loop thread for the whole process, and
one remote execution on an open connection.

Every SSH connection of the process lives on one asyncssh event loop in a daemon thread
(`runner()`), so that many hosts cost one thread, not one (plus paramiko's transport thread)
per host; the ssh.* checks, which the walker calls in its worker threads, hand their work to
it with `Runner.call`.  asyncio opens TCP sockets with TCP_NODELAY.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import asyncssh

from ._ssh_errors import SshError, SshTimeout

__all__ = ["Runner", "runner", "execute", "MAX_OUTPUT", "translate"]

MAX_OUTPUT = 8 * 1024 * 1024
T = TypeVar("T")


class Runner:
    """The SSH event loop thread; get the process's one with `runner()`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="runbook-ssh", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a blocking SSH call from the SSH event loop itself")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the loop and wait for it at most `timeout` seconds."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


_runner: Runner | None = None
_runner_lock = threading.Lock()


def runner() -> Runner:
    """The process's SSH event loop thread, started on first use."""
    global _runner
    with _runner_lock:
        if _runner is None or not _runner.thread.is_alive():
            _runner = Runner()
        return _runner


class _Collect(asyncssh.SSHClientSession[bytes]):
    """Gathers one session's output and exit status; `done` resolves when it closes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.exit: int | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.too_much = False

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        (self.err if datatype == asyncssh.EXTENDED_DATA_STDERR else self.out).extend(data)
        if len(self.out) > MAX_OUTPUT or len(self.err) > MAX_OUTPUT:
            self.too_much = True
            if self.chan is not None:
                self.chan.close()

    def exit_status_received(self, status: int) -> None:
        self.exit = status

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)


async def execute(conn: asyncssh.SSHClientConnection, command: str, limit: float, who: str,
                  shown_limit: float, keep_input: bool = False
                  ) -> tuple[int | None, bytes, bytes]:
    """Run `command` on `conn`: (exit status or None for a signal, stdout, stderr).

    The session's input gets end-of-file at once, unless `keep_input` (a combined script
    times its commands by waiting on it); either way it is closed when the output is in.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    try:
        chan, opened = await asyncio.wait_for(
            conn.create_session(_Collect, command, encoding=None), limit)
        session = cast(_Collect, opened)
    except TimeoutError as exc:
        raise SshTimeout(f"{who}: no answer within {shown_limit:g} s") from exc
    except (asyncssh.Error, OSError) as exc:
        raise SshError(f"{who}: cannot open a session: {_reason(exc)}") from exc
    try:
        if not keep_input:
            chan.write_eof()
        await asyncio.wait_for(asyncio.shield(session.done), max(deadline - loop.time(), 0))
    except TimeoutError as exc:
        raise SshTimeout(f"{who}: no answer within {shown_limit:g} s") from exc
    except (asyncssh.Error, OSError) as exc:
        raise SshError(f"{who}: the session broke: {_reason(exc)}") from exc
    finally:
        chan.close()
    if session.too_much:
        raise SshError(f"{who}: more than {MAX_OUTPUT} bytes of output")
    return session.exit, bytes(session.out), bytes(session.err)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def translate(exc: BaseException, who: str, where: str, limit: float) -> SshError:
    """An SshError, with the reason in words, for what opening a connection raised."""
    if isinstance(exc, SshError):
        return exc
    if isinstance(exc, TimeoutError):
        return SshTimeout(f"{who}: no SSH answer within {limit:g} s")
    if isinstance(exc, asyncssh.PermissionDenied):
        return SshError(f"{who}: authentication failed ({exc.reason})")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return SshError(f"{who}: host key not accepted, see known_hosts ({exc.reason})")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return SshError(f"{who}: cannot reach {where} through the ProxyJump host: "
                        f"{exc.reason}")
    if isinstance(exc, asyncssh.Error):
        return SshError(f"{who}: SSH failed: {exc.reason}")
    if isinstance(exc, OSError):
        return SshError(f"{who}: cannot connect to {where}: {_reason(exc)}")
    return SshError(f"{who}: SSH failed: {type(exc).__name__}: {exc}")
