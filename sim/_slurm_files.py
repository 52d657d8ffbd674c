"""The files `sim.slurm.configure` writes: slurm.conf and the twin's ``sbatch``."""

from __future__ import annotations

__all__ = ["conf_text", "sbatch_text"]

# Debian 12's Slurm 22.05 on one node, without cgroups (none in a container), systemd or
# accounting; every path belongs to this one cluster.
_CONF = """\
# Written by sim.slurm for one twin; nothing here is shared with another cluster.
ClusterName={name}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={spool}
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

# The twin's SSH sessions run as root; at the facility sbatch submits as the login's
# account, and `squeue -u xcal` (4.2.3) shows only that account's jobs.
_SBATCH = """\
#!/bin/bash
# Written by sim.slurm: submit as the login's account ($USER), as at the facility.
if [ "$(id -u)" = 0 ] && [ -n "$USER" ] && [ "$USER" != root ] \\
        && id -u "$USER" >/dev/null 2>&1; then
    exec {sbatch} --uid="$USER" --gid="$(id -g "$USER")" "$@"
fi
exec {sbatch} "$@"
"""


def conf_text(*, name: str, ctld_port: int, node_port: int, socket: str, spool: str,
              dir: str, cpus: int, partition: str) -> str:
    return _CONF.format(name=name, ctld_port=ctld_port, node_port=node_port, socket=socket,
                        spool=spool, dir=dir, cpus=cpus, partition=partition)


def sbatch_text(sbatch: str) -> str:
    """The ``sbatch`` first on PATH in a Maxwell login; `sbatch` is the real one."""
    return _SBATCH.format(sbatch=sbatch)
