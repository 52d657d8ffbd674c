"""Checks on facility hosts over SSH (guidelines 10.1, 11.1-11.3): commands, karabo-check,
processes, logs, run-folder sizes and daemontools run files.

Every check names a `host` and the `user` (account) to log in as; the subject is
`user@host`.  Arguments are given as values or lists and quoted by the transport
(`checks._ssh`), never pre-quoted by a runbook.  A host that cannot be reached, refuses the
key or does not answer in time gives `unknown` with the reason, never `fail` or `ok`.
The transport is imported inside the functions: `runbook --help` must not load asyncssh.
"""

from __future__ import annotations

import re
import secrets
import shlex
from typing import TYPE_CHECKING

from engine.context import Context
from engine.registry import action, check
from engine.result import Result

from ._karabo_check import filter_covers, match_servers, parse_karabo_check, parse_run_file
from ._ssh_params import (
    FileSizes,
    KaraboCheck,
    LogGrep,
    Process,
    ServiceRunFile,
    SshCommand,
    SshTarget,
    human_size,
    parse_size,
)

if TYPE_CHECKING:
    from ._ssh import CommandResult

__all__ = [
    "SshCommand", "KaraboCheck", "Process", "LogGrep", "FileSizes", "ServiceRunFile",
    "ssh_command", "ssh_karabo_check", "ssh_process", "ssh_log_grep", "ssh_file_sizes",
    "ssh_service_run_file", "parse_size", "human_size",
]

_TAIL = 2000
_q = shlex.quote
_Target = SshTarget   # the name checks.daq imports


def _subject(p: SshTarget) -> str:
    return f"{p.user}@{p.host}" if p.user else p.host


def _remote(p: SshTarget, ctx: Context, command: str, *, read_only: bool
            ) -> CommandResult | Result:
    """Run `command` (already quoted) on the target; an unreachable host is a Result.

    `read_only` is stated by every caller: True for the checks' probes, False for a command
    that may change the host (refused by the transport inside a plan or diagnose walk)."""
    from . import _ssh

    pool = _ssh.pool_for(ctx)
    limit = min(p.timeout or pool.settings.command_timeout, ctx.timeout * 0.9)
    try:
        return pool.run(p.host, p.user, command, limit, read_only=read_only)
    except _ssh.SshError as exc:
        result = Result.unknown(str(exc), evidence=f"$ {command}")
        result.subject = _subject(p)
        return result


def _shown(p: SshTarget, command: str, *texts: str) -> str:
    body = "".join(t[-_TAIL:] for t in texts if t)
    return f"{_subject(p)}$ {command}\n{body}".rstrip()


def _verdict(p: SshTarget, problems: list[str], evidence: str, **observed: object) -> Result:
    return Result(outcome="fail" if problems else "ok", evidence=evidence,
                  reason="; ".join(problems), observed=observed, subject=_subject(p))


# ---- ssh.command --------------------------------------------------------------------------

def _command(p: SshCommand, ctx: Context, read_only: bool) -> Result:
    command = shlex.join(p.argv)
    if p.cwd:
        command = f"cd {_q(p.cwd)} && {command}"
    got = _remote(p, ctx, command, read_only=read_only)
    if isinstance(got, Result):
        return got
    out = got.stdout
    problems = p.problems(got.exit, out)
    return _verdict(p, problems, _shown(p, command, out, got.stderr), exit=got.exit,
                    stdout=out[-_TAIL:], connection=got.connection)


@check("ssh.command")
def ssh_command(p: SshCommand, ctx: Context) -> Result:
    """A read-only command (its runbook vouches for it; use ssh.run for a change)."""
    return _command(p, ctx, read_only=True)


@action("ssh.run")
def ssh_run(p: SshCommand, ctx: Context) -> Result:
    """The same as ssh.command, but it may change something (4.3, 4.4), so only `run`
    calls it, and the transport refuses it in a plan or diagnose walk."""
    return _command(p, ctx, read_only=False)


# ---- ssh.karabo_check ---------------------------------------------------------------------

