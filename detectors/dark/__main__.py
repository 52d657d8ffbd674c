"""``python -m detectors.dark ...``: what the Slurm jobs run (the same as ``runbook dark``)."""

from detectors.dark.cli import app

app(prog_name="runbook dark")
