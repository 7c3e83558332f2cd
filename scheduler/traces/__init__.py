"""Importers that turn public cluster traces into snapshots: pure mappings, thin file readers."""

from scheduler.traces.openb import read_openb, snapshot_from_openb

__all__ = ["read_openb", "snapshot_from_openb"]