_NO_INSTALL = "@@runbook: no activate@@"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOT_STARTED = "@@runbook: svscan not supervised@@"


@check("ssh.karabo_check")
def ssh_karabo_check(p: KaraboCheck, ctx: Context) -> Result:
    root = p.karabo_root or f"/scratch/{p.user}/karabo"
    # karabo-check starts the supervisor when it is not running: ask svok first, so that a
    # read-only check never starts anything.
    command = "; ".join([
        f"k={_q(root)}",
        f'[ -r "$k/activate" ] || {{ echo {_q(_NO_INSTALL)}; exit 0; }}',
        '. "$k/activate" || exit 3',
        f'svok "$KARABO/var/service/.svscan" || {{ echo {_q(_NOT_STARTED)}; exit 0; }}',
        "exec karabo-check",
    ])
    got = _remote(p, ctx, command, read_only=True)
    if isinstance(got, Result):
        return got
    text = _ANSI.sub("", got.stdout)
    evidence = _shown(p, f"source {root}/activate; karabo-check", text, got.stderr)
    installed = _NO_INSTALL not in got.stdout
    started = installed and _NOT_STARTED not in got.stdout
    if got.exit != 0:
        return Result.unknown(f"karabo-check exited with {got.exit}", evidence=evidence)
    servers, _other = parse_karabo_check(text if started else "")
    problems = []
    if p.started is True and not started:
        problems.append(f"no Karabo installation at {root}" if not installed
                        else "Karabo is not started (its supervisor is not running)")
    if p.started is False and started:
        problems.append("Karabo is started")
    for pattern in p.servers:
        matched = match_servers(servers, pattern)
        if not matched:
            problems.append(f"no server matches {pattern!r}")
        for s in matched:
            if not s.up:
                problems.append(f"{s.name} is down" + (f" ({s.problem})" if s.problem else ""))
            elif (s.seconds or 0) < p.min_uptime:
                problems.append(f"{s.name} is up for only {s.seconds} s (restarting?)")
    for pattern in p.down:
        for s in match_servers(servers, pattern):
            if s.up:
                problems.append(f"{s.name} is up (pid {s.pid}), but should not run here")
    return _verdict(p, problems, evidence, installed=installed, started=started,
                    servers={n: s.to_dict() for n, s in servers.items()},
                    connection=got.connection)


# ---- ssh.process ----------------------------------------------------------------------------

@check("ssh.process")
def ssh_process(p: Process, ctx: Context) -> Result:
    # The pattern never reaches the remote side, so no grep can match itself.  The first
    # line is the PID of the shell that runs this (and perhaps other checks' commands,
    # which may name the pattern): its whole process tree is left out.
    command = 'echo "$$"; exec ps -ww -eo pid=,ppid=,user:32=,etimes=,args='
    got = _remote(p, ctx, command, read_only=True)
    if isinstance(got, Result):
        return got
    lines = got.stdout.splitlines()
    if got.exit != 0 or not lines or not lines[0].strip().isdigit():
        return Result.unknown(f"ps exited with {got.exit}",
                              evidence=_shown(p, command, got.stderr))
    table = [f for f in (line.split(None, 4) for line in lines[1:]) if len(f) == 5]
    ours = {lines[0].strip()}
    for _round in range(len(table)):
        more = {f[0] for f in table if f[1] in ours} - ours
        if not more:
            break
        ours |= more
    regex = re.compile(p.pattern)
    found = [{"pid": int(pid), "user": owner, "seconds": int(etimes), "args": args}
             for pid, _ppid, owner, etimes, args in table
             if pid not in ours and regex.search(args) and p.owner in (None, owner)]
    shown = "\n".join(f"{f['pid']:>7} {f['user']:<10} {f['args']}" for f in found[:20])
    evidence = f"{_subject(p)}: {len(found)} process(es) match {p.pattern!r}\n{shown}".rstrip()
    problems = []
    if p.present and len(found) < p.min_count:
        problems.append(f"{len(found)} process(es) match {p.pattern!r}, expected at least "
                        f"{p.min_count}")
    if not p.present and found:
        problems.append(f"{len(found)} process(es) match {p.pattern!r}, expected none")
    return _verdict(p, problems, evidence, count=len(found), processes=found[:20],
                    connection=got.connection)


