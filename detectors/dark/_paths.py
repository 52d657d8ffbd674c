"""Where the raw runs and the report live, from the site's `raw_path` and `report_path`.

The site's patterns use Python `{name}` placeholders. The same name does not mean the
same text in both: in `raw_path` (section 10.1) `{proposal}` and `{run}` are folder names
(`p900146`, `r0067`), in `report_path` (section 8) `{proposal}` is the bare number
(`900146`) and `{runs}` is `r67_r68_r69`, as in `dark_900146_r67_r68_r69_200723_120510`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from detectors.dark.errors import DarkError

__all__ = ["raw_run_dir", "report_name", "report_dir", "runs_label", "TIME_STAMP_FORMAT"]

#: the report folder's time stamp, as in `dark_900146_r67_r68_r69_200723_120510`
TIME_STAMP_FORMAT = "%y%m%d_%H%M%S"


def runs_label(runs: Sequence[int]) -> str:
    """`r67_r68_r69`: the runs as the facility names them in report folders."""
    return "_".join(f"r{r}" for r in runs)


def _fill(pattern: str, values: Mapping[str, object], what: str) -> str:
    try:
        return pattern.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise DarkError(
            f"the site's {what} pattern {pattern!r} cannot be filled with "
            f"{', '.join(sorted(values))}: {exc!r}"
        ) from exc


def raw_run_dir(
    run: int,
    *,
    raw_root: Path | None = None,
    pattern: str | None = None,
    instrument: str = "",
    cycle: str | None = None,
    proposal: int = 0,
) -> Path:
    """The folder of one raw run.

    With `raw_root` (the proposal's raw folder, xfel-calibrate's `--in-folder`), the run
    is `raw_root/r0067`. Otherwise the site's `raw_path` pattern is filled, which needs
    the cycle.
    """
    if raw_root is not None:
        return Path(raw_root) / f"r{run:04d}"
    if pattern is None:
        raise DarkError("the site has no raw_path pattern; pass --raw-root")
    if not cycle:
        raise DarkError("the raw run folder needs the cycle (--cycle 202031), or pass --raw-root")
    values = {"instrument": instrument, "cycle": cycle, "proposal": f"p{proposal:06d}",
              "run": f"r{run:04d}"}
    return Path(_fill(pattern, values, "raw_path"))


def report_name(proposal: int, runs: Sequence[int], when: datetime) -> str:
    """`dark_900146_r67_r68_r69_200723_120510`."""
    return f"dark_{proposal:06d}_{runs_label(runs)}_{when.strftime(TIME_STAMP_FORMAT)}"


def report_dir(
    pattern: str | None,
    *,
    instrument: str,
    det_instance: str,
    proposal: int,
    runs: Sequence[int],
    when: datetime,
    report_root: Path | None = None,
) -> Path:
    """The report folder: the site's `report_path` filled in.

    `report_root` replaces the part of the pattern before `{instrument}` (the facility's
    `.../caldb_store/xfel/reports`), so a test or the twin keeps the facility's layout
    below its own root.
    """
    if pattern is None:
        if report_root is None:
            raise DarkError("the site has no report_path pattern; pass --report-root")
        pattern = "{instrument}/{det_instance}/dark/dark_{proposal}_{runs}_{time_stamp}"
    values = {"instrument": instrument, "det_instance": det_instance,
              "proposal": f"{proposal:06d}", "runs": runs_label(runs),
              "time_stamp": when.strftime(TIME_STAMP_FORMAT)}
    if report_root is not None:
        cut = pattern.find("{instrument}")
        if cut < 0:
            raise DarkError(f"the report_path pattern {pattern!r} has no {{instrument}}, "
                            "so --report-root cannot replace its root")
        return Path(report_root) / _fill(pattern[cut:], values, "report_path")
    return Path(_fill(pattern, values, "report_path"))
