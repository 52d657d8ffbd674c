"""Fan-out of ssh.* checks over 64 twin hosts, walked by the real engine (issue 4, Benchmark).

    .venv/bin/python benchmarks/fanout.py [--hosts 64] [--sleep 0.2]

Starts its own hosts-and-SSH-only twin (the twin's real SSH gateway, one loopback address
and mount namespace per host, built with sim's functions), writes a site and a runbook into
a temporary folder, and walks the runbook with `engine.walk.Walker`:

1. cold: a `foreach` of `ssh.command` (`sleep 0.2`) over every host, on new connections;
2. warm: the same again, later in the same walk, on the connections already open;
3. warm x3: per host, an `all` of three read-only checks in one step, as a hypothesis
   of 11.3 has (karabo-check, a process check and a log grep, each also sleeping);

then the cold and warm steps again with a concurrency bound of 1, and a `no-online-data`
diagnosis of a healthy full twin when that runbook can be walked.  It prints, per case,
the wall time divided by the sleep, and this process's CPU time (the client's).
Goals (issue 4): cold <= 4x, warm <= 2x (also with three commands per host).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydantic import BaseModel, ConfigDict  # noqa: E402

from engine.context import Context  # noqa: E402
from engine.registry import Registry, check  # noqa: E402
from engine.result import Result  # noqa: E402

ACCOUNT = "bench"
LOG = "/home/bench/server.log"


# ---- a hosts-only twin with N hosts ---------------------------------------------------------

def start_hosts_twin(twin_dir: Path, count: int) -> Any:
    """Hosts bench-00.. with one account each, their namespaces and the SSH gateway.

    sim.twin.up derives its hosts from the instrument layouts; this composes the same
    functions for a chosen number of hosts.  `sim.twin.down(twin_dir)` stops it.
    """
    from sim import hosts as hostmod
    from sim import procs, site, sshd
    from sim import twin as twinmod

    twin_dir.mkdir(parents=True, exist_ok=True)
    slot, lock_fd = hostmod.claim_slot()
    twin = twinmod.Twin(dir=twin_dir, instruments=("SPB",), slot=slot,
                        topic_prefix="bench_")
    twin.save()
    try:
        specs = [hostmod.HostSpec(f"bench-{i:02d}", (ACCOUNT,)) for i in range(count)]
        hosts = hostmod.allocate(twin_dir, slot, specs)
        for host in hosts.values():
            hostmod.make_tree(host, twin_dir)
            (host.home(ACCOUNT) / "server.log").write_text(
                "INFO  started\nWARN  Could not find constant Offset: "
                "Resource temporarily unavailable\n" * 3)
        hostmod.write_hosts(twin_dir, hosts)
        for name, proc in hostmod.start_namespaces(twin_dir, hosts).items():
            twin.procs.append(proc)
            twin.ns_inodes[name] = os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino
        twin.save()
        keys = sshd.generate_keys(twin_dir)
        gateway = twin.record(procs.start(
            [sys.executable, "-m", "sim.sshd", "--twin", str(twin_dir), "--lock-fd",
             str(lock_fd)], name="sshd", log=twin_dir / "logs" / "sshd.log",
            pass_fds=[lock_fd], env={**os.environ, "PYTHONPATH": str(REPO)}))
        procs.wait_for(keys.gateway.exists, timeout=30, what="the SSH gateway", proc=gateway)
        twin.ssh_port = int(sshd.read_gateway(twin_dir)["port"])  # type: ignore[call-overload]
        site.write_ssh_files(twin_dir, hosts, twin.ssh_port)
        twin.save()
    except BaseException:
        twinmod.down(twin_dir)
        raise
    finally:
        os.close(lock_fd)
    return twin


# ---- the site, the runbook, the walk --------------------------------------------------------

class Mark(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


_marks: dict[str, tuple[float, float]] = {}


@check("bench.mark")
def mark(p: Mark, ctx: Context) -> Result:
    """Records when the walk got here (wall clock and this process's CPU time)."""
    _marks[p.name] = (time.monotonic(), time.process_time())
    return Result.ok(f"mark {p.name}")


def write_site(folder: Path, twin: Any, concurrency: int) -> None:
    last = len(twin.hosts) - 1
    site = folder / "fanout"
    site.mkdir(parents=True, exist_ok=True)
    (site / "site.yaml").write_text(textwrap.dedent(f"""\
        site: fanout
        description: the fan-out benchmark's twin hosts
        transport:
          ssh:
            config: {twin.ssh_config}
            known_hosts: {twin.known_hosts}
            identity: {twin.dir / "ssh" / "id_ed25519"}
            concurrency: {max(concurrency, 1)}
        instruments:
          BENCH:
            sase: 1
            karabo: {{gui_server: bench-00, broker: "amqp://127.0.0.1:1", topic: BENCH}}
            groups:
              hosts: {{hosts: ["bench-[00-{last:02d}]"], vars: {{account: {ACCOUNT}}}}}
        note: written by benchmarks/fanout.py
        """))


def runbook_text(sleep: float, concurrency: int) -> str:
    sleep_argv = f'["sleep", "{sleep}"]'
    three = {
        # karabo-check's line, a process listing and a log grep, each taking `sleep`.
        "kc": f'["sh", "-c", "sleep {sleep}; echo \'webserver: up (pid 1) 9 seconds\'"]',
        # Only the shell's own process: every twin host shares one PID namespace, so a
        # full `ps -e` here would list (and cost) every host's processes.
        "ps": f'["sh", "-c", "sleep {sleep}; ps -p $$ -o pid=,args="]',
        "grep": f'["sh", "-c", "sleep {sleep}; grep -c \'Resource temporarily\' {LOG}"]',
    }

    def cmd(step: str, argv: str, nxt: str = "end") -> str:
        return (f"  {step}:\n    source: \"11.1\"\n    check: ssh.command\n"
                f"    with: {{host: \"{{{{ host.name }}}}\", user: \"{{{{ host.account }}}}\", "
                f"argv: {argv}}}\n    timeout: 60\n"
                f"    on: {{ok: {nxt}, fail: {nxt}, unknown: {nxt}}}\n")

    def mark_step(name: str, nxt: str) -> str:
        return (f"  m-{name}:\n    source: \"11.1\"\n    check: bench.mark\n"
                f"    with: {{name: {name}}}\n    on: {{ok: {nxt}, fail: {nxt}, unknown: {nxt}}}\n")

    def fan(name: str, do: str, nxt: str) -> str:
        return (f"  {name}:\n    source: \"11.1\"\n    foreach: hosts\n    as: host\n"
                f"    do: {do}\n    concurrency: {concurrency}\n    next: {nxt}\n")

    steps = [
        mark_step("start", "cold"), fan("cold", "cold-cmd", "m-cold"), cmd("cold-cmd", sleep_argv),
        mark_step("cold", "warm"), fan("warm", "warm-cmd", "m-warm"), cmd("warm-cmd", sleep_argv),
        mark_step("warm", "warm3"), fan("warm3", "three", "m-warm3"),
        "  three:\n    source: \"11.1\"\n    all: [kc, ps, grep]\n    next: end\n",
        *(cmd(k, v) for k, v in three.items()),
        mark_step("warm3", "end"),
    ]
    return ("id: fanout\ntitle: SSH fan-out\nkind: diagnosis\nsource: \"11.1\"\n"
            "params:\n  instrument: {type: instrument}\nstart: m-start\nsteps:\n"
            + "".join(steps))


def walk(folder: Path, concurrency: int) -> dict[str, Any]:
    from checks._ssh import SshPool
    from engine.inventory import load_site
    from engine.loader import load_catalog
    from engine.walk import Walker

    registry = Registry()
    registry.load_entry_points()
    registry.register_functions([mark])
    catalog = load_catalog([folder / "runbooks"], registry)
    inventory = load_site("fanout")
    _marks.clear()
    pools: list[dict[str, int]] = []
    close = SshPool.close

    def close_and_count(pool: SshPool) -> None:
        pools.append(dict(pool.stats))
        close(pool)

    SshPool.close = close_and_count  # type: ignore[method-assign]
    try:
        report = Walker(catalog, registry, inventory, mode="diagnose", instrument="BENCH",
                        concurrency=max(concurrency * 3, 4)).walk("fanout",
                                                                  {"instrument": "BENCH"})
    finally:
        SshPool.close = close  # type: ignore[method-assign]
    checks = [s for s in report.steps if s.kind == "check" and s.id != "" and
              not s.id.startswith("m-")]
    bad = [f"{s.id} {s.subject}: {s.outcome} {s.reason}" for s in checks if s.outcome != "ok"]
    if bad:
        raise SystemExit("benchmark walk had failures:\n" + "\n".join(bad[:10]))
    opened = sum(1 for s in checks if s.observed.get("connection") == "opened")
    return {"marks": dict(_marks), "checks": len(checks), "opened": opened,
            "executions": sum(p["executions"] for p in pools)}


def phases(marks: dict[str, tuple[float, float]], sleep: float) -> dict[str, dict[str, float]]:
    order = ["start", "cold", "warm", "warm3"]
    out = {}
    for a, b in zip(order, order[1:], strict=False):
        if a in marks and b in marks:
            wall = marks[b][0] - marks[a][0]
            cpu = marks[b][1] - marks[a][1]
            out[b] = {"wall_s": round(wall, 3), "ratio": round(wall / sleep, 2),
                      "client_cpu_s": round(cpu, 3)}
    return out


def diagnose_no_online_data() -> dict[str, Any]:
    """A full no-online-data diagnosis of a healthy SPB twin, when it can be walked."""
    from engine.loader import load_catalog
    from engine.registry import default_registry

    try:
        catalog = load_catalog([REPO / "runbooks"], default_registry())
        lr = catalog.get("no-online-data")
    except Exception as exc:  # noqa: BLE001 - any failure here is reported as a skip
        return {"skipped": f"the runbooks do not load: {type(exc).__name__}: {exc}"}
    if lr.runbook.status == "draft":
        return {"skipped": "no-online-data is still a draft"}
    from engine.inventory import load_site
    from engine.walk import Walker
    from sim import twin as twinmod

    folder = Path(tempfile.mkdtemp(prefix="fanout-full-"))
    try:
        twin = twinmod.up(folder, ["SPB"])
        os.environ["RUNBOOK_INVENTORY_PATH"] = str(twin.dir / "inventory")
        os.environ["RUNBOOK_TWIN_HOSTS"] = str(twin.hosts_file)
        t0, c0 = time.monotonic(), time.process_time()
        report = Walker(catalog, default_registry(), load_site("sim"), mode="diagnose",
                        instrument="SPB").walk("no-online-data", {"instrument": "SPB"})
        return {"wall_s": round(time.monotonic() - t0, 3),
                "client_cpu_s": round(time.process_time() - c0, 3),
                "findings": len(report.findings), "unknowns": len(report.unknowns)}
    finally:
        twinmod.down(folder)
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--skip-full", action="store_true",
                        help="skip the no-online-data diagnosis of a full twin")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    from sim import twin as twinmod

    folder = Path(tempfile.mkdtemp(prefix="fanout-"))
    results: dict[str, Any] = {"hosts": args.hosts, "sleep_s": args.sleep}
    t0, c0 = time.monotonic(), time.process_time()
    import checks._ssh  # noqa: F401 - once per process; kept out of the cold case
    results["import_s"] = {"wall": round(time.monotonic() - t0, 3),
                           "cpu": round(time.process_time() - c0, 3)}
    try:
        t0 = time.monotonic()
        twin = start_hosts_twin(folder / "twin", args.hosts)
        results["twin_up_s"] = round(time.monotonic() - t0, 2)
        os.environ["RUNBOOK_INVENTORY_PATH"] = str(folder / "inventory")
        for bound, key in ((args.hosts, "bounded_by_hosts"), (1, "bound_1")):
            write_site(folder / "inventory", twin, bound)
            (folder / "runbooks").mkdir(exist_ok=True)
            (folder / "runbooks" / "fanout.yaml").write_text(runbook_text(args.sleep, bound))
            got = walk(folder, bound)
            results[key] = {"phases": phases(got["marks"], args.sleep),
                            "checks": got["checks"], "connections_opened": got["opened"],
                            "remote_executions": got["executions"]}
    finally:
        problems = twinmod.down(folder / "twin")
        shutil.rmtree(folder, ignore_errors=True)
        if problems:
            print("twin down:", problems, file=sys.stderr)
    results["no_online_data"] = ({"skipped": "--skip-full"} if args.skip_full
                                 else diagnose_no_online_data())
    results["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report(results)
    return 0


def report(results: dict[str, Any]) -> None:
    sleep = results["sleep_s"]
    print(f"fan-out over {results['hosts']} twin hosts, each command sleeping "
          f"{sleep * 1000:g} ms (twin up in {results['twin_up_s']} s; importing fabric and "
          f"paramiko took {results['import_s']['cpu']} s CPU before the walks; load average "
          f"{results['load']})")
    for key, title in (("bounded_by_hosts", f"concurrency {results['hosts']}"),
                       ("bound_1", "concurrency 1")):
        got = results.get(key)
        if not got:
            continue
        print(f"  {title}: {got['checks']} checks, {got['connections_opened']} connections "
              f"opened, {got['remote_executions']} remote executions")
        for phase, label in (("cold", "cold (new connections)"), ("warm", "warm"),
                             ("warm3", "warm, 3 commands per host")):
            if phase in got["phases"]:
                ph = got["phases"][phase]
                print(f"    {label:<28} {ph['wall_s']:>8.3f} s = {ph['ratio']:>6.2f} x sleep, "
                      f"client CPU {ph['client_cpu_s']:.3f} s")
    full = results["no_online_data"]
    if "skipped" in full:
        print(f"  no-online-data diagnosis: skipped ({full['skipped']})")
    else:
        print(f"  no-online-data diagnosis of a healthy SPB twin: {full['wall_s']} s wall, "
              f"client CPU {full['client_cpu_s']} s, {full['findings']} findings, "
              f"{full['unknowns']} unknowns")


if __name__ == "__main__":
    sys.exit(main())
