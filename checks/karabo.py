"""karabo checks (being written)."""
