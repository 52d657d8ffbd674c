"""Shell injection over the twin's real SSH (issue 12, hostile input).

Runbook params and inventory values such as `SPB; rm -rf x`, `$(touch pwned)`, backticks
and newlines must reach the remote side as literal arguments. Each hostile string below
names a marker file; the strings go through every ssh.* check that puts a value into a
remote command, and through a whole walk (as a runbook param and as a site variable).
The remote `printf '%s'` must give the string back unchanged, and no marker file may
appear anywhere in the twin's host trees.
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from checks import ssh as c
from engine.context import Context, Resources
from engine.inventory import load_site
from engine.loader import load_catalog
from engine.registry import default_registry
from engine.result import Result
from engine.walk import Walker

pytestmark = pytest.mark.twin

HOST, USER = "spb-br-sys-cal-0", "spbonc"
TOKEN = f"pwned{secrets.token_hex(4)}"
M = TOKEN  # the marker file's name; a successful injection creates it


def _hostile(m: str) -> list[str]:
    return [
        f"SPB; touch {m}", f"SPB; rm -rf x; touch {m}", f"$(touch {m})", f"`touch {m}`",
        f"x\ntouch {m}", f"x\r\ntouch {m}", f"'; touch {m}; '", f'"; touch {m}; "',
        f"x && touch {m}", f"x || touch {m}", f"x | touch {m}", f"x & touch {m}",
        f"x > {m}", f"x >> /scratch/{USER}/{m}", f"< /etc/passwd; touch {m}",
        f"${{IFS}}touch${{IFS}}{m}", f"\\'; touch {m}; echo \\'", f"-n; touch {m}",
        f"--help $(touch {m})", f"$((1+1)); touch {m}", f"* ; touch {m}",
        f"~/; touch {m}", f"a\\\ntouch {m}", f"$'\\x3b' touch {m}",
        f"{m}'\"`$(touch {m})`\"'", f"\uff1b; touch {m}", f"\u2028touch {m}",
        f"%s%n; touch {m}", f"{{{{ ''.__class__.__mro__ }}}}; touch {m}",
        f"x\ttouch {m}", f"$(touch /tmp/{m})", f"}}; touch {m}; {{",
        f"!!; touch {m}", f"#; touch {m}", f"a\x1b[31m; touch {m}",
    ]


HOSTILE = _hostile(M)
# A site variable that is a template the sandbox would refuse is itself refused when the
# site loads (tests/test_hostile_input.py); every other string is a site variable too.
SITE_HOSTILE = [s for s in HOSTILE if "__class__" not in s]


def test_at_least_twenty_strings_are_tried() -> None:
    assert len(set(HOSTILE)) == len(HOSTILE) >= 20


@dataclass
class HostsTwin:
    dir: Path
    transport: dict[str, object]
    sites: Path


@pytest.fixture(scope="module")
def hosts_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsTwin]:
    """A hosts-and-SSH-only twin, and a site `evil` over its `sim` site whose variables
    hold the hostile strings."""
    from sim import twin as twinmod

    folder = tmp_path_factory.mktemp("injection")
    twin = twinmod.up(folder / "twin", ["SPB"], karabo=False, webservice=False,
                      topic_prefix=f"t{secrets.token_hex(4)}_")
    try:
        sites = folder / "sites"
        (sites / "evil").mkdir(parents=True)
        yaml = YAML(typ="safe", pure=True)
        with open(sites / "evil" / "site.yaml", "w") as out:
            yaml.dump({"site": "evil", "extends": "sim", "vars": {"evil": SITE_HOSTILE}}, out)
        ssh = {"config": str(twin.ssh_config), "known_hosts": str(twin.known_hosts),
               "identity": str(twin.dir / "ssh" / "id_ed25519"), "connect_timeout": 10,
               "command_timeout": 30}
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RUNBOOK_SIM_DIR", str(twin.dir))
            mp.setenv("RUNBOOK_INVENTORY_PATH", f"{sites}:{twin.dir / 'inventory'}")
            yield HostsTwin(twin.dir, {"ssh": ssh}, sites)
    finally:
        problems = twinmod.down(twin.dir)
        assert not problems, problems


def _markers(twin: HostsTwin, token: str = TOKEN) -> list[Path]:
    found = list(twin.dir.rglob(f"*{token}*"))
    found += list(Path("/tmp").glob(f"*{token}*"))
    return found


@pytest.fixture
def run_check(hosts_twin: HostsTwin) -> Iterator[Callable[..., Result]]:
    resources = Resources()

    def call(fn: Callable[..., Result], model: type, **params: object) -> Result:
        ctx = Context(mode="diagnose", site="sim", timeout=60, resources=resources,
                      transport=hosts_twin.transport)
        return fn(model.model_validate({"host": HOST, "user": USER, **params}), ctx)

    try:
        yield call
    finally:
        resources.close()


def test_the_marker_search_sees_a_file_that_a_command_creates(run_check, hosts_twin):
    probe = f"probe{secrets.token_hex(4)}"
    for where in (probe, f"/scratch/{USER}/{probe}", f"/tmp/{probe}"):
        result = run_check(c.ssh_command, c.SshCommand, argv=["touch", where])
        assert result.outcome == "ok", result.reason
    found = _markers(hosts_twin, probe)
    assert len(found) == 3, found
    for path in found:
        path.unlink()


def test_each_string_reaches_the_host_as_one_literal_argument(run_check, hosts_twin):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda s: run_check(c.ssh_command, c.SshCommand, argv=["printf", "%s|", s, s]),
            HOSTILE))
    for value, result in zip(HOSTILE, results, strict=True):
        assert result.outcome == "ok", (value, result.reason)
        assert result.observed["stdout"] == f"{value}|{value}|", value
    assert _markers(hosts_twin) == []


CHECKS = [
    pytest.param(c.ssh_command, c.SshCommand, lambda s: {"argv": ["ls", "--", s], "cwd": s},
                 id="ssh.command-cwd"),
    pytest.param(c.ssh_log_grep, c.LogGrep, lambda s: {"path": s, "pattern": s, "lines": 5},
                 id="ssh.log_grep"),
    pytest.param(c.ssh_log_grep, c.LogGrep,
                 lambda s: {"path": s, "pattern": s, "regex": True, "ignore_case": True},
                 id="ssh.log_grep-regex"),
    pytest.param(c.ssh_file_sizes, c.FileSizes, lambda s: {"path": "/" + s, "glob": s},
                 id="ssh.file_sizes"),
    pytest.param(c.ssh_karabo_check, c.KaraboCheck, lambda s: {"karabo_root": s},
                 id="ssh.karabo_check"),
    pytest.param(c.ssh_service_run_file, c.ServiceRunFile, lambda s: {"path": s},
                 id="ssh.service_run_file-path"),
    pytest.param(c.ssh_service_run_file, c.ServiceRunFile,
                 lambda s: {"service": s, "karabo_root": s, "covers_all": True},
                 id="ssh.service_run_file-service"),
]


@pytest.mark.parametrize(("fn", "model", "params"), CHECKS)
def test_no_check_lets_a_value_run_as_a_command(run_check, hosts_twin, fn, model, params):
    regex_ok = [s for s in HOSTILE if _compiles(s)]
    values = regex_ok if model is c.LogGrep and params("x").get("regex") else HOSTILE
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda s: run_check(fn, model, **params(s)), values))
    for value, result in zip(values, results, strict=True):
        assert result.outcome in ("ok", "fail", "unknown"), value
        assert "SSH failed" not in result.reason, (value, result.reason)
    assert _markers(hosts_twin) == []


def _compiles(text: str) -> bool:
    import re

    try:
        re.compile(text)
    except re.error:
        return False
    return True


def test_a_nul_byte_is_refused_before_anything_is_sent(run_check, hosts_twin):
    result = run_check(c.ssh_command, c.SshCommand, argv=["printf", "%s", f"a\0; touch {M}"])
    assert result.outcome == "unknown"
    assert "NUL byte" in result.reason
    assert _markers(hosts_twin) == []


RUNBOOK = """\
id: injection
title: Hostile params and site variables reach the host as literals
kind: diagnosis
source: "12"
params:
  instrument: {type: instrument}
  values: {type: list}
