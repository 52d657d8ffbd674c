"""What every SSH connection of one site shares, read once: the ssh_config, keys, known_hosts.

`Site.target(host, user)` resolves a host through the site's ssh_config (HostName, Port,
User, IdentityFile, UserKnownHostsFile, StrictHostKeyChecking, ProxyJump, ConnectTimeout and
every other option that asyncssh applies) once per (host, account), and keeps the result:
parsing a config of many `Host` blocks costs milliseconds per lookup.  Private keys and
known_hosts files are read once per file version (path and modification time), not once
per connection.  Get a site with `site_for(settings)`.
"""

from __future__ import annotations

import copy
import getpass
import os
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncssh
from asyncssh.config import SSHClientConfig, SSHConfig

from ._ssh_errors import SshError, UnsafeCommand
from ._ssh_script import name_problem

__all__ = ["SshSettings", "Target", "Hop", "Site", "site_for", "forget", "parse_jumps"]

_LENIENT = ("no", "off", "accept-new")
# The client's preference among ciphers every OpenSSH server offers: AES-GCM costs the least
# CPU per packet on both ends.  Only used where the ssh_config names no `Ciphers`.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
            "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")


@dataclass(frozen=True)
class SshSettings:
    """The site's `transport.ssh`; get one with `SshSettings.from_transport(ctx.transport)`.

    `config` None means the user's ~/.ssh/config (when it exists), as for OpenSSH.
    """

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
class Hop:
    """One `ProxyJump` hop: connect to `host` (as `user`, on `port` if given) first."""

    host: str
    user: str | None
    port: int | None


