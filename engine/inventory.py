"""Sites: the instruments, hosts, accounts and device ids that runbooks act on.

A site is a folder `<name>/` holding `site.yaml` and, optionally, more `*.yaml` files
that are merged into it in sorted order (mappings merge key by key; a value defined in
two files is an error naming both places). The format, all keys optional unless noted::

    site: xfel                      # required; must equal the folder name
    description: ...
    extends: other-site             # load that site first, then merge this one over it
    transport:
      ssh: {config, known_hosts, identity, connect_timeout: 10, command_timeout: 60,
            concurrency: 32}       # relative paths: against the file that sets them
      karabo: {broker: null, timeout: 10}   # broker set: replaces every instrument's
      caldb: {...}                 # free-form, read by the caldb transport
      smtp: {host: null, port: 25, security: starttls, sender: det-support@xfel.eu,
             timeout: 10, user: null, password_env: null, password_file: null,
             cafile: null}       # host null: no mail; security: plain | starttls | ssl;
                                 # the password only by env var or file, never here
    vars: {}                        # site-wide variables
    hosts:                          # per-host variables; keys may be host ranges
      max-exfl016: {vars: {}, assumed: [], note: ""}
    groups:                         # site-wide groups
      gateway: {hosts: [exflgateway], vars: {}}
    instruments:
      SPB:
        sase: 1                     # required
        karabo: {gui_server, broker, topic}          # required, all three
        devices: {restart, init, cal_manager, raw_appender, corrected_appender, bridge,
                  detector, daq_run_controller}
        detectors:
          agipd: {type: AGIPD, karabo_id: ..., karabo_da: [AGIPD00, ...], modules: 16,
                  mhz: true, karabo_da_control, db_instance, db_module: [], cal_prefix}
        groups:
          cal_restart: {hosts: ["spb-br-sys-cal-[0-7]"], vars: {account: spbonc}}
        vars: {}
        mail: [spb-instrument@xfel.eu]
    assumed: []   # on site, instrument, group, host, detector: dotted keys of that
    note: ""      # object whose values are not from the guidelines, and why

Host patterns are expanded by `engine.hosts.expand_hosts` when the site loads.
Variables merge in one order, later wins, key by key at the top level:
`site.vars` < `instrument.vars` < `group.vars` < `hosts[<name>].vars`.
Values are not rendered here: a var such as `/scratch/{{ account }}/karabo` stays a
template for the walker. A template that can never render (a syntax error, or a private
attribute such as `''.__class__`, which the sandbox refuses) is an error at its place.

Sites are searched in `$RUNBOOK_INVENTORY_PATH` (os.pathsep-separated folders of site
folders), then `<repo>/inventory`, then `${RUNBOOK_SIM_DIR:-<repo>/.twin}/inventory`;
the first folder with the name wins. `extends` deep-merges this site over its base
(mappings key by key, lists and scalars replaced) before validation, so each problem
points into the file that wrote the value. See docs/inventory.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from ._inventory_models import Detector, Devices, Group, Instrument, KaraboEndpoint, Site
from ._templates_static import unsafe_templates
from ._yaml import Positions, did_you_mean, load_yaml, problem, pydantic_problems
from .errors import RunbookError, ValidationError
from .redact import secret_values

__all__ = [
    "DEFAULT_SITE",
    "Detector",
    "Devices",
    "Group",
    "HostView",
    "Instrument",
    "KaraboEndpoint",
    "Site",
    "Inventory",
    "UnknownName",
    "known_sites",
    "load_site",
    "search_path",
    "site_name",
]

DEFAULT_SITE = "xfel"
REPO_ROOT = Path(__file__).resolve().parent.parent
_PATHS = {"ssh": ("config", "known_hosts", "identity"), "smtp": ("cafile", "password_file")}
_Key = tuple[str | int, ...]


class UnknownName(RunbookError, LookupError):
    """A site, instrument or group name that the inventory does not have."""


@dataclass(frozen=True)
class HostView:
    """One host of a group with its merged vars; from `Inventory.group_hosts`."""

    name: str
    group: str
    vars: dict[str, Any] = field(default_factory=dict)


def search_path() -> list[Path]:
    """The folders searched for site folders, in order of precedence."""
    env = os.environ.get("RUNBOOK_INVENTORY_PATH", "")
    dirs = [Path(entry) for entry in env.split(os.pathsep) if entry]
    dirs.append(REPO_ROOT / "inventory")
    dirs.append(Path(os.environ.get("RUNBOOK_SIM_DIR") or REPO_ROOT / ".twin") / "inventory")
    return dirs


def known_sites() -> dict[str, Path]:
    """Site name -> folder, for every folder holding a `site.yaml` on the search path."""
    found: dict[str, Path] = {}
    for folder in search_path():
        if not folder.is_dir():
            continue
        for sub in sorted(folder.iterdir()):
            if sub.name.startswith(".") or not (sub / "site.yaml").is_file():
                continue
            found.setdefault(sub.name, sub)
    return found


def site_name(cli_value: str | None) -> str:
    """`--site`, else `$RUNBOOK_SITE`, else 'xfel'."""
    return cli_value or os.environ.get("RUNBOOK_SITE") or DEFAULT_SITE


def _unknown_site(name: str, sites: dict[str, Path]) -> str:
    searched = ", ".join(str(p) for p in search_path())
    known = ", ".join(sorted(sites)) or "none"
    return f"unknown site '{name}'{did_you_mean(name, sites)}; known sites: {known} " \
        f"(searched {searched})"


def load_site(name: str) -> Inventory:
    """Load, merge and validate the site `name`; every problem in one ValidationError."""
    sites = known_sites()
    if name not in sites:
        raise UnknownName(_unknown_site(name, sites))
    loaded = _load_tree(name, sites, ())
    problems = _check_assumed(loaded.raw, loaded.positions)
    problems += unsafe_templates(loaded.raw, loaded.positions)
    try:
        site = Site.model_validate(loaded.raw)
    except pydantic.ValidationError as exc:
        found = pydantic_problems(exc, loaded.positions, model=Site)
        problems = [p.replace(": Value error, ", ": ") for p in found] + problems
        raise ValidationError(problems) from exc
    if problems:
        raise ValidationError(problems)
    return Inventory(site, loaded.files)


@dataclass
class _Loaded:
    raw: dict[str, Any]
    positions: Positions
    files: list[Path]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def _site_files(folder: Path) -> list[Path]:
    others = sorted(p for p in folder.glob("*.yaml") if p.name != "site.yaml" and p.is_file())
    return [folder / "site.yaml", *others]


def _read_folder(name: str, folder: Path) -> _Loaded:
    """One site's own files merged into one document, before `extends`."""
    raw: dict[str, Any] = {}
    positions = Positions()
    files = _site_files(folder)
    problems: list[str] = []
    for path in files:
        shown = _display(path)
        doc, pos = load_yaml(path, display=shown)
        if not isinstance(doc, dict):
            what = "is empty" if doc is None else f"holds a {type(doc).__name__}"
            problems.append(problem(pos[()], f"file {what}; a site file holds a mapping"))
            continue
        _resolve_paths(doc, path.parent)
        if not positions:
            positions[()] = pos[()]
        _merge(raw, positions, doc, pos, (), problems)
    if problems:
        raise ValidationError(problems)
    root = positions[()]
    if "site" not in raw:
        raise ValidationError([problem(root, f"missing required key 'site' (write: site: {name})")])
    if raw["site"] != name:
        raise ValidationError([problem(positions.at(("site",)),
                                       f"site '{raw['site']}' is in folder '{name}': "
                                       f"the two must match")])
    return _Loaded(raw, positions, files)