start: each-param
steps:
  each-param:
    source: "12"
    foreach: "{{ params.values }}"
    as: value
    do: echo-param
    next: each-var
  echo-param:
    source: "12"
    check: ssh.command
    with: {host: %(host)s, user: %(user)s, argv: [printf, "%%s|", "{{ value }}"]}
    on: {ok: end, fail: end, unknown: end}
  each-var:
    source: "12"
    foreach: "{{ vars.evil }}"
    as: value
    do: echo-var
    next: end
  echo-var:
    source: "12"
    all: [echo-var-printf, grep-var, karabo-var]
  echo-var-printf:
    source: "12"
    check: ssh.command
    with: {host: %(host)s, user: %(user)s, argv: [printf, "%%s|", "{{ value }}"],
           cwd: "/home/%(user)s"}
    on: {ok: end, fail: end, unknown: end}
  grep-var:
    source: "12"
    check: ssh.log_grep
    with: {host: %(host)s, user: %(user)s, path: "{{ value }}", pattern: "x{{ value }}"}
    on: {ok: end, fail: end, unknown: end}
  karabo-var:
    source: "12"
    check: ssh.karabo_check
    with: {host: %(host)s, user: %(user)s, karabo_root: "/scratch/{{ value }}"}
    on: {ok: end, fail: end, unknown: end}
"""


def test_a_walk_passes_params_and_site_variables_as_literals(hosts_twin, tmp_path):
    (tmp_path / "injection.yaml").write_text(textwrap.dedent(RUNBOOK % {"host": HOST,
                                                                       "user": USER}))
    registry = default_registry()
    catalog = load_catalog([tmp_path], registry)
    assert catalog.problems == []
    inventory = load_site("evil")
    assert inventory.context("SPB")["vars"]["evil"] == SITE_HOSTILE
    report = Walker(catalog, registry, inventory, mode="diagnose", instrument="SPB").walk(
        "injection", {"instrument": "SPB", "values": HOSTILE})
    for step, values in (("echo-param", HOSTILE), ("echo-var-printf", SITE_HOSTILE)):
        records = [r for r in report.steps if r.id == step]
        assert len(records) == len(values), step
        assert sorted(r.observed.get("stdout", "") for r in records) == \
            sorted(f"{s}|" for s in values), [r.reason for r in records if r.reason][:3]
    assert len([r for r in report.steps if r.id in ("grep-var", "karabo-var")]) == \
        2 * len(SITE_HOSTILE)
    assert _markers(hosts_twin) == []
