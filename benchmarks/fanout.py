"""Fan-out of ssh.* checks over 64 twin hosts, walked by the real engine (issue 4, Benchmark).

    .venv/bin/python benchmarks/fanout.py [--hosts 64] [--sleep 0.2] [--runs 1] [--skip-full]

Starts its own hosts-and-SSH-only twin (the twin's real SSH gateway, one loopback address
and mount namespace per host, built with sim's functions), writes a site and a runbook into
a temporary folder, and walks the runbook with `engine.walk.Walker`:

1. cold: a `foreach` of `ssh.command` (`sleep 0.2`) over every host, on new connections;
2. warm: the same again, later in the same walk, on the connections already open;
3. warm x3: per host, an `all` of three read-only checks in one step, as a hypothesis
   of 11.3 has (karabo-check, a process check and a log grep, each also sleeping);

then the same walk with a concurrency bound of 1, and a `no-online-data` diagnosis of a
healthy full twin brought online (`{instrument: SPB, online: true}`).  It prints, per case,
the wall time divided by the sleep, this process's CPU time (the client's) and the CPU time
of the twin's SSH gateway with the commands it ran (the server's, on the same cores).
Goals (issue 4): cold <= 4x, warm <= 2x (also with three commands per host).

With `--runs N` the walks are repeated N times on the same twin hosts (each run starts
with new connections and an empty ssh_config cache, as a new `runbook` process would) and
min/median are printed; the load average is printed with every run, since the twin's
server shares the machine's cores with whatever else runs there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
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


_marks: dict[str, tuple[float, float, float]] = {}
_server: dict[str, int] = {}


def server_cpu() -> float:
    """CPU seconds of the twin's SSH gateway and of the commands it ran (reaped children)."""
    pid = _server.get("pid")
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@check("bench.mark")
def mark(p: Mark, ctx: Context) -> Result:
    """Records when the walk got here (wall clock, this process's and the server's CPU)."""
    _marks[p.name] = (time.monotonic(), time.process_time(), server_cpu())
    return Result.ok(f"mark {p.name}")


