"""What the twin looks like from outside, and what changed between two looks.

A plan must change nothing; the twin proves it by comparing two snapshots taken around it.
``take(twin)`` records, for every instrument of the twin:

- **devices**: each device of the instrument's layout, through Karabo (``getSchema`` and
  ``getConfiguration``): its state, status and pid, and every property that is not
  read-only (init-only and reconfigurable leaves). Read-only values (rates, latencies,
  train ids) move on their own and are left out; a device that does not answer is recorded
  with the reason, so that a vanished device is a difference too;
- **services**: each daemontools service of every Karabo installation (``svstat``): up or
  down, its pid and since when it has been in that state;
- **files**: each service's run file, as text.

``diff(before, after)`` lists every difference as one line (empty: nothing changed).
Karabo binds a process to one topic, so the devices of each instrument are read in a
child process (``python -m sim.snapshot``) started for the snapshot: snapshots are few, so
it is not kept as ``sim.devices.client.run_actions`` keeps its children.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.devices.client import KaraboClientError
from sim.karabo_env import VENV_BIN, services_of

__all__ = ["Snapshot", "take", "diff", "device_ids", "read_devices"]

READ_ONLY = 2            # Karabo's AccessMode.READONLY
LEAF = 0                 # Karabo's NodeType.Leaf
ALWAYS = ("state", "status", "pid")
SINCE_TOLERANCE_S = 2.0  # svstat counts whole seconds
_SVSTAT = re.compile(r"^(?P<path>\S+): (?P<what>up|down)(?: \(pid (?P<pid>\d+)\))? "
                     r"(?P<seconds>\d+) seconds")


@dataclass
class Snapshot:
    """The twin's observable state at one moment; get one from ``take``."""

    taken: float
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        return cls(taken=float(data["taken"]), devices=dict(data["devices"]),
                   services=dict(data["services"]), files=dict(data["files"]))


def device_ids(instrument: str, twin_dir: str = ".") -> list[str]:
    """Every device id of the instrument's layout."""
    from sim.layout import instrument_layout

    return instrument_layout(instrument, twin_dir=twin_dir).device_ids


def read_devices(broker: str, topic: str, ids: list[str], timeout: float = 10.0, *,
                 in_process: bool = False) -> dict[str, dict[str, Any]]:
    """State, status, pid and the writable properties of each device, read in a child
    process, or with this process's own Karabo client (``in_process``: it is bound to
    ``topic`` for good, see ``sim.devices.client.ensure_client``)."""
    if in_process:
        from karabo.middlelayer.eventloop import synchronize

        from sim.devices.client import ensure_client

        ensure_client(broker, topic)
        return dict(synchronize(_read_all)(ids, timeout, timeout=timeout * 3))
    env = dict(os.environ, KARABO_BROKER=broker, KARABO_BROKER_TOPIC=topic)
    request = json.dumps({"devices": ids, "timeout": timeout})
    try:
        res = subprocess.run([sys.executable, "-m", "sim.snapshot"], input=request,
                             capture_output=True, text=True, env=env,
                             timeout=timeout * 3 + 30)
    except subprocess.TimeoutExpired as exc:
        raise KaraboClientError(f"reading {len(ids)} devices timed out") from exc
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    raise KaraboClientError(f"reading the devices failed: {res.stdout[-2000:]}"
                            f"{res.stderr[-2000:]}")


