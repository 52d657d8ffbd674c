"""`runbook dark --slurm`: the sbatch scripts, and a clear error where Slurm is not there."""

from __future__ import annotations

import pytest

from detectors.dark.errors import SlurmError
from detectors.dark.slurm import module_blocks, submit, write_scripts


@pytest.mark.parametrize(("modules", "per_job", "blocks"), [
    pytest.param(range(16), 4, [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15)],
                 id="agipd-1m-by-4"),
    pytest.param([0, 1, 2], 2, [(0, 1), (2,)], id="remainder"),
    pytest.param([3], 4, [(3,)], id="one-module"),
])
def test_modules_are_cut_into_blocks(modules, per_job, blocks):
    assert module_blocks(modules, per_job) == blocks


def test_zero_modules_per_job_is_refused():
    with pytest.raises(SlurmError, match="at least 1"):
        module_blocks([0, 1], 0)


def test_one_script_per_module_block_and_a_report_script(tmp_path):
    args = ["--instrument", "SPB", "--detector", "SPB_DET_AGIPD1M-1", "--runs", "67,68,69",
            "--proposal", "900146", "--report-dir", str(tmp_path / "dark_900146 x")]
    plan = write_scripts(tmp_path / "slurm", "dark_900146_r67_r68_r69", args, range(6),
                         per_job=4, partition="upex", python="/opt/py/bin/python",
                         workdir=tmp_path)
    names = [p.name for p in plan.module_scripts]
    assert names == ["dark_900146_r67_r68_r69_m0-3.sh", "dark_900146_r67_r68_r69_m4-5.sh"]
    first = plan.module_scripts[0].read_text()
    assert first.startswith("#!/bin/bash\n#SBATCH --job-name=dark_900146_r67_r68_r69_m0-3\n")
    assert "#SBATCH --partition=upex" in first
    assert f"#SBATCH --output={tmp_path / 'slurm'}/%x-%j.out" in first
    last = first.strip().splitlines()[-1]
    assert last.startswith("exec /opt/py/bin/python -m detectors.dark --instrument SPB")
    assert last.endswith("--phase modules --modules 0,1,2,3")
    assert f"'{tmp_path / 'dark_900146 x'}'" in last          # quoted for the shell
    report = plan.report_script.read_text()
    assert report.strip().splitlines()[-1].endswith("--phase report")
    assert "--modules" not in report


def test_submit_without_sbatch_says_so(tmp_path):
    plan = write_scripts(tmp_path, "dark_1_r1", [], [0])
    with pytest.raises(SlurmError, match="is not installed on this host"):
        submit(plan, sbatch="sbatch-that-is-not-installed")


@pytest.mark.slow
def test_sbatch_that_reaches_no_controller_is_a_clear_error(tmp_path, monkeypatch):
    """The real sbatch against a controller port where nothing listens (about 9 s)."""
    import shutil
    import socket

    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not installed (apt-get install slurm-client)")
    with socket.socket() as sock:            # a loopback port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=none\nSlurmctldHost=localhost(127.0.0.1)\n"
        f"SlurmctldPort={port}\nAuthType=auth/munge\n"
        f"AuthInfo=socket={tmp_path / 'no-munge.socket'}\n"
        "NodeName=localhost NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN\n"
        "PartitionName=p Nodes=ALL Default=YES State=UP\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    plan = write_scripts(tmp_path, "dark_1_r1", [], [0])
    with pytest.raises(SlurmError, match="sbatch refused dark_1_r1_m0.sh") as info:
        submit(plan, timeout=60)
    assert "Unable to contact slurm controller" in str(info.value)
