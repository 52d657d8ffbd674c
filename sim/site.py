"""What a client needs to reach the twin as if it were the facility: ssh_config, known_hosts,
and the ``sim`` site overlay of the inventory.

The host names stay the facility's; only the ssh_config knows that
``spb-br-sys-cal-0`` is 127.0.1.1.  No ``User`` is set: the runbook names the account
(``spbonc@...``, ``xcal@...``), as it must at the facility.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from ruamel.yaml import YAML

from sim import caldb_twin
from sim.hosts import OPERATOR, TwinHost
from sim.sshd import KeyPaths

__all__ = ["ssh_config_text", "known_hosts_text", "site_overlay", "write_ssh_files",
           "write_site", "SitePaths"]


class SitePaths:
    """Files that `write_ssh_files` and `write_site` produce for the twin in `twin_dir`."""

    def __init__(self, twin_dir: Path) -> None:
        self.ssh_config = twin_dir / "ssh" / "ssh_config"
        self.known_hosts = twin_dir / "ssh" / "known_hosts"
        self.site = twin_dir / "inventory" / "sim" / "site.yaml"


def ssh_config_text(hosts: Mapping[str, TwinHost], port: int, keys: KeyPaths,
                    known_hosts: Path) -> str:
    lines = [
        "# Written by `runbook sim up`: the facility's host names on the twin's addresses.",
        "",
    ]
    for host in hosts.values():
        lines += [f"Host {host.name}", f"    HostName {host.address}", f"    Port {port}", ""]
    lines += [
        "Host " + " ".join(hosts),
        f"    IdentityFile {keys.identity}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {known_hosts}",
        "    StrictHostKeyChecking yes",
        "    PasswordAuthentication no",
        "    KbdInteractiveAuthentication no",
        "    ConnectTimeout 10",
        "",
    ]
    return "\n".join(lines)


def known_hosts_text(hosts: Mapping[str, TwinHost], port: int, keys: KeyPaths) -> str:
    key = " ".join(keys.host_key_pub.read_text().split()[:2])
    lines = []
    for host in hosts.values():
        names = [host.name, host.address]
        if port != 22:
            names = [f"[{n}]:{port}" for n in names]
        lines.append(f"{','.join(names)} {key}")
    return "\n".join(lines) + "\n"


def write_ssh_files(twin_dir: Path, hosts: Mapping[str, TwinHost], port: int) -> SitePaths:
    paths = SitePaths(twin_dir)
    keys = KeyPaths(twin_dir)
    paths.known_hosts.write_text(known_hosts_text(hosts, port, keys))
    paths.ssh_config.write_text(ssh_config_text(hosts, port, keys, paths.known_hosts))
    return paths


def site_overlay(twin_dir: Path, broker_url: str | None, topics: Mapping[str, str],
                 smtp_port: int | None = None) -> dict[str, object]:
    """The ``sim`` site as plain data: extends ``xfel``; the overlay wins on merge.

    With `smtp_port` the site mails the twin's sink (`sim.smtp`) on loopback, in plain
    SMTP: the facility's relay is not named in the guidelines."""
    paths = SitePaths(twin_dir)
    keys = KeyPaths(twin_dir)
    transport: dict[str, object] = {
        "ssh": {
            "config": str(paths.ssh_config),
            "known_hosts": str(paths.known_hosts),
            "identity": str(keys.identity),
        },
    }
    transport["caldb"] = {"zmq_interface": caldb_twin.max_web_interface("max-exfl016"),
                          "access_points": caldb_twin.MAX_WEB_COUNT,
                          "url": caldb_twin.db_url(twin_dir),
                          "store_root": str(caldb_twin.store_root(twin_dir))}
    if smtp_port is not None:
        transport["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "plain"}
    instruments: dict[str, object] = {}
    if broker_url is not None:
        transport["karabo"] = {"broker": broker_url}
        instruments = {name: {"karabo": {"broker": broker_url, "topic": topic}}
                       for name, topic in topics.items()}
    return {
        "site": "sim",
        "extends": "xfel",
        "transport": transport,
        "instruments": instruments,
        "vars": {
            "twin_dir": str(twin_dir),
            "hosts_file": str(twin_dir / "hosts.json"),
            "operator_account": OPERATOR,
        },
    }


def write_site(twin_dir: Path, broker_url: str | None, topics: Mapping[str, str],
               smtp_port: int | None = None) -> Path:
    path = SitePaths(twin_dir).site
    path.parent.mkdir(parents=True, exist_ok=True)
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buf = io.StringIO()
    buf.write("# The `sim` site, written by `runbook sim up`. Do not edit: `up` rewrites it.\n")
    yaml.dump(site_overlay(twin_dir, broker_url, topics, smtp_port), buf)
    path.write_text(buf.getvalue())
    return path
