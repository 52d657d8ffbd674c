"""Dark characterization end to end: `runbook dark` (sections 5, 8 and 8.2).

Import from the modules; this package stays light so that ``runbook --help`` is fast:

- ``detectors.dark.cli.app``: the typer app (its one command is the callback, so it mounts
  as ``runbook dark --instrument ...``);
- ``detectors.dark.resolve.resolve_job(...) -> DarkJob``: options to a job;
- ``detectors.dark.job``: ``check_runs``, ``run_modules``, ``render``, ``run_dark``;
- ``detectors.dark.report.render_report``, ``detectors.dark.slurm``,
  ``detectors.dark.seed.dark_seed`` (declare a detector in a fresh calibration DB).
"""