def _resolve_paths(doc: dict[str, Any], folder: Path) -> None:
    """Make relative transport paths absolute against the file's folder, so overlays move."""
    transport = doc.get("transport")
    for section, keys in _PATHS.items():
        body = transport.get(section) if isinstance(transport, dict) else None
        if not isinstance(body, dict):
            continue
        for key in keys:
            value = body.get(key)
            # A NUL byte is left for the model to refuse at the value's position.
            if isinstance(value, str) and value and not value.startswith("~") \
                    and "\x00" not in value:
                body[key] = value if Path(value).is_absolute() else str((folder / value).resolve())


def _load_tree(name: str, sites: dict[str, Path], chain: tuple[str, ...]) -> _Loaded:
    own = _read_folder(name, sites[name])
    base = own.raw.get("extends")
    if base is None:
        return own
    where = own.positions.at(("extends",))
    if not isinstance(base, str):
        raise ValidationError([problem(where, "extends: must name a site")])
    if base == name or base in chain:
        cycle = " -> ".join((*chain, name, base))
        raise ValidationError([problem(where, f"extends cycle: {cycle}")])
    if base not in sites:
        raise ValidationError([problem(where, _unknown_site(base, sites))])
    loaded = _load_tree(base, sites, (*chain, name))
    loaded.positions[()] = own.positions[()]
    _merge(loaded.raw, loaded.positions, own.raw, own.positions, (), None)
    return _Loaded(loaded.raw, loaded.positions, loaded.files + own.files)


