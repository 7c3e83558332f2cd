"""Import the Microsoft ITP training-job trace (ElasticFlow raw traces, clusterNN.csv) as TraceJobs.

Columns `job_id,submission_time,duration,num_gpu`: arrival (seconds since collection began), run
time (seconds) and GPUs. The trace records nothing else, so the rest are assumptions, stated here:

Kind: every job is training. The trace README says all jobs are deep-learning training jobs;
    splitting 1-GPU jobs off as fine-tuning would be a further guess, so it is not done.
Priority: 0 for every pod (the trace has none); every pod is preemptible and pending.
Shape: nodes are taken to have `gpus_per_node` GPUs (default 8, the README's suggested
    homogeneous inventory). A job of num_gpu <= gpus_per_node is one pod of num_gpu whole GPUs.
    A bigger job is a gang (Gang(name=<job name>, size=n)) of n = ceil(num_gpu / gpus_per_node)
    pods: the first n-1 take gpus_per_node GPUs each (a full node's worth) and the last takes the
    rest, which may be fewer (12 GPUs -> 8 + 4). In the published files every size above 8 is a
    multiple of 8 (16, 32, 64), so all members are full nodes there.
CPU and memory: derived per GPU with a stated ratio, as the README suggests (8 to 12 vCPU and 64
    to 96 GiB per GPU): by default 8000 millicores and 65536 MiB per GPU, at the low end.
Names: job and pod names are `itp-<the first 8 hex digits of job_id>-<file line>` (the line
    makes them unique whatever the ids are); gang members add `-<index>` from 0. Characters of
    job_id other than letters and digits are dropped and letters are lower-cased.
Times: submit = submission_time, duration = duration (0 is kept). The files are sorted by
    submission time; jobs are still sorted by (submit, file line).

Errors (a missing column, a non-numeric value, a negative time or duration, num_gpu below 1)
name the file, the line (the header is line 1) and the column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from itertools import count
from pathlib import Path
from typing import Any

from scheduler.errors import UserError
from scheduler.model import Gang, Pod, PodKind
from scheduler.model import limits as lim
from scheduler.traces.generic_csv import _error, _read_csv
from scheduler.traces.workload import TraceJob

COLUMNS = ("job_id", "submission_time", "duration", "num_gpu")
FIX = "fix that row or use an unmodified clusterNN.csv from the ITP trace"

Row = Mapping[str, Any]


def _text(row: Row, column: str, source: str, line: int) -> str:
    value = row.get(column)
    text = "" if value is None else str(value).strip()
    if not text:
        raise _error(source, line, column, "missing value", FIX)
    return text


def _seconds(row: Row, column: str, source: str, line: int) -> float:
    text = _text(row, column, source, line)
    try:
        value = float(text)
    except ValueError:
        raise _error(source, line, column, f"'{text}' is not a number", FIX) from None
    if not math.isfinite(value):
        raise _error(source, line, column, f"'{text}' is not a finite number", FIX)
    if value < 0:
        raise _error(source, line, column, f"{text} is negative", FIX)
    if value > lim.MAX_SECONDS:
        raise _error(source, line, column, f"{text} is above {lim.MAX_SECONDS}, the limit", FIX)
    return value


def _gpus(row: Row, source: str, line: int) -> int:
    text = _text(row, "num_gpu", source, line)
    try:
        value = int(text)
    except ValueError:
        raise _error(source, line, "num_gpu", f"'{text}' is not an integer", FIX) from None
    if value < 1:
        raise _error(source, line, "num_gpu", f"{value} is below 1", FIX)
    if value > lim.MAX_JOB_GPUS:
        raise _error(
            source, line, "num_gpu", f"{value} is above {lim.MAX_JOB_GPUS}, the limit", FIX
        )
    return value


def _job(
    row: Row, source: str, line: int, gpus_per_node: int, cpu_per_gpu: int, mem_per_gpu: int
) -> TraceJob:
    job_id = _text(row, "job_id", source, line)
    submit = _seconds(row, "submission_time", source, line)
    duration = _seconds(row, "duration", source, line)
    num_gpu = _gpus(row, source, line)
    short = "".join(c for c in job_id.lower() if c.isascii() and c.isalnum())[:8]
    name = f"itp-{short}-{line}" if short else f"itp-{line}"

    def pod(pod_name: str, gpus: int, gang: Gang | None) -> Pod:
        return Pod(
            name=pod_name,
            kind=PodKind.TRAINING,
            gpus=gpus,
            cpu_milli=gpus * cpu_per_gpu,
            memory_mi_b=gpus * mem_per_gpu,
            gang=gang,
        )

    if num_gpu <= gpus_per_node:
        pods: tuple[Pod, ...] = (pod(name, num_gpu, None),)
    else:
        size = math.ceil(num_gpu / gpus_per_node)
        gang = Gang(name=name, size=size)
        shares = [gpus_per_node] * (size - 1) + [num_gpu - gpus_per_node * (size - 1)]
        pods = tuple(pod(f"{name}-{i}", g, gang) for i, g in enumerate(shares))
    return TraceJob(name=name, submit=submit, duration=duration, pods=pods, source_line=line)


def itp_jobs(
    rows: Iterable[Row],
    source: str = "ITP trace",
    *,
    lines: Iterable[int] | None = None,
    gpus_per_node: int = 8,
    cpu_per_gpu_milli: int = 8000,
    memory_per_gpu_mib: int = 65536,
) -> list[TraceJob]:
    """One job per row, sorted by (submit, line); options and assumptions in the module docstring.

    Rows are mappings from column name to value; `lines` gives each row's file line for
    messages (default 2, 3, ...).
    """
    if gpus_per_node < 1:
        raise UserError(f"gpus_per_node {gpus_per_node} is below 1", "use a value >= 1")
    if cpu_per_gpu_milli < 0 or memory_per_gpu_mib < 0:
        raise UserError(
            f"cpu_per_gpu_milli {cpu_per_gpu_milli} or memory_per_gpu_mib "
            f"{memory_per_gpu_mib} is negative",
            "use values >= 0",
        )
    jobs = [
        _job(row, source, line, gpus_per_node, cpu_per_gpu_milli, memory_per_gpu_mib)
        for row, line in zip(rows, count(2) if lines is None else lines, strict=False)
    ]
    jobs.sort(key=lambda j: j.submit)  # stable: ties stay in file order
    return jobs


def read_itp_jobs(
    path: str | Path,
    *,
    gpus_per_node: int = 8,
    cpu_per_gpu_milli: int = 8000,
    memory_per_gpu_mib: int = 65536,
) -> list[TraceJob]:
    """Read an ITP clusterNN.csv; see the module docstring for the assumptions."""
    path = Path(path)
    _, rows = _read_csv(path, COLUMNS, FIX)
    return itp_jobs(
        [r for _, r in rows],
        str(path),
        lines=[line for line, _ in rows],
        gpus_per_node=gpus_per_node,
        cpu_per_gpu_milli=cpu_per_gpu_milli,
        memory_per_gpu_mib=memory_per_gpu_mib,
    )
