"""RabbitMQ for the twin: our own broker process on loopback, with private folders.

The Debian package installs RabbitMQ but apt does not start it, and the twin must never
touch a system-wide broker: every twin (and every test session) runs its own node, with
its own epmd, data, log and config folders under ``<twin>/broker``. Get one with
``Broker.start(twin_dir, port=...)``; ``Broker.stop()`` ends it by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import RunbookError

__all__ = ["Broker", "BrokerError", "free_port", "wait_for_port", "RABBITMQ_SERVER"]

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD = Path("/usr/bin/epmd")
READY_TIMEOUT_S = 60.0


class BrokerError(RunbookError):
    """The twin's RabbitMQ could not be started or stopped."""


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (for tests and parallel twins)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(address: str, port: int, deadline_s: float,
                  alive: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until ``address:port`` accepts connections; fail early if ``alive`` exits."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if port_open(address, port):
            return
        if alive is not None and alive.poll() is not None:
            raise BrokerError(f"process {alive.pid} exited with {alive.returncode} "
                              f"before {address}:{port} opened")
        time.sleep(0.2)
    raise BrokerError(f"{address}:{port} did not open within {deadline_s:.0f} s")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pid: int, sig: int) -> bool:
    """Signal the process group that ``pid`` leads (every twin process starts its own)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
    return True


def _terminate(pid: int, deadline_s: float = 15.0) -> None:
    """SIGTERM the group, wait, then SIGKILL: the node needs a moment to flush mnesia."""
    if not _signal_group(pid, signal.SIGTERM):
        return
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            if not _pid_alive(pid):
                return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)


@dataclass
class Broker:
    """A running RabbitMQ node of the twin; get one with ``Broker.start``."""

    root: Path
    port: int
    epmd_port: int
    dist_port: int
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}"

    @classmethod
    def start(cls, twin_dir: Path, port: int = 5672, *, epmd_port: int | None = None,
              dist_port: int | None = None, deadline_s: float = READY_TIMEOUT_S) -> Broker:
        """Start epmd and the node, and return once the AMQP port accepts connections."""
        if not RABBITMQ_SERVER.exists():
            raise BrokerError(f"{RABBITMQ_SERVER} not found: install the Debian package "
                              "rabbitmq-server (apt-get install -y rabbitmq-server)")
        epmd_port = epmd_port or free_port()
        dist_port = dist_port or free_port()
        for p in (port, epmd_port, dist_port):
            if port_open("127.0.0.1", p):
                raise BrokerError(f"port 127.0.0.1:{p} is already in use")
        root = Path(twin_dir).resolve() / "broker"
        broker = cls(root=root, port=port, epmd_port=epmd_port, dist_port=dist_port)
        env = broker._prepare()
        log = open(root / "log" / "console.log", "ab")
        epmd = subprocess.Popen(
            [str(EPMD), "-port", str(epmd_port), "-address", "127.0.0.1"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        broker.pids.append(epmd.pid)
        try:
            wait_for_port("127.0.0.1", epmd_port, 10.0, alive=epmd)
            node = subprocess.Popen(
                [str(RABBITMQ_SERVER)], env=env, cwd=root, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            broker.pids.insert(0, node.pid)
            broker._wait_ready(node, deadline_s)
        except BrokerError as exc:
            broker.stop()
            raise BrokerError(f"RabbitMQ did not start: {exc}\n"
                              f"{_tail(root / 'log' / 'console.log')}") from exc
        finally:
            log.close()
        (root / "broker.json").write_text(json.dumps(
            {"url": broker.url, "pids": broker.pids, "port": port,
             "epmd_port": epmd_port, "dist_port": dist_port}))
        return broker

    def _wait_ready(self, node: subprocess.Popen[bytes], deadline_s: float) -> None:
        """Ready when *our* node logs its listener: an open port alone may be another
        twin's broker that took the port first (then ours fails with eaddrinuse)."""
        log = self.root / "log" / f"twin{self.port}@localhost.log"
        ready = f"started TCP listener on 127.0.0.1:{self.port}"
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "eaddrinuse" in text:
                raise BrokerError(f"127.0.0.1:{self.port} is taken by another process")
            if ready in text and port_open("127.0.0.1", self.port):
                return
            if node.poll() is not None:
                raise BrokerError(f"RabbitMQ exited with {node.returncode}")
            time.sleep(0.2)
        raise BrokerError(f"RabbitMQ did not listen on 127.0.0.1:{self.port} "
                          f"within {deadline_s:.0f} s")

    def _prepare(self) -> dict[str, str]:
        for sub in ("home", "mnesia", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conf = self.root / "rabbitmq.conf"
        conf.write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
                        "loopback_users.guest = true\n")
        plugins = self.root / "enabled_plugins"
        plugins.write_text("[].\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.root / "home"),
            "RABBITMQ_NODENAME": f"twin{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(conf.with_suffix("")),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
        })
        (self.root / "rabbitmq-env.conf").write_text("")
        return env

    def stop(self) -> None:
        """Stop the node (the script's group, with beam.smp) first, then its epmd, by PID."""
        for pid in list(self.pids):
            _terminate(pid)
            self.pids.remove(pid)
