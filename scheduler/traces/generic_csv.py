"""A generic trace CSV, so that users can replay their own workload (docs/trace-csv.md).

One row per pod. A row without `gang` is a job of its own; rows that share a `gang` name form one
gang job (all members run or none does). The header names the columns, in any order:

    column      required  meaning
    name        no        pod name; default job-<line>. Letters, digits, '.', '_' and '-',
                          starting and ending with a letter or digit; unique in the file.
    submit      yes       arrival, seconds since the trace began (a number >= 0).
    duration    no        run time once started, seconds (a number > 0); empty = never leaves.
    gpus        yes       whole GPUs (an integer >= 0; 0 = a CPU-only pod).
    gpu_milli   no        thousandths of each GPU, 1..1000; default 1000. Below 1000 (a share
                          of one GPU) only with gpus 1.
    kind        yes       training | fine-tuning | inference.
    priority    no        an integer, higher wins; default 0.
    gang        no        gang name (same characters as name). Every row with that name is a
                          member; the gang's size is the number of such rows, and they must
                          share submit, duration and priority. The job is named after the gang,
                          so a gang name must differ from every other job's name.
    cpu_milli   no        CPU request in millicores (an integer >= 0); default 0.
    memory_mib  no        memory request in MiB (an integer >= 0); default 0.
    gpu_models  no        acceptable GPU models, '|'-separated (e.g. A100|H100); default any.
                          The names are checked against the cluster when a replay starts.

An empty cell means the default. Values and column names may have spaces around them. A column
not in this table is an error, so that a misspelt optional column is not silently ignored; so are
a repeated column and a row with more or fewer fields than the header. Blank lines are skipped.
Every pod is pending and preemptible, in namespace default.

Jobs are returned sorted by (submit, line of their first row). Errors name the file, the line
(the header is line 1) and the column.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from itertools import count
from pathlib import Path
from typing import Any

from scheduler.errors import UserError
from scheduler.model import Gang, Pod, PodKind
from scheduler.model import limits as lim
from scheduler.traces.workload import TraceJob

COLUMNS = (
    "name",
    "submit",
    "duration",
    "gpus",
    "gpu_milli",
    "kind",
    "priority",
    "gang",
    "cpu_milli",
    "memory_mib",
    "gpu_models",
)
REQUIRED = ("submit", "gpus", "kind")
FIX = "fix that row; the trace CSV format is in docs/trace-csv.md"
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")

Row = Mapping[str, Any]


def _error(source: str, line: int, column: str, problem: str, todo: str = FIX) -> UserError:
    return UserError(f"{source} line {line}, column '{column}': {problem}", todo)


def _read_csv(
    path: Path, required: tuple[str, ...], todo: str
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header (names stripped) and (file line, row) pairs, blank lines skipped.

    A missing required column, a repeated column, or a row with more or fewer fields than the
    header is an error naming the line and column.
    """
    source = str(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            seen: set[str] = set()
            for column in header:
                if column in seen:
                    raise _error(source, 1, column, "appears twice in the header", todo)
                seen.add(column)
            for column in required:
                if column not in seen:
                    raise _error(source, 1, column, "missing from the header", todo)
            rows: list[tuple[int, dict[str, str]]] = []
            end = reader.line_num
            for fields in reader:
                line, end = end + 1, reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if len(fields) > len(header):
                    extra = fields[len(header)]
                    raise _error(
                        source,
                        line,
                        f"#{len(header) + 1}",
                        f"extra value '{extra}' beyond the header's {len(header)} columns",
                        todo,
                    )
                if len(fields) < len(header):
                    raise _error(
                        source,
                        line,
                        header[len(fields)],
                        f"missing value (the row has {len(fields)} fields, "
                        f"the header {len(header)})",
                        todo,
                    )
                rows.append((line, dict(zip(header, fields, strict=True))))
            return header, rows
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})", todo) from None


class _Cells:
    """One row's cells, parsed with errors that name the source, the line and the column."""

    def __init__(self, row: Row, source: str, line: int) -> None:
        self.row, self.source, self.line = row, source, line

    def bad(self, column: str, problem: str) -> UserError:
        return _error(self.source, self.line, column, problem)

    def text(self, column: str, *, required: bool = False) -> str:
        value = self.row.get(column)
        text = "" if value is None else str(value).strip()
        if required and not text:
            raise self.bad(column, "missing value (the column is required)")
        return text

    def integer(self, column: str, default: int, *, low: int = 0, high: int) -> int:
        text = self.text(column, required=column in REQUIRED)
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise self.bad(column, f"'{text}' is not an integer") from None
        if value < low:
            raise self.bad(column, f"{value} is below {low}")
        if value > high:
            raise self.bad(column, f"{value} is above {high}, the limit")
        return value

    def seconds(self, column: str, *, positive: bool) -> float | None:
        text = self.text(column, required=column in REQUIRED)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise self.bad(column, f"'{text}' is not a number of seconds") from None
        if not math.isfinite(value):
            raise self.bad(column, f"'{text}' is not a finite number of seconds")
        if positive and value <= 0:
            raise self.bad(
                column, f"{text} is not positive (leave it empty for a pod that never leaves)"
            )
        if value < 0:
            raise self.bad(column, f"{text} is negative")
        if value > lim.MAX_SECONDS:
            raise self.bad(column, f"{text} is above {lim.MAX_SECONDS} seconds, the limit")
        return value

    def name(self, column: str) -> str | None:
        text = self.text(column)
        if not text:
            return None
        if not _NAME.fullmatch(text):
            raise self.bad(
                column,
                f"'{text}' is not a valid name (letters, digits, '.', '_', '-'; starting and "
                "ending with a letter or digit; at most 253 characters)",
            )
        return text


