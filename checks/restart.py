"""Checks for the restart runbooks (see the runbooks that name them)."""
