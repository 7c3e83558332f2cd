"""The openb pod lists as a replayable trace: one TraceJob per pod row.

Each row is read exactly as the snapshot importer reads it (scheduler.traces.openb: kinds by the
same heuristics, priority 0, gpu_spec as gpuModels), so a pod is the same pod in both; here it
also gets a time of arrival and a run time:

    submit   = creation_time
    duration = deletion_time - scheduled_time   when scheduled_time is given,
               deletion_time - creation_time    when it is empty (the pod never started).

Measuring from scheduled_time keeps the production queueing delay out of the run time: the
simulator adds its own wait. The 897 pods of default with no scheduled_time were Pending until
they were deleted; we cannot know how long they would have run, so they are taken to run for the
whole time they existed (deletion minus creation), the only span the trace records for them. A
duration of 0 is kept (the pod left as soon as it started).

Several variants (cpu037 to cpu300, every gpushare*) are not sorted by creation_time, so jobs are
returned sorted by (submit, file line).

The multigpu* variants have only five columns (no gpu_spec, qos or times). Their jobs get
submit 0 and duration None (they never leave), and such a file supports only the FGD protocol:
pods submitted in random order with no departures, not a time replay. `read_openb_trace` and
`openb_has_times` say whether a file has times, so a simulator can refuse a time replay of one.
A file has times when its header has creation_time and deletion_time (scheduled_time optional);
a header with only some of them is an error.

Errors (a non-integer or negative time, a deletion before creation or scheduling) name the file,
the line (the header is line 1) and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from scheduler.errors import UserError
from scheduler.traces.openb import (
    POD_COLUMNS,
    Row,
    _bad,
    _check_unique,
    _fix,
    _int,
    _pod,
    _read_table,
)
from scheduler.traces.workload import TraceJob

TIME_COLUMNS = ("creation_time", "deletion_time")
SCHEDULED = "scheduled_time"


def _job(row: Row, source: str, line: int, has_times: bool) -> TraceJob:
    pod = _pod(row, source, line)
    if not has_times:
        return TraceJob(name=pod.name, submit=0.0, duration=None, pods=(pod,), source_line=line)
    created = _int(row, "creation_time", source, line)
    deleted = _int(row, "deletion_time", source, line)
    start, start_column = created, "creation_time"
    if str(row.get(SCHEDULED) or "").strip():
        start, start_column = _int(row, SCHEDULED, source, line), SCHEDULED
        if start < created:
            raise _bad(source, line, SCHEDULED, f"{start} is before creation_time {created}")
    if deleted < start:
        raise _bad(
            source,
            line,
            "deletion_time",
            f"{deleted} is before {start_column} {start} (a negative duration)",
        )
    return TraceJob(
        name=pod.name,
        submit=float(created),
        duration=float(deleted - start),
        pods=(pod,),
        source_line=line,
    )


def openb_jobs(
    rows: Iterable[Row], source: str = "pod list", *, has_times: bool | None = None
) -> list[TraceJob]:
    """One job per pod row, sorted by (submit, line); rows are mappings as csv.DictReader yields.

    `has_times` None means: the rows have times when the first one has a creation_time key.
    Without times every job has submit 0 and duration None. Row i is file line i + 2.
    """
    rows = list(rows)
    if has_times is None:
        has_times = bool(rows) and "creation_time" in rows[0]
    jobs = [_job(r, source, i, has_times) for i, r in enumerate(rows, start=2)]
    _check_unique([j.name for j in jobs], source, "name")
    jobs.sort(key=lambda j: j.submit)  # stable: ties stay in file order
    return jobs


def _times_in(header: list[str], source: str) -> bool:
    present = [c for c in (*TIME_COLUMNS, SCHEDULED) if c in header]
    if not present:
        return False
    for column in TIME_COLUMNS:
        if column not in header:
            raise _bad(source, 1, column, f"missing from the header, which has {present[0]}")
    return True


def openb_has_times(pod_csv_path: str | Path) -> bool:
    """Whether a pod list has creation and deletion times (all but the multigpu* variants).

    Reads the header only. A file without times supports the FGD protocol, not a time replay.
    """
    path = Path(pod_csv_path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})", _fix("the file")) from None
    return _times_in([c.strip() for c in header], str(path))


def read_openb_trace(pod_csv_path: str | Path) -> tuple[list[TraceJob], bool]:
    """The jobs of an openb pod list and whether the file has times (see the module docstring)."""
    path = Path(pod_csv_path)
    header, rows = _read_table(path, POD_COLUMNS)
    has_times = _times_in(header, str(path))
    return openb_jobs(rows, str(path), has_times=has_times), has_times


def read_openb_jobs(pod_csv_path: str | Path) -> list[TraceJob]:
    """The jobs of an openb pod list, sorted by (submit, line); see read_openb_trace for times."""
    return read_openb_trace(pod_csv_path)[0]