def write_site(folder: Path, twin: Any, concurrency: int, jump: bool = False) -> None:
    """The `fanout` site; with `jump`, every host but bench-00 is reached through bench-00
    (ProxyJump), as the facility's hosts are through exflgateway (section 1)."""
    last = len(twin.hosts) - 1
    site = folder / "fanout"
    site.mkdir(parents=True, exist_ok=True)
    config = twin.ssh_config
    if jump:
        config = site / "ssh_config"
        config.write_text("".join(
            f"Host {h.name}\n    HostName {h.address}\n    Port {twin.ssh_port}\n"
            + (f"    ProxyJump {ACCOUNT}@bench-00\n" if h.name != "bench-00" else "")
            for h in twin.hosts.values()))
    (site / "site.yaml").write_text(textwrap.dedent(f"""\
        site: fanout
        description: the fan-out benchmark's twin hosts
        transport:
          ssh:
            config: {config}
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
        # The shell's own process entry.  Not `ps`: every twin host shares one PID
        # namespace with everything else on the machine, and procps reads all of /proc
        # even for `ps -p` (about 40 ms of CPU per call with a few hundred processes).
        "ps": f'["sh", "-c", "sleep {sleep}; exec cat /proc/$$/stat"]',
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
        fan("cold", "cold-cmd", "m-cold"), cmd("cold-cmd", sleep_argv),
        mark_step("cold", "warm"), fan("warm", "warm-cmd", "m-warm"), cmd("warm-cmd", sleep_argv),
        mark_step("warm", "warm3"), fan("warm3", "three", "m-warm3"),
        "  three:\n    source: \"11.1\"\n    all: [kc, ps, grep]\n    next: end\n",
        *(cmd(k, v) for k, v in three.items()),
        mark_step("warm3", "end"),
    ]
    return ("id: fanout\ntitle: SSH fan-out\nkind: diagnosis\nsource: \"11.1\"\n"
            "params:\n  instrument: {type: instrument}\nstart: cold\nsteps:\n"
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
    try:            # as in a new process: the ssh_config, keys and known_hosts are read again
        from checks._ssh_site import forget
        forget()
    except ImportError:
        pass        # a transport from before checks._ssh_site, measured for comparison
    _marks.clear()
    pools: list[dict[str, int]] = []
    close = SshPool.close

    def close_and_count(pool: SshPool) -> None:
        pools.append(dict(pool.stats))
        close(pool)

    SshPool.close = close_and_count  # type: ignore[method-assign]
    try:
        walker = Walker(catalog, registry, inventory, mode="diagnose", instrument="BENCH",
                        concurrency=max(concurrency * 3, 4))
        # The cold case counts from here: whatever the walker does before its first step
        # (it starts opening the connections that the steps name) is part of it.
        _marks["start"] = (time.monotonic(), time.process_time(), server_cpu())
        report = walker.walk("fanout", {"instrument": "BENCH"})
    finally:
        SshPool.close = close  # type: ignore[method-assign]
    checks = [s for s in report.steps if s.kind == "check" and s.id != "" and
              not s.id.startswith("m-")]
    bad = [f"{s.id} {s.subject}: {s.outcome} {s.reason}" for s in checks if s.outcome != "ok"]
    if bad:
        raise SystemExit("benchmark walk had failures:\n" + "\n".join(bad[:10]))
    opened = sum(p["opened"] for p in pools)
    return {"marks": dict(_marks), "checks": len(checks), "opened": opened,
            "executions": sum(p["executions"] for p in pools)}


def phases(marks: dict[str, tuple[float, float, float]], sleep: float
           ) -> dict[str, dict[str, float]]:
    order = ["start", "cold", "warm", "warm3"]
    out = {}
    for a, b in zip(order, order[1:], strict=False):
        if a in marks and b in marks:
            wall = marks[b][0] - marks[a][0]
            out[b] = {"wall_s": round(wall, 3), "ratio": round(wall / sleep, 2),
                      "client_cpu_s": round(marks[b][1] - marks[a][1], 3),
                      "server_cpu_s": round(marks[b][2] - marks[a][2], 3)}
    return out


def diagnose_no_online_data() -> dict[str, Any]:
    """A full no-online-data diagnosis of a healthy SPB twin brought online, when that
    runbook can be walked."""
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
        t0 = time.monotonic()
        twin = twinmod.up(folder / "twin", ["SPB"])
        scenario = folder / "online.yaml"
        scenario.write_text("instrument: SPB\nonline: true\n")
        twinmod.inject(twin.dir, scenario)
        setup = time.monotonic() - t0
        os.environ["RUNBOOK_INVENTORY_PATH"] = str(twin.dir / "inventory")
        os.environ["RUNBOOK_TWIN_HOSTS"] = str(twin.hosts_file)
        _server["pid"] = next(p.pid for p in twin.procs if p.name == "sshd")
        t0, c0, s0 = time.monotonic(), time.process_time(), server_cpu()
        report = Walker(catalog, default_registry(), load_site("sim"), mode="diagnose",
                        instrument="SPB").walk("no-online-data", {"instrument": "SPB"})
        return {"wall_s": round(time.monotonic() - t0, 3),
                "client_cpu_s": round(time.process_time() - c0, 3),
                "ssh_server_cpu_s": round(server_cpu() - s0, 3),
                "twin_setup_s": round(setup, 1),
                "checks": sum(1 for s in report.steps if s.kind in ("check", "wait")),
                "findings": [f"{f.id} {f.subject or ''}".strip() for f in report.findings],
                "unknowns": [f"{u.id} {u.subject or ''}: {u.reason}" for u in report.unknowns]}
    finally:
        twinmod.down(folder / "twin")
        shutil.rmtree(folder, ignore_errors=True)


CASES = (("bounded_by_hosts", None), ("bound_1", 1), ("via_jump", None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=1, help="repeat the walks; min/median")
    parser.add_argument("--skip-bound-1", action="store_true",
                        help="skip the walk with a concurrency bound of 1 (about a minute)")
    parser.add_argument("--jump", action="store_true",
                        help="also walk with every host behind one ProxyJump host")
    parser.add_argument("--skip-full", action="store_true",
                        help="skip the no-online-data diagnosis of a full twin")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    from sim import twin as twinmod

    folder = Path(tempfile.mkdtemp(prefix="fanout-"))
    results: dict[str, Any] = {"hosts": args.hosts, "sleep_s": args.sleep, "runs": []}
    t0, c0 = time.monotonic(), time.process_time()
    import checks._ssh  # noqa: F401 - once per process; kept out of the cold case
    results["import_s"] = {"wall": round(time.monotonic() - t0, 3),
                           "cpu": round(time.process_time() - c0, 3)}
    try:
        t0 = time.monotonic()
        twin = start_hosts_twin(folder / "twin", args.hosts)
        _server["pid"] = next(p.pid for p in twin.procs if p.name == "sshd")
        results["twin_up_s"] = round(time.monotonic() - t0, 2)
        os.environ["RUNBOOK_INVENTORY_PATH"] = str(folder / "inventory")
        for _run in range(args.runs):
            run: dict[str, Any] = {}
            for key, bound in CASES:
                if (bound == 1 and args.skip_bound_1) or (key == "via_jump" and not args.jump):
                    continue
                bound = bound or args.hosts
                write_site(folder / "inventory", twin, bound, jump=key == "via_jump")
                (folder / "runbooks").mkdir(exist_ok=True)
                (folder / "runbooks" / "fanout.yaml").write_text(runbook_text(args.sleep,
                                                                              bound))
                got = walk(folder, bound)
                run[key] = {"phases": phases(got["marks"], args.sleep),
                            "checks": got["checks"], "connections_opened": got["opened"],
                            "remote_executions": got["executions"],
                            "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
            results["runs"].append(run)
            if not args.json:
                report_run(results, len(results["runs"]))
    finally:
        problems = twinmod.down(folder / "twin")
        shutil.rmtree(folder, ignore_errors=True)
        if problems:
            print("twin down:", problems, file=sys.stderr)
    results["no_online_data"] = ({"skipped": "--skip-full"} if args.skip_full
                                 else diagnose_no_online_data())
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report_summary(results)
    return 0


LABELS = (("cold", "cold (new connections)"), ("warm", "warm"),
          ("warm3", "warm, 3 commands per host"))


def report_run(results: dict[str, Any], number: int) -> None:
    sleep = results["sleep_s"]
    if number == 1:
        print(f"fan-out over {results['hosts']} twin hosts, each command sleeping "
              f"{sleep * 1000:g} ms (twin up in {results['twin_up_s']} s; importing the SSH "
              f"client took {results['import_s']['cpu']} s CPU before the walks)")
    for key, got in results["runs"][number - 1].items():
        title = {"bound_1": "concurrency 1", "via_jump": f"concurrency {results['hosts']}, "
                 "all behind one ProxyJump host"}.get(key, f"concurrency {results['hosts']}")
        print(f"  run {number}, {title}: {got['checks']} checks, {got['connections_opened']} "
              f"connections opened, {got['remote_executions']} remote executions, "
              f"load average {got['load']}")
        for phase, label in LABELS:
            if phase in got["phases"]:
                ph = got["phases"][phase]
                print(f"    {label:<28} {ph['wall_s']:>8.3f} s = {ph['ratio']:>6.2f} x sleep, "
                      f"client CPU {ph['client_cpu_s']:.3f} s, "
                      f"server CPU {ph['server_cpu_s']:.3f} s")
    sys.stdout.flush()


def report_summary(results: dict[str, Any]) -> None:
    runs = results["runs"]
    if len(runs) > 1:
        print(f"  over {len(runs)} runs (min / median of wall / sleep; median CPU):")
        for key, _bound in CASES:
            for phase, label in LABELS:
                got = [r[key]["phases"][phase] for r in runs
                       if key in r and phase in r[key]["phases"]]
                if not got:
                    continue
                ratios = [g["ratio"] for g in got]
                title = {"bound_1": "bound 1", "via_jump": "via jump"}.get(
                    key, f"bound {results['hosts']}")
                print(f"    {title:<9} {label:<28} {min(ratios):>6.2f} x / "
                      f"{statistics.median(ratios):>6.2f} x, client CPU "
                      f"{statistics.median(g['client_cpu_s'] for g in got):.3f} s, server CPU "
                      f"{statistics.median(g['server_cpu_s'] for g in got):.3f} s")
    full = results["no_online_data"]
    if "skipped" in full:
        print(f"  no-online-data diagnosis: skipped ({full['skipped']})")
    else:
        print(f"  no-online-data diagnosis of a healthy SPB twin brought online "
              f"(set up in {full['twin_setup_s']} s): {full['wall_s']} s wall for "
              f"{full['checks']} checks, client CPU {full['client_cpu_s']} s, findings "
              f"{full['findings'] or 'none'}, unknowns {full['unknowns'] or 'none'}, "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