def _merge(dst: dict[str, Any], dst_pos: Positions, src: dict[str, Any], src_pos: Positions,
           path: _Key, problems: list[str] | None) -> None:
    """Merge `src` into `dst`: mappings key by key, anything else replaced.

    With `problems` (files of one site) a value set on both sides is a conflict;
    without it (an `extends` overlay) `src` wins. Positions follow the values.
    """
    for key, value in src.items():
        here = (*path, key)
        if key in dst and isinstance(dst[key], dict) and isinstance(value, dict):
            if problems is None:
                dst_pos[here] = src_pos[here]
            _merge(dst[key], dst_pos, value, src_pos, here, problems)
            continue
        if key in dst and problems is not None:
            dotted = ".".join(str(p) for p in here)
            problems.append(problem(src_pos[here],
                                    f"'{dotted}' is already defined at {dst_pos[here]}"))
            continue
        dst[key] = value
        for stale in [k for k in dst_pos if k[: len(here)] == here]:
            del dst_pos[stale]
        dst_pos.update({k: p for k, p in src_pos.items() if k[: len(here)] == here})


def _holders(raw: dict[str, Any]) -> list[_Key]:
    """Paths of the objects that may carry `assumed` and `note`."""
    found: list[_Key] = [()]
    for section in ("groups", "hosts"):
        found += [(section, k) for k in _mapping(raw.get(section))]
    for inst, body in _mapping(raw.get("instruments")).items():
        found.append(("instruments", inst))
        if isinstance(body, dict):
            for section in ("groups", "detectors"):
                found += [("instruments", inst, section, k) for k in _mapping(body.get(section))]
    return found


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_assumed(raw: dict[str, Any], positions: Positions) -> list[str]:
    """Each `assumed:` entry must name a key of its object, so the list stays true."""
    out: list[str] = []
    for holder in _holders(raw):
        node: Any = raw
        for part in holder:
            node = node[part]
        if not isinstance(node, dict) or not isinstance(node.get("assumed"), list):
            continue
        for index, entry in enumerate(node["assumed"]):
            if not isinstance(entry, str):
                continue
            missing = _missing_part(node, entry)
            if missing is not None:
                pos = positions.at((*holder, "assumed", index))
                out.append(problem(pos, f"assumed: '{entry}' names no key here{missing}"))
    return out


def _missing_part(node: Any, dotted: str) -> str | None:
    """None when `dotted` resolves inside `node`, else a did-you-mean hint (maybe '')."""
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return did_you_mean(part, node) if isinstance(node, dict) else ""
    return None


def _json_plain(value: Any) -> Any:
    """JSON-shaped copy without None values: a missing value fails under StrictUndefined
    instead of rendering as 'None'."""
    if isinstance(value, dict):
        return {k: _json_plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_json_plain(v) for v in value if v is not None]
    return value


