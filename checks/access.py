"""Checks for the access runbooks (see the runbooks that name them)."""