# ---- ssh.log_grep --------------------------------------------------------------------------

@check("ssh.log_grep")
def ssh_log_grep(p: LogGrep, ctx: Context) -> Result:
    source = f'tail -n {p.lines} -- "$f"' if p.lines else 'cat -- "$f"'
    parts = [f"f={_q(p.path)}",
             '[ -e "$f" ] || { echo "$f: no such file" >&2; exit 3; }',
             '[ -r "$f" ] || { echo "$f: permission denied" >&2; exit 3; }']
    if p.pattern is None:
        parts.append(f"{source} | tail -n {p.show}")
        shown = f"tail -n {p.lines} {p.path}"
    else:
        flags = ("-E" if p.regex else "-F") + ("i" if p.ignore_case else "")
        awk = (f"awk -v k={p.show} '{{n++; b[n%k]=$0}} END {{print n+0; s=n-k+1; "
               "if (s<1) s=1; for (i=s; i<=n; i++) print b[i%k]}'")
        parts.append(f"{source} | grep {flags} -e {_q(p.pattern)} | {awk}")
        shown = f"grep {flags} {shlex.quote(p.pattern)} {p.path}" + (
            f" (last {p.lines} lines)" if p.lines else "")
    got = _remote(p, ctx, "; ".join(parts), read_only=True)
    if isinstance(got, Result):
        return got
    if got.exit != 0:
        return Result.unknown(got.stderr.strip().splitlines()[-1] if got.stderr.strip()
                              else f"reading {p.path} failed (exit {got.exit})",
                              evidence=_shown(p, shown, got.stderr))
    if p.pattern is None:
        tail = got.stdout.splitlines()
        return _verdict(p, [], _shown(p, shown, got.stdout), lines=tail,
                        connection=got.connection)
    head, _, rest = got.stdout.partition("\n")
    count = int(head.strip() or 0)
    matches = rest.splitlines()
    problems = []
    if p.expect == "present" and count < p.min_count:
        problems.append(f"{count} line(s) match, expected at least {p.min_count}")
    if p.expect == "absent" and count:
        problems.append(f"{count} line(s) match {p.pattern!r}")
    evidence = _shown(p, shown, f"{count} matching line(s)\n", "\n".join(matches))
    return _verdict(p, problems, evidence, count=count, matches=matches,
                    connection=got.connection)


# ---- ssh.file_sizes ----------------------------------------------------------------------

@check("ssh.file_sizes")
def ssh_file_sizes(p: FileSizes, ctx: Context) -> Result:
    command = "; ".join([
        f"d={_q(p.path)}",
        '[ -d "$d" ] || { echo "$d: no such folder" >&2; exit 3; }',
        f'exec find "$d" -mindepth 1 -maxdepth 1 -type f -name {_q(p.glob)} -printf "%s %f\\n"',
    ])
    got = _remote(p, ctx, command, read_only=True)
    if isinstance(got, Result):
        return got
    shown = f"ls -al {p.path}"
    if got.exit == 3:
        return _verdict(p, [f"{p.path} does not exist"], _shown(p, shown, got.stderr),
                        exists=False, count=0, total=0)
    if got.exit != 0:
        return Result.unknown(f"listing {p.path} failed (exit {got.exit})",
                              evidence=_shown(p, shown, got.stderr))
    files = sorted((name, int(size)) for size, _, name in
                   (line.partition(" ") for line in got.stdout.splitlines() if line))
    total = sum(size for _, size in files)
    listing = "\n".join(f"{human_size(size):>8}  {name}" for name, size in files[:50])
    evidence = _shown(p, shown, f"{len(files)} file(s), {human_size(total)} in total\n",
                      listing)
    problems = []
    if len(files) < p.min_count:
        problems.append(f"{len(files)} file(s), expected at least {p.min_count}")
    if p.min_total is not None and total < p.min_total:
        problems.append(f"{human_size(total)} in total, expected at least "
                        f"{human_size(p.min_total)}")
    if p.min_file_size is not None:
        small = [name for name, size in files if size < p.min_file_size]
        if small:
            problems.append(f"{len(small)} file(s) smaller than {human_size(p.min_file_size)}: "
                            + ", ".join(small[:5]))
    return _verdict(p, problems, evidence, exists=True, count=len(files), total=total,
                    files=dict(files[:200]), connection=got.connection)