class Inventory:
    """A loaded, validated site. Get one with `load_site(site_name(cli_value))`."""

    def __init__(self, site: Site, files: list[Path]) -> None:
        self.site = site
        self.files = list(files)
        self._host_entries = site.host_entries()

    def __repr__(self) -> str:
        return f"<Inventory site={self.name!r} files={len(self.files)}>"

    @property
    def name(self) -> str:
        return self.site.site

    def instrument_names(self) -> list[str]:
        """The instruments' names as written, in file order."""
        return list(self.site.instruments)

    def instrument(self, name: str) -> Instrument:
        """The instrument called `name`, matched without regard to case."""
        for key, instrument in self.site.instruments.items():
            if key.casefold() == name.casefold():
                return instrument
        known = list(self.site.instruments)
        hint = did_you_mean(name.upper(), [k.upper() for k in known])
        raise UnknownName(f"unknown instrument '{name}'{hint}; site '{self.name}' has: "
                          f"{', '.join(known) or 'none'}")

    def _group(self, instrument: Instrument | None, group: str) -> Group:
        if instrument is not None and group in instrument.groups:
            return instrument.groups[group]
        if group in self.site.groups:
            return self.site.groups[group]
        known = [*(instrument.groups if instrument else {}), *self.site.groups]
        where = f"instrument {instrument.name}" if instrument else f"site '{self.name}'"
        raise UnknownName(f"unknown group '{group}' for {where}{did_you_mean(group, known)}; "
                          f"groups: {', '.join(known) or 'none'}")

    def group_hosts(self, instrument: str | None, group: str) -> list[HostView]:
        """The hosts of `group` (the instrument's own groups first, then the site's), each
        with vars merged site < instrument < group < host."""
        inst = self.instrument(instrument) if instrument is not None else None
        chosen = self._group(inst, group)
        base = {**self.site.vars, **(inst.vars if inst else {}), **chosen.vars}
        views = []
        for host in chosen.hosts:
            entry = self._host_entries.get(host)
            merged = {**base, **(entry.vars if entry else {})}
            views.append(HostView(host, group, _json_plain(_dump(merged))))
        return views

    def karabo_endpoint(self, instrument: str) -> KaraboEndpoint:
        """The instrument's Karabo endpoint with `transport.karabo.broker` applied."""
        endpoint = self.instrument(instrument).karabo
        broker = self.site.transport.karabo.broker
        return endpoint.model_copy(update={"broker": broker}) if broker else endpoint

    def context(self, instrument: str | None) -> dict[str, Any]:
        """The plain-dict template context: `site`, `instrument` (when given), `vars`."""
        site = self.site.model_dump(mode="json")
        ctx: dict[str, Any] = {
            "site": {
                "name": self.name,
                "description": site["description"],
                "vars": site["vars"],
                "transport": site["transport"],
                "groups": {n: g["hosts"] for n, g in site["groups"].items()},
                # every instrument's addresses: "send-to: <all instrument emails>" (4.3)
                "mail": list(dict.fromkeys(a for i in site["instruments"].values()
                                           for a in i["mail"])),
            },
            "vars": dict(site["vars"]),
        }
        if instrument is not None:
            inst = self.instrument(instrument)
            body = site["instruments"][inst.name]
            ctx["instrument"] = {
                "name": inst.name,
                "sase": inst.sase,
                "karabo": self.karabo_endpoint(inst.name).model_dump(mode="json"),
                "devices": body["devices"],
                "detectors": {n: {"name": n, **d} for n, d in body["detectors"].items()},
                "groups": {n: g["hosts"] for n, g in body["groups"].items()},
                "vars": body["vars"],
                "mail": body["mail"],
                "assumed": body["assumed"],
                "note": body["note"],
            }
            mhz = [n for n, d in body["detectors"].items() if d["mhz"]]
            if len(mhz) == 1:
                ctx["instrument"]["mhz_detector"] = ctx["instrument"]["detectors"][mhz[0]]
            ctx["vars"] = {**site["vars"], **body["vars"]}
        plain: dict[str, Any] = _json_plain(ctx)
        return plain

    def secrets(self) -> set[str]:
        """What `engine.redact` masks: values under secret-looking keys, and the SMTP
        password that the site points at in the environment or a file."""
        found = secret_values(self.site.model_dump(mode="json"))
        smtp = self.site.transport.smtp
        env_name = getattr(smtp, "password_env", None)
        if env_name and os.environ.get(env_name):
            found.add(os.environ[env_name])
        path = getattr(smtp, "password_file", None)
        if path:
            try:
                found.add(Path(path).expanduser().read_text().strip())
            except OSError:
                pass  # sending will say so; nothing to mask if nothing can be read
        return {s for s in found if s}

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the merged, validated site (for plan hashes)."""
        text = json.dumps(self.site.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dump(values: dict[str, Any]) -> dict[str, Any]:
    """Vars as JSON-shaped values (dates become strings), detached from the model."""
    plain: dict[str, Any] = json.loads(json.dumps(values, default=str))
    return plain

