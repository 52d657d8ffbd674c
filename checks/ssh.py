"""ssh checks (being written)."""