# ---- ssh.service_run_file -----------------------------------------------------------------

@check("ssh.service_run_file")
def ssh_service_run_file(p: ServiceRunFile, ctx: Context) -> Result:
    path = p.run_file()
    token = f"@@runbook-{secrets.token_hex(4)}@@"
    # One execution: the file, whether each PATH= folder exists, the sibling services.
    command = "; ".join([
        f"f={_q(path)}",
        'cat -- "$f" || exit 3',
        f"printf '\\n%s\\n' {token}",
        "grep -oE '(^|[[:space:]])PATH=[^[:space:]]+' -- \"$f\" "
        "| sed -e 's/^[[:space:]]*PATH=//' -e 's/\\\\$//' | tr ':' '\\n' "
        "| while IFS= read -r d; do [ -d \"$d\" ] && echo \"dir $d\" || echo \"nodir $d\"; "
        "done",
        f"echo {token}",
        'ls -1 -- "$(dirname -- "$(dirname -- "$f")")"',
    ])
    got = _remote(p, ctx, command, read_only=True)
    if isinstance(got, Result):
        return got
    shown = f"cat {path}"
    if got.exit == 3 or token not in got.stdout:
        return _verdict(p, [f"cannot read {path}"], _shown(p, shown, got.stderr),
                        exists=False)
    text, _, after = got.stdout.partition(f"\n{token}\n")
    dirs_part, _, listing = after.partition(f"{token}\n")
    exists = {}
    for line in dirs_part.splitlines():
        state, _, folder = line.partition(" ")
        exists[folder] = state == "dir"
    run = parse_run_file(text)
    problems = list(run.problems)
    if p.program is not None and run.program != p.program:
        problems.append(f"runs {run.program}, expected {p.program}")
    if p.port is not None and run.port != p.port:
        problems.append(f"--port {run.port}, expected {p.port}")
    if p.server_id is not None and run.server_id != p.server_id:
        problems.append(f"serverId {run.server_id}, expected {p.server_id}")
    wanted = list(p.covers)
    if p.covers_all:
        me = path.rstrip("/").split("/")[-2] if "/" in path else ""
        wanted += [s for s in listing.split()
                   if s != me and not any(re.search(o, s) for o in p.omit)]
    uncovered = [s for s in dict.fromkeys(wanted) if not filter_covers(run, s)]
    if uncovered:
        problems.append("--filter does not cover " + ", ".join(uncovered))
    cuda_ok = [d for d in run.cuda_dirs if exists.get(d)]
    if p.cuda is True and not cuda_ok:
        problems.append("no CUDA folder on PATH" if not run.cuda_dirs else
                        "CUDA folder(s) on PATH missing on the host: "
                        + ", ".join(run.cuda_dirs))
    if p.cuda is False and run.cuda_dirs:
        problems.append("PATH holds CUDA: " + ", ".join(run.cuda_dirs))
    notes = [f"{d}: {'exists' if exists.get(d) else 'MISSING'}" for d in run.cuda_dirs]
    evidence = _shown(p, shown, text, "\n" + "\n".join(notes) if notes else "")
    return _verdict(p, problems, evidence, exists=True, program=run.program,
                    server_id=run.server_id, port=run.port,
                    filter=list(run.filter) if run.filter is not None else None,
                    path=list(run.path), cuda_dirs={d: bool(exists.get(d))
                                                    for d in run.cuda_dirs},
                    uncovered=uncovered, connection=got.connection)
