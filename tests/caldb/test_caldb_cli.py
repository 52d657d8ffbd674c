"""``runbook caldb ...`` through typer's CliRunner, on a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from caldb.cli import app

DET = "SPB_DET_AGIPD1M-1"
COND = ["-C", "Memory cells=352", "-C", "Sensor Bias Voltage=300"]


@pytest.fixture
def cli(tmp_path: Path, facility: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Run the CLI with the store in tmp_path given by the environment, as a user would."""
    runner = CliRunner()
    env = {
        "RUNBOOK_CALDB": f"sqlite:///{tmp_path / 'c.sqlite'}",
        "RUNBOOK_CALDB_STORE": str(tmp_path / "store"),
        "COLUMNS": "300",
        "USER": "xcal",
    }
    seed = tmp_path / "seed.yaml"
    seed.write_text(json.dumps(facility, default=str))  # JSON is YAML
    np.save(tmp_path / "offset.npy", np.full((4, 4), 7.0))

    def run(*args: str) -> Any:
        return runner.invoke(app, list(args), env=env)

    assert run("seed", str(seed)).exit_code == 0
    return run, tmp_path


def _inject(run: Any, tmp: Path, begin: str = "2020-01-10T00:00:00") -> Any:
    return run(
        "inject",
        "-c",
        "Offset",
        "-d",
        DET,
        "-m",
        "AGIPD00",
        *COND,
        "--data",
        str(tmp / "offset.npy"),
        "--begin-at",
        begin,
    )


def _find(run: Any, *extra: str) -> Any:
    return run(
        "find",
        "-c",
        "Offset",
        "-d",
        DET,
        "-m",
        "AGIPD00",
        *COND,
        "--event-at",
        "2020-02-01T00:00:00+00:00",
        "--json",
        *extra,
    )


def test_seed_reports_what_it_holds(cli) -> None:  # type: ignore[no-untyped-def]
    run, tmp = cli
    result = run("seed", str(tmp / "seed.yaml"))  # idempotent
    assert result.exit_code == 0, result.output
    assert "1 detectors, 3 pdus, 0 versions" in result.output


def test_inject_then_find_then_taken(cli) -> None:  # type: ignore[no-untyped-def]
    run, tmp = cli
    result = _inject(run, tmp)
    assert result.exit_code == 0, result.output
    assert "AGIPD_SIV1_AGIPDV11_M304" in result.output and "cal." in result.output
    found = _find(run)
    assert found.exit_code == 0, found.output
    (version,) = json.loads(found.stdout)
    assert version["calibration"] == "Offset" and version["karabo_da"] == "AGIPD00"
    assert version["begin_at"] == "2020-01-10T00:00:00+00:00"
    again = _inject(run, tmp)
    assert again.exit_code == 1
    assert "Version already taken" in again.output


def test_find_nothing_exits_1(cli) -> None:  # type: ignore[no-untyped-def]
    run, tmp = cli
    _inject(run, tmp)
    result = run(
        "find",
        "-c",
        "Offset",
        "-d",
        DET,
        "-m",
        "AGIPD00",
        "-C",
        "Memory cells=64",
        "-C",
        "Sensor Bias Voltage=300",
        "--event-at",
        "2020-02-01",
    )
    assert result.exit_code == 1
    assert "no deployed, good-quality version matches" in result.output


def test_disable_enable_with_audit(cli) -> None:  # type: ignore[no-untyped-def]
    run, tmp = cli
    _inject(run, tmp)
    result = run("disable", "1", "--why", "taken with beam")
    assert result.exit_code == 0, result.output
    assert "disabled version 1: deployed True -> False, good quality True -> False" in result.output
    assert "(by xcal: taken with beam)" in result.output
    assert _find(run).exit_code == 1
    listed = run("list", "--pdu", "agipd", "--json")
    assert [(v["id"], v["flg_deployed"]) for v in json.loads(listed.stdout)] == [(1, False)]
    result = run("enable", "1", "--why", "false alarm", "--who", "jdoe")
    assert result.exit_code == 0, result.output
    assert _find(run).exit_code == 0
    audit = run("audit", "1")
    assert audit.exit_code == 0
    assert "xcal" in audit.output and "jdoe" in audit.output and "false alarm" in audit.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(("disable", "1"), 2, "--why", id="disable-needs-why"),
        pytest.param(("disable", "42", "--why", "x"), 1, "id 42", id="unknown-version"),
        pytest.param(
            ("find", "-c", "Offset", "-d", DET, "-C", "Memory cells"),
            2,
            "name=value",
            id="condition-without-value",
        ),
        pytest.param(
            ("find", "-c", "Offset", "-d", DET, "-C", "Memory cells=many"),
            2,
            "not a number",
            id="condition-not-a-number",
        ),
        pytest.param(
            ("find", "-c", "Offset", "-d", "MID_DET_AGIPD1M-1", *COND),
            1,
            "unknown detector",
            id="unknown-detector",
        ),
        pytest.param(("list", "--from", "last week"), 1, "ISO 8601", id="bad-time"),
    ],
)
def test_user_errors_are_messages_not_tracebacks(
    cli,
    args: tuple[str, ...],
    code: int,  # type: ignore[no-untyped-def]
    message: str,
) -> None:
    run, _ = cli
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_table_output_has_the_backend_columns(cli) -> None:  # type: ignore[no-untyped-def]
    run, tmp = cli
    _inject(run, tmp)
    result = run("list")
    assert result.exit_code == 0
    for column in (
        "Name",
        "File name",
        "Calibration constant",
        "Physical device",
        "Start date",
        "Deployed",
        "Good quality",
    ):
        assert column in result.output
    assert "2020-01-10 00:00:00" in result.output
