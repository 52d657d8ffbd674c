"""The status dashboard (`runbook serve`), the overview page of section 9.

Imported only by the command that serves it, so that starlette and uvicorn stay off the
CLI's start path.
"""

from ._serve import serve
from ._slurm import squeue_source
from .app import create_app, diagnoses

__all__ = ["create_app", "diagnoses", "serve", "squeue_source"]
