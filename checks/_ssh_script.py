"""Shell quoting, and several commands in one remote execution.

Quoting is done here: callers hand argument lists to `command_line`, never shell strings
built from values.  `combined_script` runs commands side by side in one bash, each with its
own stdout, stderr, exit status and time limit; `split_combined` takes its output apart.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence

from ._ssh_errors import UnsafeCommand

__all__ = ["command_line", "combined_script", "split_combined", "check_literal",
           "name_problem", "TIMED_OUT"]

TIMED_OUT = "T"
"""What `combined_script` prints instead of an exit status for a command past its limit."""


def check_literal(command: str) -> str:
    """`command`, unless it holds a NUL byte: the remote shell's command line ends there,
    so whatever follows would be lost (or an argument cut short), quoted or not."""
    if "\0" in command:
        at = command.index("\0")
        raise UnsafeCommand(f"a NUL byte (after {command[max(0, at - 20):at]!r}) cannot "
                            "reach the remote side in a command; remove it from the value")
    return command


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def name_problem(what: str, value: str) -> str | None:
    """Why `value` is no host (`what` "host") or account name, or None.

    Names reach the ssh_config's `%h`/`%r` tokens and the remote login, never a shell; a
    name of letters, digits, '_', '.', '-' (or an IP address) cannot mean anything else."""
    if _NAME.fullmatch(value):
        return None
    if what == "host":
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    return (f"{what} {value!r} is not a plain {what} name (letters, digits, '_', '.', '-'; "
            "not starting with '.' or '-')")


def command_line(argv: Sequence[str]) -> str:
    """One shell command from an argument list, every argument quoted."""
    if not argv:
        raise ValueError("empty command")
    return check_literal(shlex.join(str(a) for a in argv))


def _seconds(value: float) -> str:
    return f"{max(value, 0.001):.3f}"


def combined_script(commands: Sequence[str], token: str,
                    limits: Sequence[float] | None = None) -> str:
    """A bash script that runs `commands` side by side and prints a header line
    ``<token> <exit>...``, one ``<bytes>`` line per stdout and stderr, then the outputs.

    With `limits` (seconds, one per command), a watchdog stops a command that runs past its
    own limit (SIGTERM) and its exit shows as `TIMED_OUT`; the others still report.  The
    watchdog times with `read -t` on the session's input, so the client must keep that open
    until the output has come.  Outputs are buffered in files of /dev/shm (memory; $TMPDIR
    where there is none: creating and removing files on a disk costs the host about a third
    more CPU for three short commands) and read back with builtins; the only extra processes
    are the watchdog (a fork) and one `rm` that the script becomes at the end.  Output after
    a NUL byte is lost.  Needs bash 4.
    """
    n = len(commands)
    lines = ["LC_ALL=C; set -C; d=/dev/shm; [ -d $d ] && [ -w $d ] || d=${TMPDIR:-/tmp}",
             "b=$d/.runbook.$$.$RANDOM; exec 3<&0"]
    for i, cmd in enumerate(commands):
        lines.append(f'( {cmd}\n) 3<&- </dev/null >"$b.{i}o" 2>"$b.{i}e" & p{i}=$!')
    files = [f'"$b.{i}o" "$b.{i}e"' for i in range(n)]
    if limits is not None:
        if len(limits) != n:
            raise ValueError("one limit per command")
        watch, before = [], 0.0
        for i in sorted(range(n), key=lambda k: limits[k]):
            if limits[i] > before:
                watch.append(f"read -t {_seconds(limits[i] - before)} -u 3; "
                             "[ $? -gt 128 ] || exit 0")
                before = limits[i]
            watch.append(f'kill -0 $p{i} 2>/dev/null && {{ : >"$b.{i}t"; kill $p{i}; }}')
        lines.append("{ " + "; ".join(watch) + "; } 2>/dev/null </dev/null & w=$!")
        files += [f'"$b.{i}t"' for i in range(n)]
    for i in range(n):
        lines.append(f"wait $p{i}; x{i}=$?")
    if limits is not None:
        lines.append("kill $w 2>/dev/null")
        lines += [f'[ -e "$b.{i}t" ] && x{i}={TIMED_OUT}' for i in range(n)]
    outputs = " ".join(files[:n])
    lines += [
        f"v=(); for f in {outputs}; do IFS= read -r -d '' s <\"$f\"; v+=(\"$s\"); done",
        "echo " + shlex.quote(token) + " " + " ".join(f"$x{i}" for i in range(n)),
        'for s in "${v[@]}"; do echo "${#s}"; done',
        "printf '%s' \"${v[@]}\"",
        "exec rm -f -- " + " ".join(files),
    ]
    return "\n".join(lines) + "\n"


def split_combined(raw: bytes, token: str, n: int
                   ) -> list[tuple[int | None, str, str]] | None:
    """Undo `combined_script`'s framing: (exit, stdout, stderr) per command, exit None for
    a command stopped at its limit; None when the output is not framed as expected."""
    head, _, rest = raw.partition(b"\n")
    fields = head.split()
    if len(fields) != n + 1 or fields[0].decode(errors="replace") != token:
        return None
    size_lines = rest.split(b"\n", 2 * n)
    if len(size_lines) != 2 * n + 1:
        return None
    try:
        codes = [None if f == TIMED_OUT.encode() else int(f) for f in fields[1:]]
        sizes = [int(s) for s in size_lines[:2 * n]]
    except ValueError:
        return None
    body = size_lines[2 * n]
    parts: list[tuple[int | None, str, str]] = []
    at = 0
    for i in range(n):
        out = body[at:at + sizes[2 * i]]
        at += sizes[2 * i]
        err = body[at:at + sizes[2 * i + 1]]
        at += sizes[2 * i + 1]
        parts.append((codes[i], out.decode(errors="replace"), err.decode(errors="replace")))
    return parts
