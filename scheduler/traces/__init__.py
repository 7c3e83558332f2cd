"""Importers that turn public cluster traces into snapshots and replayable jobs.

Pure mappings from rows, thin file readers. `read_trace(kind, path)` reads any supported trace as
a list of TraceJob: "openb" (Alibaba pod lists), "itp" (Microsoft ITP clusterNN.csv) or "csv"
(the generic format of docs/trace-csv.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheduler.errors import UserError
from scheduler.traces.generic_csv import csv_jobs, read_csv_jobs
from scheduler.traces.itp import itp_jobs, read_itp_jobs
from scheduler.traces.openb import read_openb, snapshot_from_openb
from scheduler.traces.openb_jobs import (
    openb_has_times,
    openb_jobs,
    read_openb_jobs,
    read_openb_trace,
)
from scheduler.traces.workload import TraceJob

TRACE_KINDS = ("openb", "itp", "csv")


def _check_kind(kind: str) -> None:
    if kind not in TRACE_KINDS:
        raise UserError(f"unknown trace kind '{kind}'", f"use one of: {', '.join(TRACE_KINDS)}")


def read_trace(kind: str, path: str | Path, **opts: Any) -> list[TraceJob]:
    """The jobs of a trace file of the given kind, sorted by (submit, file line).

    Options go to the reader: read_itp_jobs takes gpus_per_node, cpu_per_gpu_milli and
    memory_per_gpu_mib; the openb and csv readers take none.
    """
    _check_kind(kind)
    if kind == "openb":
        jobs = read_openb_jobs(path, **opts)
    elif kind == "itp":
        jobs = read_itp_jobs(path, **opts)
    else:
        jobs = read_csv_jobs(path, **opts)
    if not jobs:  # nothing to replay: every measure would divide by an empty span
        raise UserError(f"{path}: no jobs, only a header", "give a trace with at least one row")
    return jobs


def trace_has_times(kind: str, path: str | Path) -> bool:
    """Whether a trace file has arrival and run times, so that it can be replayed in time.

    ITP and generic CSV files always do; an openb pod list does unless it is a five-column
    multigpu* variant (FGD protocol only).
    """
    _check_kind(kind)
    return openb_has_times(path) if kind == "openb" else True


def require_times(kind: str, path: str | Path) -> None:
    """Raise a UserError when a trace file cannot be replayed in time (see trace_has_times)."""
    if not trace_has_times(kind, path):
        raise UserError(
            f"{path} has no creation or deletion times (an openb multigpu* variant), so it "
            "cannot be replayed in time",
            "run it with the FGD protocol (random order, no departures) or pick a pod list "
            "with times",
        )


__all__ = [
    "TRACE_KINDS",
    "TraceJob",
    "csv_jobs",
    "itp_jobs",
    "openb_has_times",
    "openb_jobs",
    "read_csv_jobs",
    "read_itp_jobs",
    "read_openb",
    "read_openb_jobs",
    "read_openb_trace",
    "read_trace",
    "require_times",
    "snapshot_from_openb",
    "trace_has_times",
]