def _kind(cells: _Cells) -> PodKind:
    text = cells.text("kind", required=True)
    try:
        return PodKind(text)
    except ValueError:
        known = " | ".join(k.value for k in PodKind)
        raise cells.bad("kind", f"unknown kind '{text}' (known: {known})") from None


def _models(cells: _Cells) -> list[str]:
    models: list[str] = []
    for part in cells.text("gpu_models").split("|"):
        name = part.strip()
        if name and name not in models:
            models.append(name)
    return models


class _Parsed:
    """A row as a pod plus the job-level fields that gang members must agree on."""

    def __init__(self, row: Row, source: str, line: int) -> None:
        cells = _Cells(row, source, line)
        for column in row:
            if column not in COLUMNS:
                raise _error(
                    source,
                    line,
                    str(column),
                    f"unknown column (known: {', '.join(COLUMNS)})",
                    "remove the column or fix its name; the format is in docs/trace-csv.md",
                )
        self.line = line
        self.submit = cells.seconds("submit", positive=False)
        self.duration = cells.seconds("duration", positive=True)
        gpus = cells.integer("gpus", 0, high=lim.MAX_GPUS_PER_NODE)
        milli = cells.integer("gpu_milli", 1000, low=1, high=1000)
        if milli < 1000 and gpus != 1:
            raise cells.bad("gpu_milli", f"a share of {milli} needs gpus 1 (got {gpus})")
        self.priority = cells.integer("priority", 0, low=lim.MIN_PRIORITY, high=lim.MAX_PRIORITY)
        self.gang = cells.name("gang")
        name = cells.name("name") or f"job-{line}"
        self.pod = Pod(
            name=name,
            kind=_kind(cells),
            priority=self.priority,
            gpus=gpus,
            gpu_milli=milli,
            gpu_models=_models(cells),
            cpu_milli=cells.integer("cpu_milli", 0, high=lim.MAX_CPU_MILLI),
            memory_mi_b=cells.integer("memory_mib", 0, high=lim.MAX_MEMORY_MIB),
        )


def _gang_job(name: str, members: list[_Parsed], source: str) -> TraceJob:
    first = members[0]
    for m in members[1:]:
        for column, mine, theirs in (
            ("submit", m.submit, first.submit),
            ("duration", m.duration, first.duration),
            ("priority", m.priority, first.priority),
        ):
            if mine != theirs:
                shown = ("empty" if v is None else f"{v:g}" for v in (mine, theirs))
                raise _error(
                    source,
                    m.line,
                    column,
                    "{} differs from {} on line {}, the first member of gang '{}'".format(
                        *shown, first.line, name
                    ),
                    "give every member of a gang the same submit, duration and priority",
                )
    gang = Gang(name=name, size=len(members))
    pods = tuple(m.pod.model_copy(update={"gang": gang}) for m in members)
    assert first.submit is not None
    return TraceJob(
        name=name, submit=first.submit, duration=first.duration, pods=pods, source_line=first.line
    )


def csv_jobs(
    rows: Iterable[Row], source: str = "trace", *, lines: Iterable[int] | None = None
) -> list[TraceJob]:
    """The jobs of a generic trace, sorted by (submit, line of the first row).

    Rows are mappings from column name to value (strings as a CSV reader yields, or numbers);
    `lines` gives each row's file line for messages (default: 2, 3, ... as if no blank lines).
    """
    parsed = [
        _Parsed(row, source, line)
        for row, line in zip(rows, count(2) if lines is None else lines, strict=False)
    ]
    pod_lines: dict[str, int] = {}
    for p in parsed:
        if p.pod.name in pod_lines:
            raise _error(
                source, p.line, "name", f"'{p.pod.name}' repeats line {pod_lines[p.pod.name]}"
            )
        pod_lines[p.pod.name] = p.line

    gangs: dict[str, list[_Parsed]] = {}
    for p in parsed:
        if p.gang is not None:
            gangs.setdefault(p.gang, []).append(p)
    jobs: list[TraceJob] = []
    job_lines: dict[str, int] = {}
    for p in parsed:
        if p.gang is None:
            job = TraceJob(
                name=p.pod.name,
                submit=p.submit if p.submit is not None else 0.0,
                duration=p.duration,
                pods=(p.pod,),
                source_line=p.line,
            )
            column = "name"
        elif gangs[p.gang][0] is p:
            job, column = _gang_job(p.gang, gangs[p.gang], source), "gang"
        else:
            continue
        if job.name in job_lines:
            raise _error(
                source,
                p.line,
                column,
                f"job name '{job.name}' is also the job on line {job_lines[job.name]} "
                "(a gang job is named after its gang)",
                "give the gang a name no other pod or gang has",
            )
        job_lines[job.name] = p.line
        jobs.append(job)
    jobs.sort(key=lambda j: j.submit)  # stable: ties stay in order of first line
    return jobs


def read_csv_jobs(path: str | Path) -> list[TraceJob]:
    """Read a generic trace CSV (format in the module docstring and docs/trace-csv.md)."""
    path = Path(path)
    header, rows = _read_csv(path, REQUIRED, FIX)
    for column in header:
        if column not in COLUMNS:
            raise _error(
                str(path),
                1,
                column,
                f"unknown column (known: {', '.join(COLUMNS)})",
                "remove the column or fix its name; the format is in docs/trace-csv.md",
            )
    return csv_jobs([r for _, r in rows], str(path), lines=[line for line, _ in rows])