def _services(karabo_dirs: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """svstat of every service of every installation (one call), and their run files."""
    where: dict[str, str] = {}       # service folder -> <host>/<account>/<service>
    files: dict[str, str] = {}
    for karabo in map(Path, karabo_dirs):
        if not (karabo / "var" / "service").is_dir():
            continue
        for name in services_of(karabo):
            folder = karabo / "var" / "service" / name
            key = f"{karabo.parents[2].name}/{karabo.parent.name}/{name}"
            where[str(folder)] = key
            run = folder / "run"
            files[f"{key}/run"] = run.read_text(errors="replace") if run.exists() else ""
    if not where:
        return {}, files
    res = subprocess.run([str(VENV_BIN / "svstat"), *where], capture_output=True, text=True,
                         timeout=30, check=False)
    now = time.time()
    seen = {m["path"]: m for m in map(_SVSTAT.match, res.stdout.splitlines()) if m}
    services: dict[str, dict[str, Any]] = {}
    for folder, key in where.items():
        m = seen.get(folder)
        services[key] = ({"up": m["what"] == "up", "pid": int(m["pid"]) if m["pid"] else None,
                          "since": round(now - int(m["seconds"]), 1)} if m else
                         {"up": None, "pid": None, "since": None, "svstat": "not supervised"})
    return services, files


def take(twin: Any, *, timeout: float = 10.0, in_process: bool = False) -> Snapshot:
    """A snapshot of a running twin (a ``sim.twin.Twin``, or its folder); ``in_process``
    reads the devices with this process's Karabo client (one instrument only)."""
    from sim import twin as twinmod

    if not isinstance(twin, twinmod.Twin):
        twin = twinmod.load(Path(twin))
    snap = Snapshot(taken=time.time())
    if twin.broker_url:
        for instrument in twin.instruments:
            ids = device_ids(instrument, str(twin.dir))
            got = read_devices(twin.broker_url, twin.topics[instrument], ids, timeout,
                               in_process=in_process)
            snap.devices.update(got)
    snap.services, snap.files = _services(list(twin.karabo_dirs))
    return snap


def diff(before: Snapshot, after: Snapshot, *,
         since_tolerance: float = SINCE_TOLERANCE_S) -> list[str]:
    """Every difference between two snapshots, one line each; empty when nothing changed."""
    out: list[str] = []
    for device in sorted(set(before.devices) | set(after.devices)):
        out += _changes(f"device {device}", before.devices.get(device),
                        after.devices.get(device))
    for service in sorted(set(before.services) | set(after.services)):
        a, b = before.services.get(service), after.services.get(service)
        if a is None or b is None:
            out.append(f"service {service}: {'appeared' if a is None else 'vanished'}")
            continue
        for key in ("up", "pid"):
            if a.get(key) != b.get(key):
                out.append(f"service {service}: {key} {a.get(key)!r} -> {b.get(key)!r}")
        since_a, since_b = a.get("since"), b.get("since")
        if (since_a is None) != (since_b is None) or (
                since_a is not None and abs(float(since_a) - float(since_b)) > since_tolerance):
            out.append(f"service {service}: {'up' if b.get('up') else 'down'} since "
                       f"{since_a} -> {since_b}")
    for path in sorted(set(before.files) | set(after.files)):
        a_text, b_text = before.files.get(path), after.files.get(path)
        if a_text != b_text:
            what = ("appeared" if a_text is None else "vanished" if b_text is None
                    else "changed")
            out.append(f"file {path}: {what}")
    return out


def _changes(what: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    if a is None or b is None:
        return [f"{what}: {'appeared' if a is None else 'vanished'}"]
    return [f"{what}: {key} {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


# ---- the child process: one topic, every device at once ---------------------------------------

def _main() -> int:
    request = json.loads(sys.stdin.read())
    from sim.devices.client import ensure_client

    ensure_client(os.environ["KARABO_BROKER"], os.environ["KARABO_BROKER_TOPIC"])
    from karabo.middlelayer.eventloop import synchronize

    result = synchronize(_read_all)(list(request["devices"]), float(request["timeout"]),
                                    timeout=float(request["timeout"]) * 3)
    print("RESULT " + json.dumps(result, default=str), flush=True)
    os._exit(0)  # skip the client's slow, noisy shutdown


async def _read_all(ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    import asyncio

    return dict(await asyncio.gather(*(_read_one(d, timeout) for d in ids)))


async def _read_one(device: str, timeout: float) -> tuple[str, dict[str, Any]]:
    import asyncio

    from karabo.middlelayer import Hash, KaraboError, getConfiguration, getSchema

    from sim.devices._base import _plain

    try:
        schema, conf = await asyncio.wait_for(
            asyncio.gather(getSchema(device), getConfiguration(device)), timeout)
    except (TimeoutError, KaraboError) as exc:
        return device, {"unreadable": f"{type(exc).__name__}: {exc}".strip()}
    attrs = schema.hash
    values: dict[str, Any] = {}
    for path in conf.paths():
        if isinstance(conf[path], Hash) or path not in attrs:
            continue
        meta = attrs[path, ...]
        if path in ALWAYS or (meta.get("nodeType") == LEAF
                              and meta.get("accessMode") != READ_ONLY):
            values[path] = _plain(conf[path])
    return device, values


if __name__ == "__main__":
    sys.exit(_main())
