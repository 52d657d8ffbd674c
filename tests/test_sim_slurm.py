"""sim.slurm on its own (no twin): Maxwell's squeue and sbatch as guidelines 4.2.3 use them.

Each test starts real munged, slurmctld and slurmd in its tmp folder (about 0.2-1 s).  A job
holds its CPU until the test creates its ``release`` file, so that what squeue shows does
not depend on timing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sim import procs, slurm
from sim.slurm import SlurmCluster

SQUEUE_4_2_3 = ["squeue", "-u", "xcal", "-o", "%.18i %60j %.3t %.10M %R"]


@pytest.fixture
def job_dir() -> Iterator[Path]:
    """A folder the job's user can write (pytest's own tmp folders are root's, mode 0700)."""
    uid = slurm.ensure_user()
    folder = Path(tempfile.mkdtemp(prefix="runbook-slurm-test-"))
    os.chown(folder, uid, uid)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str], SlurmCluster]]:
    started: list[SlurmCluster] = []

    def start_(name: str = "twin") -> SlurmCluster:
        started.append(slurm.start(tmp_path / name))
        return started[-1]

    yield start_
    for cluster in started:
        assert slurm.stop(cluster) == []


def submit(cluster: SlurmCluster, job_dir: Path, name: str) -> str:
    """sbatch as xcal (root may submit for another account) a job held until released."""
    script = (f"id -un > {name}.who; hostname >> {name}.who; "
              f"while [ ! -e release ]; do sleep 0.05; done; echo done > {name}.done")
    got = slurm.client(cluster.conf, [
        "sbatch", "--parsable", "--uid=xcal", "--gid=xcal", f"--job-name={name}",
        f"--chdir={job_dir}", f"--output={job_dir}/%x-%j.out", f"--wrap={script}"])
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


def squeue(cluster: SlurmCluster) -> list[list[str]]:
    got = slurm.client(cluster.conf, SQUEUE_4_2_3)
    assert got.returncode == 0, got.stderr
    header, *rows = got.stdout.splitlines()
    assert header.split() == ["JOBID", "NAME", "ST", "TIME", "NODELIST(REASON)"]
    return [row.split() for row in rows]


def until(what: str, predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def test_conf_keeps_every_path_to_the_cluster_and_ports_of_its_own(tmp_path: Path) -> None:
    a, b = slurm.configure(tmp_path / "a"), slurm.configure(tmp_path / "b")
    try:
        text = a.conf.read_text()
        assert f"ClusterName={a.name}\n" in text and a.name != b.name
        assert {a.ctld_port, a.node_port}.isdisjoint({b.ctld_port, b.node_port, 6817, 6818})
        assert "PartitionName=upex " in text and f"CPUs={a.cpus} " in text
        paths = [w.rpartition("=")[2] for w in text.split() if "=/" in w and "=/bin/" not in w]
        assert paths and all(p.startswith((str(a.dir), str(a.run_dir))) for p in paths), paths
        assert oct(a.run_dir.stat().st_mode & 0o777) == "0o755"
    finally:
        slurm.cleanup(a)
        slurm.cleanup(b)


def test_only_maxwell_logins_reach_the_cluster(tmp_path: Path) -> None:
    cluster = slurm.configure(tmp_path)
    try:
        got = slurm.login_env(tmp_path, "max-exfl016", "/usr/bin:/bin")
        assert got == {"SLURM_CONF": str(cluster.conf), "PATH": f"{cluster.bin}:/usr/bin:/bin"}
        assert slurm.login_env(tmp_path, "spb-br-sys-cal-0", "/usr/bin") == {}
        assert slurm.login_env(tmp_path / "none", "max-exfl016", "/usr/bin") == {}
    finally:
        slurm.cleanup(cluster)


def test_squeue_shows_xcal_job_that_runs_as_xcal_4_2_3(start, job_dir: Path) -> None:
    cluster = start()
    job = submit(cluster, job_dir, "correct_SPB_900146_r67")
    until("the job to run", lambda: [r[2] for r in squeue(cluster)] == ["R"])
    assert squeue(cluster)[0][:2] == [job, "correct_SPB_900146_r67"]
    assert squeue(cluster)[0][4] == "localhost"
    (job_dir / "release").touch()
    until("the job to finish", lambda: not squeue(cluster))
    assert (job_dir / "correct_SPB_900146_r67.who").read_text().split()[0] == "xcal"
    assert (job_dir / "correct_SPB_900146_r67.done").read_text() == "done\n"
    assert (job_dir / f"correct_SPB_900146_r67-{job}.out").stat().st_uid == slurm.ensure_user()


def test_more_jobs_than_cpus_wait_for_resources_4_2_3(start, job_dir: Path) -> None:
    cluster = start()
    for i in range(cluster.cpus + 2):
        submit(cluster, job_dir, f"dark_{i}")

    def states() -> list[str]:
        return sorted(r[2] for r in squeue(cluster))

    until(f"{cluster.cpus} jobs running", lambda: states().count("R") == cluster.cpus)
    pending = [r for r in squeue(cluster) if r[2] == "PD"]
    assert len(pending) == 2
    assert "(Resources)" in [r[4] for r in pending]


def test_two_clusters_side_by_side_see_only_their_own_jobs(start, job_dir: Path) -> None:
    a, b = start("a"), start("b")
    submit(a, job_dir, "only_in_a")
    submit(b, job_dir, "only_in_b")
    assert [r[1] for r in squeue(a)] == ["only_in_a"]
    assert [r[1] for r in squeue(b)] == ["only_in_b"]
    until("both jobs to run", lambda: (job_dir / "only_in_a.who").exists()
          and (job_dir / "only_in_b.who").exists())


def test_stop_cancels_jobs_and_leaves_no_process_behind(tmp_path: Path, job_dir: Path) -> None:
    cluster = slurm.start(tmp_path)
    try:
        submit(cluster, job_dir, "held")
        until("the job's processes", lambda: slurm.job_processes(cluster))
        jobs = slurm.job_processes(cluster)
    finally:
        problems = slurm.stop(cluster)
    assert problems == []
    assert [p.name for p in cluster.procs] == ["slurm:munged", "slurm:slurmctld", "slurm:slurmd"]
    assert [p for p in cluster.procs if procs.alive(p.pid, p.start)] == []
    assert [pid for pid in jobs if procs.alive(pid)] == []
    assert not (job_dir / "held.done").exists()  # cancelled, never released
    assert not cluster.run_dir.exists()
