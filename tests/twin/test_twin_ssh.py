"""The twin's hosts over SSH, reached as the facility is: fabric or OpenSSH with the ssh_config.

Guidelines 1 (exflgateway, ``ssh -L``), 10.1 (``ll -alh`` on exflonc), 11.1/11.2
(``/scratch/<account>/karabo`` on the calibration hosts, ``ll /usr/local/cuda-10.1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import warnings
from pathlib import Path

import asyncssh
import fabric
import paramiko
import pytest

from sim.twin import Twin

pytestmark = pytest.mark.twin

CAL0 = "spb-br-sys-cal-0"
CAL1 = "spb-br-sys-cal-1"


def connect(twin: Twin, host: str, user: str, **kwargs: object) -> fabric.Connection:
    config = fabric.Config(runtime_ssh_path=str(twin.ssh_config),
                           overrides={"run": {"in_stream": False}})
    return fabric.Connection(host, user=user, config=config, connect_timeout=10, **kwargs)


def test_fabric_reaches_the_host_by_its_facility_name(twin: Twin) -> None:
    with connect(twin, CAL0, "spbonc") as conn:
        result = conn.run("hostname; echo $HOME; echo $USER; pwd", hide=True)
    assert result.stdout.split() == [CAL0, "/home/spbonc", "spbonc", "/home/spbonc"]
    assert conn.host == twin.hosts[CAL0].address


def test_exit_status_and_stderr_come_back(twin: Twin) -> None:
    with connect(twin, CAL0, "spbonc") as conn:
        result = conn.run("echo out; echo err >&2; exit 7", hide=True, warn=True)
        missing = conn.run("no-such-command-here", hide=True, warn=True)
    assert (result.exited, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert missing.exited == 127
    assert "no-such-command-here: command not found" in missing.stderr


def test_karabo_tree_is_at_the_facility_path(twin: Twin) -> None:
    with connect(twin, CAL0, "spbonc") as conn:
        result = conn.run("ls /scratch/spbonc/karabo", hide=True, warn=True)
    if twin.karabo_dirs:
        assert result.exited == 0
        assert "activate" in result.stdout.split()
        assert "var" in result.stdout.split()
    else:  # hosts-only twin: the account's scratch exists, no installation in it
        assert result.exited == 2
        assert "No such file or directory" in result.stderr


def test_each_host_has_its_own_scratch_and_all_share_gpfs(twin: Twin) -> None:
    with connect(twin, CAL0, "spbonc") as a, connect(twin, CAL1, "spbonc") as b:
        a.run("echo mine > /scratch/spbonc/marker-cal0 && mkdir -p /gpfs/exfel/exp/SPB "
              "&& echo shared > /gpfs/exfel/exp/SPB/marker", hide=True)
        other = b.run("cat /scratch/spbonc/marker-cal0", hide=True, warn=True)
        shared = b.run("cat /gpfs/exfel/exp/SPB/marker", hide=True)
    assert other.exited == 1 and "No such file" in other.stderr
    assert shared.stdout == "shared\n"
    assert (twin.hosts[CAL0].scratch("spbonc") / "marker-cal0").read_text() == "mine\n"
    assert (twin.dir / "gpfs" / "exfel" / "exp" / "SPB" / "marker").exists()


def test_cuda_is_installed_on_gpu_hosts_only(twin: Twin) -> None:
    with connect(twin, CAL0, "spbonc") as gpu, connect(twin, "max-exfl016", "xcal") as cpu:
        present = gpu.run("ll -d /usr/local/cuda-10.1", hide=True, warn=True)
        absent = cpu.run("ll -d /usr/local/cuda-10.1", hide=True, warn=True)
    assert present.exited == 0 and present.stdout.startswith("d")
    assert absent.exited == 2 and "No such file or directory" in absent.stderr


def test_stdin_reaches_the_command(twin: Twin) -> None:
    with connect(twin, CAL0, "spbonc") as conn:
        conn.open()
        stdin, stdout, _ = conn.client.exec_command("tr a-z A-Z")
        stdin.write("webserver: up\n")
        stdin.channel.shutdown_write()
        assert stdout.read() == b"WEBSERVER: UP\n"
        assert stdout.channel.recv_exit_status() == 0


def test_a_pty_session_has_a_terminal(twin: Twin) -> None:
    with connect(twin, CAL0, "spbonc") as conn:
        result = conn.run("tty; echo $TERM", pty=True, hide=True)
    lines = result.stdout.split()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1]


def test_an_account_that_the_host_lacks_is_refused(twin: Twin) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        with connect(twin, "max-exfl016", "spbonc") as conn:
            conn.run("true", hide=True)


def test_a_key_other_than_the_twins_is_refused(twin: Twin, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    other.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    address = twin.hosts[CAL0].address
    client = paramiko.SSHClient()
    client.load_host_keys(str(twin.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(address, port=twin.ssh_port, username="spbonc", key_filename=str(other),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def test_known_hosts_verifies_the_host_key(twin: Twin, tmp_path: Path) -> None:
    address = twin.hosts[CAL0].address
    identity = str(twin.dir / "ssh" / "id_ed25519")
    client = paramiko.SSHClient()
    client.load_host_keys(str(twin.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(address, port=twin.ssh_port, username="spbonc", key_filename=identity,
                   look_for_keys=False, allow_agent=False, timeout=10)
    client.close()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    stranger = paramiko.SSHClient()
    stranger.load_host_keys(str(empty))
    stranger.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        stranger.connect(address, port=twin.ssh_port, username="spbonc",
                         key_filename=identity, look_for_keys=False, allow_agent=False,
                         timeout=10)
    stranger.close()


def _echo_server(address: str) -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind((address, 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"echo:" + conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_port_forwarding_reaches_twin_hosts_only(twin: Twin) -> None:
    server, port = _echo_server(twin.hosts[CAL1].address)
    try:
        with connect(twin, CAL0, "spbonc") as conn:
            conn.open()
            transport = conn.client.get_transport()
            assert transport is not None
            chan = transport.open_channel("direct-tcpip", (CAL1, port), ("127.0.0.1", 0))
            chan.sendall(b"ping")
            assert chan.recv(100) == b"echo:ping"
            chan.close()
            with pytest.raises(paramiko.ChannelException):
                transport.open_channel("direct-tcpip", ("www.example.org", 80),
                                       ("127.0.0.1", 0))
        with connect(twin, CAL1, "spbonc") as conn:  # localhost is the host itself
            conn.open()
            transport = conn.client.get_transport()
            assert transport is not None
            chan = transport.open_channel("direct-tcpip", ("localhost", port), ("127.0.0.1", 0))
            chan.sendall(b"self")
            assert chan.recv(100) == b"echo:self"
            chan.close()
    finally:
        server.close()


def test_proxy_jump_through_exflgateway(twin: Twin) -> None:
    gateway = connect(twin, "exflgateway", "operator")
    with gateway, connect(twin, CAL0, "spbonc", gateway=gateway) as conn:
        result = conn.run("hostname", hide=True)
    assert result.stdout.strip() == CAL0


def _pipes(*files: object) -> set[str]:
    """The pipes' names as /proc shows them, taken while they are open (communicate()
    closes stdout at its EOF, before a hang's timeout)."""
    return {f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in files}  # type: ignore[attr-defined]


