"""Lines of a host namespace's setup that let other accounts run this project's Python.

The twin's accounts (xcal's webservice and its Slurm jobs) are real OS users, but the
interpreter, the virtualenv or the checkout may sit under a folder that only root may
enter (pyenv under /root is 0700).  Inside the namespace, that folder is covered by a
tmpfs of mode 755 into which each of its entries is bound back: its content and the
entries' own modes stay as they are, only the folder itself becomes passable.  Nothing
changes outside the namespace.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["blocking_folders", "unblock_lines"]

REPO = Path(__file__).resolve().parents[1]


def runtime_paths() -> list[Path]:
    return [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), REPO]


def blocking_folders(paths: Iterable[Path]) -> list[Path]:
    """The topmost folders above `paths` that others may not pass through (no o+x)."""
    found: list[Path] = []
    for path in paths:
        for folder in [*reversed(path.parents), path][1:]:
            try:
                mode = folder.stat().st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                if folder not in found:
                    found.append(folder)
                break
    return found


def _bind_back(folder: Path) -> list[str]:
    q = shlex.quote
    lines = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        src, dst = '"$keep"/' + q(entry.name), q(str(folder / entry.name))
        if entry.is_symlink():
            lines.append(f"ln -s {q(os.readlink(entry.path))} {dst}")
        elif entry.is_dir():
            lines += [f"mkdir {dst}", f"mount --rbind {src} {dst}"]
        elif entry.is_file():
            lines += [f": > {dst}", f"mount --bind {src} {dst}"]
    return lines


def unblock_lines(paths: Iterable[Path] | None = None) -> list[str]:
    """Shell lines (run as root inside a private mount namespace) that make `paths`
    (default: this interpreter, its virtualenv and the checkout) reachable by anyone."""
    lines: list[str] = []
    for folder in blocking_folders(runtime_paths() if paths is None else paths):
        f = shlex.quote(str(folder))
        lines += ['keep=$(mktemp -d /tmp/twin-keep.XXXXXX)', f'mount --rbind {f} "$keep"',
                  f"mount -t tmpfs -o mode=755,size=1m twin-open {f}",
                  *_bind_back(folder), 'umount -l "$keep"', 'rmdir "$keep"']
    return lines