@dataclass(frozen=True)
class Target:
    """A host as the ssh_config resolves it, ready to connect (`Site.target`)."""

    host: str                  # the name the runbook gave
    user: str | None           # the account the runbook gave
    address: str               # HostName
    port: int
    options: asyncssh.SSHClientConnectionOptions
    jumps: tuple[Hop, ...]     # ProxyJump hops, the first one first

    @property
    def who(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


_Line = tuple[int, str, list[str] | None, str]
_tokens: dict[tuple[str, int], list[_Line]] = {}


def _tokenized(path: Path) -> list[_Line]:
    """(line number, stripped line, shlex words or None, shlex error) per line of a config,
    once per file version."""
    key = (str(path), path.stat().st_mtime_ns)
    with _files_lock:
        found = _tokens.get(key)
    if found is None:
        found = []
        with open(path) as file:
            for number, raw in enumerate(file, 1):
                line = raw.strip()
                if not line or line[0] == "#":
                    continue
                try:
                    found.append((number, line, shlex.split(line), ""))
                except ValueError as exc:
                    found.append((number, line, None, str(exc)))
        with _files_lock:
            found = _tokens.setdefault(key, found)
    return found


class _HostConfig(SSHClientConfig):
    """asyncssh's client config, also keeping `StrictHostKeyChecking` (asyncssh skips it).

    `parse` is asyncssh's own (asyncssh 2.14-2.24), except that each file is split into
    words once: asyncssh splits every line again for every host it resolves, which costs
    milliseconds per host with a `Host` block per host, as the twin's ssh_config has.
    tests/test_checks_ssh.py compares the two on a table of configs.
    """

    _handlers = {**SSHClientConfig._handlers,
                 "stricthostkeychecking": ("StrictHostKeyChecking", SSHConfig._set_string)}

    def parse(self, path: Path) -> None:
        self._path = path
        self._line_no = 0
        self._matching = True
        self._tokens = {"%": "%"}
        for number, line, split_args, problem in _tokenized(path):
            self._line_no = number
            if split_args is None:
                self._error(problem)
            args: list[str] = []
            loption = ""
            allow_equal = True
            for i, arg in enumerate(split_args, 1):
                if arg.startswith("="):
                    if len(arg) > 1:
                        args.append(arg[1:])
                elif not allow_equal:
                    args.extend(split_args[i - 1:])
                    break
                elif arg.endswith("="):
                    args.append(arg[:-1])
                elif "=" in arg:
                    arg, val = arg.split("=", 1)
                    args.append(arg)
                    args.append(val)
                else:
                    args.append(arg)
                if i == 1:
                    loption = args.pop(0).lower()
                    allow_equal = loption in self._conditionals
            if loption in self._no_split:
                args = [line.lstrip()[len(loption):].strip()]
            if not self._matching and loption not in self._conditionals:
                continue
            try:
                option, handler = self._handlers[loption]
            except KeyError:
                continue
            if not args:
                self._error(f"Missing {option} value")
            handler(self, option, args)
            if args:
                self._error(f'Extra data at end: {" ".join(args)}')
        self._set_tokens()
        for option in self._percent_expand:
            value = self._options.get(option)
            if isinstance(value, list):
                self._options[option] = [self._expand_val(item) for item in value]
            elif isinstance(value, str):
                self._options[option] = self._expand_val(value)


_files: dict[tuple[str, str, int], Any] = {}
_files_lock = threading.Lock()


def _cached(kind: str, path: str, load: Callable[[str], Any]) -> Any:
    """`load(path)` once per file version (path and modification time)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise SshError(f"cannot read {kind} {path}: {exc.strerror}") from exc
    key = (kind, path, mtime)
    with _files_lock:
        if key in _files:
            return _files[key]
    value = load(path)
    with _files_lock:
        return _files.setdefault(key, value)


def _load_key(path: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        raise SshError(f"cannot load SSH key {path}: {exc}") from exc


def _load_known_hosts(path: str) -> asyncssh.SSHKnownHosts:
    try:
        return asyncssh.read_known_hosts(path)
    except (OSError, ValueError) as exc:
        raise SshError(f"cannot read known_hosts {path}: {exc}") from exc


def _expand(path: str | None) -> str | None:
    return os.path.expandvars(os.path.expanduser(path)) if path else None


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root"


_LOCAL_USER = _local_user()


def parse_jumps(value: str) -> tuple[Hop, ...]:
    """`ProxyJump` hops from `[user@]host[:port][,...]`; `none` gives none."""
    if value.strip().lower() == "none":
        return ()
    hops = []
    for part in value.split(","):
        part = part.strip().removeprefix("ssh://")
        user, _, host = part.rpartition("@")
        port: int | None = None
        if host.count(":") == 1:
            host, _, port_text = host.partition(":")
            try:
                port = int(port_text)
            except ValueError as exc:
                raise SshError(f"bad ProxyJump port in {value!r}") from exc
        hops.append(Hop(host, user or None, port))
    return tuple(hops)


class Site:
    """Material shared by every connection of one site; get one with `site_for(settings)`."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        path = _expand(settings.config) or os.path.expanduser("~/.ssh/config")
        self.config_paths: list[str] = [path] if settings.config or os.path.exists(path) else []
        if settings.config and not os.path.exists(path):
            raise SshError(f"cannot read ssh_config {path}: no such file")
        self._targets: dict[tuple[str, str | None, int | None], Target] = {}
        self._lock = threading.Lock()
        self._base = asyncssh.SSHClientConnectionOptions(config=None)

    def target(self, host: str, user: str | None, port: int | None = None) -> Target:
        """`user@host` resolved through the ssh_config, computed once."""
        for what, value in (("host", host), ("account", user)):
            why = name_problem(what, value) if value is not None else None
            if why:
                raise UnsafeCommand(why)
        key = (host, user, port)
        with self._lock:
            found = self._targets.get(key)
        if found is None:
            found = self._resolve(host, user, port)
            with self._lock:
                found = self._targets.setdefault(key, found)
        return found

    def _resolve(self, host: str, user: str | None, port: int | None) -> Target:
        who = f"{user}@{host}" if user else host
        try:
            config = cast(SSHClientConfig, _HostConfig.load(
                None, self.config_paths, False, False, False, _LOCAL_USER,
                user if user else (), host, port if port else ()))
        except (OSError, ValueError, asyncssh.ConfigParseError) as exc:
            raise SshError(f"{who}: bad ssh_config: {exc}") from exc
        address = str(config.get("Hostname", host))
        real_port = int(str(config.get("Port", 22)))
        kwargs: dict[str, Any] = {"config": None, "host": host, "gss_host": None}
        keys = self._keys(config.get("IdentityFile", ()))
        if keys:
            kwargs.update(client_keys=keys, agent_path=None)
        if config.get("Ciphers") is None:
            kwargs["encryption_algs"] = list(_CIPHERS)
        kwargs["known_hosts"] = self._known_hosts(config, host, address, real_port)
        jump_spec = config.get("ProxyJump")
        jumps = parse_jumps(str(jump_spec)) if jump_spec else ()
        # The config object that asyncssh would have loaded itself: every option it knows
        # (HostName, Port, User, ConnectTimeout, Ciphers, ...) applies from it, no second
        # parse.  Explicit arguments win over it, as asyncssh documents.
        base = copy.copy(self._base)
        base.config = config
        try:
            options = asyncssh.SSHClientConnectionOptions(base, **kwargs)
        except (OSError, ValueError, asyncssh.Error) as exc:
            raise SshError(f"{who}: bad ssh_config entry: {exc}") from exc
        return Target(host, user, address, real_port, options, jumps)

    def _keys(self, from_config: object) -> list[asyncssh.SSHKey]:
        wanted: Sequence[object] = ([self.settings.identity] if self.settings.identity
                                    else list(from_config) if isinstance(from_config, list)
                                    else [])
        for candidate in wanted:
            path = _expand(str(candidate))
            if path and os.path.exists(path):
                return [_cached("key", path, _load_key)]
        return []

    def _known_hosts(self, config: SSHClientConfig, host: str, address: str, port: int) -> object:
        """What asyncssh verifies the host key against: None accepts any key."""
        files = config.get("UserKnownHostsFile")
        wanted = self.settings.known_hosts or (files[0] if isinstance(files, list) and files
                                               else None)
        path = _expand(str(wanted)) or os.path.expanduser("~/.ssh/known_hosts")
        strict = str(config.get("StrictHostKeyChecking", "yes")).lower()
        if not wanted and not os.path.exists(path):
            known = None
        else:
            known = _cached("known_hosts", str(path), _load_known_hosts)
        names = dict.fromkeys([address, host])

        def trusted(_host: str, addr: str, _port: int | None) -> tuple[list[Any], ...]:
            """Keys known for the HostName, the address connected to, or the name given."""
            found: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
            if known is None:
                return found
            for name, ip in [(n, addr) for n in names]:
                keys, cas, revoked = known.match(name, ip, port if port != 22 else None)[:3]
                found[0].extend(keys)
                found[1].extend(cas)
                found[2].extend(revoked)
            return found

        if strict in _LENIENT and not any(trusted(address, address, port)[:2]):
            return None     # unknown hosts are accepted; a changed key is still refused
        return trusted


_sites: dict[tuple[SshSettings, int], Site] = {}


def site_for(settings: SshSettings) -> Site:
    """The site for these settings, read again when its ssh_config changes."""
    path = _expand(settings.config) or os.path.expanduser("~/.ssh/config")
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        mtime = -1
    key = (settings, mtime)
    with _files_lock:
        found = _sites.get(key)
    if found is None:
        found = Site(settings)
        with _files_lock:
            found = _sites.setdefault(key, found)
    return found


def forget() -> None:
    """Drop every site and file read so far: the next connection reads them again."""
    with _files_lock:
        _sites.clear()
        _files.clear()
        _tokens.clear()