def _pipe_holders(inodes: set[str]) -> list[str]:
    """Every process that holds one of these pipes open, with its state and where it
    sleeps in the kernel: who keeps a client from returning."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if fd_dir.parent.name == str(os.getpid()):
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                pid = int(fd_dir.parent.name)
                args = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                status = (fd_dir.parent / "status").read_text().split("\n")
                wchan = (fd_dir.parent / "wchan").read_text()
                found.append(f"{pid} {args.decode(errors='replace')} "
                             f"{' '.join(x for x in status if x.startswith(('State', 'PPid')))}"
                             f" wchan={wchan}")
    return found


def _jump(twin: Twin, cfg: str) -> subprocess.CompletedProcess[str]:
    """ProxyJump through exflgateway. An open defect: in some fresh-clone runs the client
    hung past 30 s; on a hang this tells who held its pipes and what the gateway logged,
    then tries once more, with a warning that carries all of it."""
    argv = ["ssh", "-v", "-F", cfg, "-J", "operator@exflgateway", f"xcal@{CAL1}",
            "hostname; echo $USER"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pipes = _pipes(proc.stdout, proc.stderr)
    try:
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        holders = _pipe_holders(pipes)
        main_alive = proc.poll() is None
        for line in holders:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        proc.kill()
        out, err = proc.communicate(timeout=10)
        log = (twin.dir / "logs" / "sshd.log").read_text(errors="replace").splitlines()
        warnings.warn("a ProxyJump session through the twin's gateway hung for 30 s (open "
                      f"defect, see _jump); main ssh alive: {main_alive}; pipe holders: "
                      f"{holders}\nstdout: {out!r}\nclient stderr (tail):\n"
                      + "\n".join(err.splitlines()[-40:]) + "\ngateway log (tail):\n"
                      + "\n".join(log[-40:]), stacklevel=2)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client on this machine")
def test_openssh_client_with_the_ssh_config(twin: Twin) -> None:
    cfg = str(twin.ssh_config)
    ok = subprocess.run(["ssh", "-F", cfg, f"spbonc@{CAL0}", "true"], capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    jumped = _jump(twin, cfg)
    assert jumped.stdout.split() == [CAL1, "xcal"], jumped.stderr
    failed = subprocess.run(["ssh", "-F", cfg, f"spbonc@{CAL0}", "exit 4"],
                            capture_output=True, timeout=30)
    assert failed.returncode == 4


def test_sixty_four_concurrent_sessions(twin: Twin) -> None:
    hosts = twin.hosts
    targets = [(h, acct) for h in hosts.values() for acct in h.accounts]
    jobs = [targets[i % len(targets)] for i in range(64)]
    identity = str(twin.dir / "ssh" / "id_ed25519")

    async def one(host_addr: str, name: str, account: str) -> tuple[str, str]:
        async with asyncssh.connect(host_addr, port=twin.ssh_port, username=account,
                                    client_keys=[identity],
                                    known_hosts=str(twin.known_hosts)) as conn:
            result = await conn.run("hostname; echo $USER", check=True, timeout=60)
            return name + " " + account, str(result.stdout).replace("\n", " ").strip()

    async def fan_out() -> list[tuple[str, str]]:
        return await asyncio.gather(*(one(h.address, h.name, a) for h, a in jobs))

    results = asyncio.run(asyncio.wait_for(fan_out(), 120))
    assert len(results) == 64
    assert all(want == got for want, got in results)


def test_karabo_check_over_ssh_reads_as_in_the_guidelines(twin: Twin) -> None:
    """11.1: ``source /scratch/[account]/karabo/activate; karabo-check`` lists the webserver."""
    if not twin.karabo_dirs:
        pytest.skip("this twin runs without Karabo (twin-karabo's modules are absent)")
    with connect(twin, CAL0, "spbonc") as conn:
        result = conn.run("source /scratch/spbonc/karabo/activate; karabo-check; echo $KARABO",
                          hide=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert re.search(r"^webserver: up \(pid \d+\) \d+ seconds, normally down, running$",
                     text, re.MULTILINE), text
    assert text.splitlines()[-1] == "/scratch/spbonc/karabo"


def test_signals_reach_the_command_and_its_death_comes_back(twin: Twin) -> None:
    identity = str(twin.dir / "ssh" / "id_ed25519")
    address = twin.hosts[CAL0].address

    async def scenario() -> tuple[str, int | None, str | None]:
        async with asyncssh.connect(address, port=twin.ssh_port, username="spbonc",
                                    client_keys=[identity],
                                    known_hosts=str(twin.known_hosts)) as conn:
            trapped = await conn.create_process(
                "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done")
            assert (await asyncio.wait_for(trapped.stdout.readline(), 30)) == "ready\n"
            trapped.send_signal("TERM")
            done = await asyncio.wait_for(trapped.wait(), 30)
            killed = await conn.run("kill -KILL $$", timeout=30)
            return str(done.stdout), done.exit_status, killed.exit_signal and killed.exit_signal[0]

    out, status, signame = asyncio.run(scenario())
    assert out == "got-term\n" and status == 3
    assert signame == "KILL"
