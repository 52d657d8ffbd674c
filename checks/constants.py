"""Checks for the constants runbooks (see the runbooks that name them)."""
