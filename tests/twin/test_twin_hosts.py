"""sim.hosts, sim.site and the twin's life cycle (up, status, down) for hosts and SSH."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import fabric
import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from sim import hosts, procs, site
from sim import twin as twinmod
from sim.cli import app


def spec(name: str, *accounts: str, cuda: tuple[str, ...] = ()) -> hosts.HostSpec:
    return hosts.HostSpec(name, accounts, cuda)


def test_allocate_gives_each_host_its_own_loopback_address(tmp_path: Path) -> None:
    got = hosts.allocate(tmp_path, 7, [spec("spb-br-sys-cal-0", "spbonc"),
                                       spec("spb-br-sys-cal-1", "spbonc"),
                                       spec("spb-br-sys-cal-0", "xcal"),
                                       *hosts.FACILITY_HOSTS])
    addresses = [h.address for h in got.values()]
    assert len(set(addresses)) == len(addresses) == 2 + len(hosts.FACILITY_HOSTS)
    assert all(a.startswith("127.0.7.") for a in addresses)
    assert "127.0.0.1" not in addresses
    assert got["spb-br-sys-cal-0"].accounts == ("spbonc", "xcal")
    assert got["spb-br-sys-cal-0"].root == tmp_path / "hosts" / "spb-br-sys-cal-0"


@pytest.mark.parametrize("bad", ["", "../etc", ".hidden", "a/b"])
def test_allocate_rejects_names_that_are_not_host_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(hosts.TwinError, match="invalid host name"):
        hosts.allocate(tmp_path, 1, [spec(bad, "x")])


def test_allocate_rejects_a_slot_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(hosts.TwinError, match="outside 1..254"):
        hosts.allocate(tmp_path, 0, [spec("a", "x")])


def test_hosts_json_round_trips_with_accounts_and_cuda_from_the_tree(tmp_path: Path) -> None:
    made = hosts.allocate(tmp_path, 3, [spec("spb-br-sys-cal-0", "spbonc", "xcal",
                                             cuda=("10.1",)),
                                        spec("max-exfl016", "xcal")])
    for host in made.values():
        hosts.make_tree(host, tmp_path)
    hosts.write_hosts(tmp_path, made)
    assert json.loads((tmp_path / "hosts.json").read_text()) == {
        "spb-br-sys-cal-0": "127.0.3.1", "max-exfl016": "127.0.3.2"}
    assert hosts.load_hosts(tmp_path) == made


def test_load_hosts_without_a_twin_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(hosts.TwinError, match="runbook sim up"):
        hosts.load_hosts(tmp_path)


def test_make_tree_lays_out_the_facility_paths(tmp_path: Path) -> None:
    (host,) = hosts.allocate(tmp_path, 2, [spec("spb-br-sys-cal-3", "spbonc", "xcal",
                                                cuda=("10.1",))]).values()
    hosts.make_tree(host, tmp_path)
    for account in ("spbonc", "xcal"):
        assert (host.root / "scratch" / account).is_dir()
        bashrc = (host.root / "home" / account / ".bashrc").read_text()
        assert "alias ll=" in bashrc
        assert ".bashrc" in (host.root / "home" / account / ".bash_profile").read_text()
    assert (host.root / "usr" / "local" / "cuda-10.1" / "bin").is_dir()
    assert not any(p.name.startswith("cuda-1") and p.name != "cuda-10.1"
                   for p in (host.root / "usr" / "local").iterdir())
    assert (tmp_path / "gpfs").is_dir()


def test_resolve_uses_the_table_named_by_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "hosts.json"
    table.write_text(json.dumps({"spb-br-sys-cal-0": "127.0.9.1"}))
    monkeypatch.setenv("RUNBOOK_TWIN_HOSTS", str(table))
    assert hosts.resolve("spb-br-sys-cal-0") == "127.0.9.1"
    assert hosts.resolve("127.0.9.5") == "127.0.9.5"
    with pytest.raises(hosts.TwinError, match="unknown host 'mid-br-sys-cal-0'"):
        hosts.resolve("mid-br-sys-cal-0")
    table.write_text(json.dumps({"spb-br-sys-cal-0": "127.0.9.2"}))
    os.utime(table, (1, 1))  # a different mtime, as a rewrite by `up` would give
    assert hosts.resolve("spb-br-sys-cal-0") == "127.0.9.2"
    monkeypatch.delenv("RUNBOOK_TWIN_HOSTS")
    with pytest.raises(hosts.TwinError, match="RUNBOOK_TWIN_HOSTS is not set"):
        hosts.resolve("spb-br-sys-cal-0")


def test_claim_slot_never_hands_out_a_held_slot(tmp_path: Path) -> None:
    first, fd1 = hosts.claim_slot(tmp_path)
    second, fd2 = hosts.claim_slot(tmp_path)
    try:
        assert first != second
    finally:
        os.close(fd1)
    third, fd3 = hosts.claim_slot(tmp_path)
    os.close(fd2)
    os.close(fd3)
    assert third not in (first, second)  # a slot just released is taken last


def test_claim_slot_takes_the_slot_used_longest_ago(tmp_path: Path) -> None:
    for slot in range(1, 255):
        (tmp_path / f"slot-{slot}.lock").touch()
    os.utime(tmp_path / "slot-42.lock", (1, 1))
    slot, fd = hosts.claim_slot(tmp_path)
    os.close(fd)
    assert slot == 42


def test_ssh_config_and_known_hosts_name_every_host(tmp_path: Path) -> None:
    from sim import sshd

    made = hosts.allocate(tmp_path, 4, [spec("spb-br-sys-cal-0", "spbonc"),
                                        spec("exflgateway", "operator")])
    keys = sshd.generate_keys(tmp_path)
    config = site.ssh_config_text(made, 2222, keys, tmp_path / "kh")
    assert "Host spb-br-sys-cal-0\n    HostName 127.0.4.1\n    Port 2222" in config
    assert "StrictHostKeyChecking yes" in config
    assert "\n    User " not in config
    known = site.known_hosts_text(made, 2222, keys).splitlines()
    assert known[0].startswith("[spb-br-sys-cal-0]:2222,[127.0.4.1]:2222 ssh-ed25519 ")
    assert site.known_hosts_text(made, 22, keys).startswith("spb-br-sys-cal-0,127.0.4.1 ")


@pytest.mark.twin
def test_site_overlay_points_at_the_twin(twin: twinmod.Twin) -> None:
    data = YAML(typ="safe").load(twin.site_file)
    assert data["site"] == "sim" and data["extends"] == "xfel"
    ssh = data["transport"]["ssh"]
    assert Path(ssh["config"]) == twin.ssh_config and Path(ssh["identity"]).is_file()
    assert Path(ssh["known_hosts"]) == twin.known_hosts
    assert data["vars"]["twin_dir"] == str(twin.dir)
    if twin.broker_url:
        assert data["instruments"]["SPB"]["karabo"] == {"broker": twin.broker_url,
                                                        "topic": twin.topics["SPB"]}
    assert twin.topics["SPB"].startswith(twin.topic_prefix)


@pytest.mark.twin
def test_engine_loads_the_sim_site(twin: twinmod.Twin) -> None:
    from engine.inventory import load_site

    inventory = load_site("sim")
    assert inventory.site.transport.ssh.config == str(twin.ssh_config)
    assert inventory.site.transport.ssh.known_hosts == str(twin.known_hosts)
    smtp = inventory.site.transport.smtp  # the twin's mail sink, in plain SMTP on loopback
    assert (smtp.host, smtp.port, smtp.security) == ("127.0.0.1", twin.smtp_port, "plain")
    assert (twin.mail_dir / "server.json").exists()
    if twin.broker_url:
        endpoint = inventory.karabo_endpoint("SPB")
        assert (endpoint.broker, endpoint.topic) == (twin.broker_url, twin.topics["SPB"])


@pytest.mark.twin
def test_status_reports_hosts_and_services(twin: twinmod.Twin) -> None:
    info = twinmod.status(twin.dir)
    names = {h["name"]: h for h in info["hosts"]}  # type: ignore[attr-defined,index]
    assert names["spb-br-sys-cal-0"]["ssh"] is True
    assert {"exflgateway", "max-exfl016", "exflonc10"} <= set(names)
    services = info["services"]
    assert all(s["alive"] for s in services)  # type: ignore[attr-defined,index]
    assert any(s["name"] == "sshd" for s in services)  # type: ignore[attr-defined,index]


@pytest.mark.twin
def test_up_then_down_leaves_nothing_running(twin_factory: twinmod.TwinFactory) -> None:
    started = twin_factory(["FXE"], karabo=False)
    state = json.loads((started.dir / "state.json").read_text())
    recorded = [procs.Proc.from_dict(p) for p in state["procs"]]
    assert recorded and all(procs.alive(p.pid, p.start) for p in recorded)
    addresses = [h.address for h in started.hosts.values()]
    assert all(procs.port_open(a, started.ssh_port) for a in addresses)
    config = fabric.Config(runtime_ssh_path=str(started.ssh_config),
                           overrides={"run": {"in_stream": False}})
    with fabric.Connection("sa1-br-sys-cal-2", user="fxeonc", config=config) as conn:
        left = conn.run("nohup sleep 600 >/dev/null 2>&1 & echo $!", hide=True)
    stray = int(left.stdout)
    assert procs.alive(stray)

    assert twinmod.down(started.dir) == []
    assert not any(procs.alive(p.pid, p.start) for p in recorded)
    assert not procs.alive(stray)
    assert not any(procs.port_open(a, started.ssh_port, 0.2) for a in addresses)
    fd = os.open(hosts.SLOT_LOCK_DIR / f"slot-{started.slot}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the slot is free again
    finally:
        os.close(fd)
    with pytest.raises(procs.TwinError, match="no twin recorded"):
        twinmod.status(started.dir)


@pytest.mark.twin
def test_gateway_falls_back_when_port_22_is_taken(twin_factory: twinmod.TwinFactory) -> None:
    blocker = socket.socket()
    blocker.bind(("0.0.0.0", 0))  # the wildcard blocks that port on every twin address
    blocker.listen()
    try:
        started = twin_factory(["SCS"], karabo=False, ssh_port=blocker.getsockname()[1])
        assert started.ssh_port == 2222
        assert "Port 2222" in started.ssh_config.read_text()
        config = fabric.Config(runtime_ssh_path=str(started.ssh_config),
                               overrides={"run": {"in_stream": False}})
        with fabric.Connection("scs-br-sys-cal-1", user="scsonc", config=config) as conn:
            assert conn.run("hostname", hide=True).stdout.strip() == "scs-br-sys-cal-1"
    finally:
        blocker.close()


@pytest.mark.twin
def test_a_second_up_in_the_same_folder_is_refused(twin: twinmod.Twin) -> None:
    with pytest.raises(procs.TwinError, match="already running"):
        twinmod.up(twin.dir, ["SPB"], karabo=False)


def test_up_rejects_an_unknown_instrument(tmp_path: Path) -> None:
    with pytest.raises(procs.TwinError, match="unknown instrument"):
        twinmod.up(tmp_path, ["HED"])
    assert not (tmp_path / "state.json").exists()


@pytest.mark.twin
def test_cli_up_status_down(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = tmp_path / "cli-twin"
    result = runner.invoke(app, ["up", "--dir", str(folder), "--no-webservice",
                                 "--instruments", "MID",
                                 "--hosts-only"])
    try:
        assert result.exit_code == 0, result.output
        assert "twin up in" in result.output
        shown = runner.invoke(app, ["status", "--dir", str(folder)])
        assert shown.exit_code == 0
        assert "mid-br-sys-cal-7" in shown.output and "ssh up" in shown.output
        as_json = json.loads(runner.invoke(app, ["status", "--dir", str(folder),
                                                 "--json"]).output)
        assert as_json["instruments"] == ["MID"]
    finally:
        stopped = runner.invoke(app, ["down", "--dir", str(folder)])
    assert stopped.exit_code == 0, stopped.output
    assert "twin down" in stopped.output
    gone = runner.invoke(app, ["status", "--dir", str(folder)])
    assert gone.exit_code == 1 and "no twin recorded" in gone.output


def test_cli_module_does_not_import_heavy_modules() -> None:
    code = ("import sys, sim.cli; heavy = [m for m in ('karabo', 'fabric', 'numba', 'asyncssh',"
            " 'paramiko') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def _karabo_check(twin: twinmod.Twin, host: str) -> str:
    config = fabric.Config(runtime_ssh_path=str(twin.ssh_config),
                           overrides={"run": {"in_stream": False}})
    with fabric.Connection(host, user="spbonc", config=config) as conn:
        out = conn.run("source /scratch/spbonc/karabo/activate; karabo-check", hide=True,
                       warn=True).stdout
    return re.sub(r"\x1b\[[0-9;]*m", "", out)


@pytest.mark.twin
@pytest.mark.slow
def test_scenario_at_up_and_inject_later(twin_factory: twinmod.TwinFactory,
                                         tmp_path: Path) -> None:
    """11.1 "a webserver on one of the hosts is not running", caused at up and by inject."""
    if not twinmod._karabo_available():
        pytest.skip("twin-karabo's modules are absent")
    first = tmp_path / "first.yaml"
    first.write_text("instrument: SPB\nfaults:\n"
                     "  - {kind: webserver_down, host: spb-br-sys-cal-3}\n")
    started = twin_factory(["SPB"], scenario=first)
    assert re.search(r"^webserver: down", _karabo_check(started, "spb-br-sys-cal-3"), re.M)
    assert re.search(r"^webserver: up", _karabo_check(started, "spb-br-sys-cal-5"), re.M)

    runner = CliRunner()
    second = tmp_path / "second.yaml"
    second.write_text("instrument: SPB\nfaults:\n"
                      "  - {kind: webserver_down, host: spb-br-sys-cal-5}\n")
    done = runner.invoke(app, ["inject", str(second), "--dir", str(started.dir)])
    assert done.exit_code == 0, done.output
    assert re.search(r"^webserver: down", _karabo_check(started, "spb-br-sys-cal-5"), re.M)
    faults = twinmod.status(started.dir)["faults"]
    assert [f["fault"]["host"] for f in faults] == [  # type: ignore[attr-defined,index]
        "spb-br-sys-cal-3", "spb-br-sys-cal-5"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("instrument: SPB\nfaults:\n  - {kind: webserver_gone, host: x}\n")
    refused = runner.invoke(app, ["inject", str(bad), "--dir", str(started.dir)])
    assert refused.exit_code == 1
    assert "bad.yaml:3:" in refused.output
    assert all(s["alive"] for s in twinmod.status(started.dir)["services"])  # type: ignore
