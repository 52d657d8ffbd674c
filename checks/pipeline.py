"""Checks for the pipeline runbooks (see the runbooks that name them)."""
