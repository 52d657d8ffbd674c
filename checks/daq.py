"""daq checks (being written)."""
