"""The trace importers (openb jobs, Microsoft ITP, generic CSV) against the real traces, read in
place, and against small bad files."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
from traces import trace_dir

from scheduler.errors import UserError
from scheduler.model import PodKind
from scheduler.traces import (
    TraceJob,
    csv_jobs,
    openb_has_times,
    openb_jobs,
    read_csv_jobs,
    read_itp_jobs,
    read_openb_jobs,
    read_openb_trace,
    read_trace,
    require_times,
    trace_has_times,
)

OPENB = trace_dir("alibaba-gpu-v2023-openb")
ITP = trace_dir("microsoft-itp-elasticflow")
REPO = Path(__file__).resolve().parents[1]

# Pod rows per file, from the openb README's tables.
OPENB_ROWS = {
    "default": 8152,
    **{f"gpuspec{n}": 8152 for n in ("05", "10", "20", "25", "33")},
    **{f"gpushare{n}": 8152 for n in (20, 40, 60, 80, 100)},
    "multigpu20": 8324,
    "multigpu30": 8508,
    "multigpu40": 8746,
    "multigpu50": 9061,
    "cpu0": 7064,
    "cpu037": 7336,
    "cpu050": 7439,
    "cpu072": 7608,
    "cpu100": 7853,
    "cpu200": 8832,
    "cpu235": 9240,
    "cpu250": 9420,
    "cpu300": 10094,
}


def _sorted(jobs: list[TraceJob]) -> bool:
    keys = [(j.submit, j.source_line) for j in jobs]
    return keys == sorted(keys)


# --- openb ------------------------------------------------------------------------------------


def test_every_openb_variant_is_listed():
    on_disk = {p.stem.removeprefix("openb_pod_list_") for p in OPENB.glob("openb_pod_list_*.csv")}
    assert on_disk == set(OPENB_ROWS)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(OPENB_ROWS))
def test_every_openb_variant_loads_sorted_with_the_published_count(variant):
    jobs, has_times = read_openb_trace(OPENB / f"openb_pod_list_{variant}.csv")
    assert len(jobs) == OPENB_ROWS[variant]
    assert all(len(j.pods) == 1 and j.pods[0].name == j.name for j in jobs)
    assert len({j.name for j in jobs}) == len(jobs)
    assert _sorted(jobs)
    # Every variant has the same 7064 GPU pods except gpushare*, which resample them; cpu*
    # variants change only the CPU-only pods.
    cpu_only = OPENB_ROWS[variant] - 7064 if variant.startswith("cpu") else 1088
    assert sum(1 for j in jobs if j.pods[0].gpus == 0) == cpu_only
    if variant.startswith("multigpu"):
        assert not has_times
        assert all(j.submit == 0 and j.duration is None for j in jobs)
        assert [j.source_line for j in jobs] == list(range(2, len(jobs) + 2))
    else:
        assert has_times
        assert all(j.duration is not None and j.duration >= 0 for j in jobs)


def test_openb_default_times_follow_creation_and_scheduling():
    jobs = read_openb_jobs(OPENB / "openb_pod_list_default.csv")
    assert len(jobs) == 8152
    assert _sorted(jobs)
    assert sum(j.milli for j in jobs) == 6_086_800
    assert jobs[0].submit == 0 and jobs[-1].submit <= 12_902_960
    # openb-pod-0000: created and scheduled at 0, deleted at 12,537,496.
    first = next(j for j in jobs if j.name == "openb-pod-0000")
    assert (first.submit, first.duration, first.source_line) == (0, 12_537_496, 2)
    assert Counter(j.pods[0].kind for j in jobs)[PodKind.TRAINING] == 75


def test_unsorted_variant_is_sorted_by_submit_then_line():
    jobs = read_openb_jobs(OPENB / "openb_pod_list_gpushare20.csv")
    assert _sorted(jobs)
    assert [j.source_line for j in jobs] != list(range(2, len(jobs) + 2))


def test_multigpu_variant_has_no_times_and_is_refused_for_a_time_replay():
    path = OPENB / "openb_pod_list_multigpu50.csv"
    assert not openb_has_times(path)
    assert not trace_has_times("openb", path)
    assert openb_has_times(OPENB / "openb_pod_list_default.csv")
    with pytest.raises(UserError, match=r"no creation or deletion times.*FGD protocol"):
        require_times("openb", path)
    require_times("openb", OPENB / "openb_pod_list_default.csv")
    assert trace_has_times("itp", ITP / "cluster10.csv")


def test_openb_rows_as_mappings_need_no_file():
    rows = [
        {"name": "b", "cpu_milli": 1, "memory_mib": 1, "num_gpu": 1, "gpu_milli": 1000,
         "creation_time": 50, "deletion_time": 90, "scheduled_time": 60},
        {"name": "a", "cpu_milli": 1, "memory_mib": 1, "num_gpu": 0, "gpu_milli": 0,
         "creation_time": 10, "deletion_time": 40, "scheduled_time": ""},
    ]  # fmt: skip
    jobs = openb_jobs(rows)
    assert [(j.name, j.submit, j.duration, j.source_line) for j in jobs] == [
        ("a", 10, 30, 3),  # never scheduled: deletion - creation
        ("b", 50, 30, 2),  # deletion - scheduled
    ]
    untimed = openb_jobs([{k: rows[0][k] for k in list(rows[0])[:5]}])
    assert (untimed[0].submit, untimed[0].duration) == (0, None)


OPENB_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)
OPENB_GOOD = "p-0,4000,8192,1,500,,LS,Running,0,10,0\n"


@pytest.mark.parametrize(
    ("row", "column", "problem"),
    [
        ("p-1,4000,8192,1,1000,,LS,Running,100,50,", "deletion_time", "negative duration"),
        ("p-1,4000,8192,1,1000,,LS,Running,10,50,60", "deletion_time", "negative duration"),
        ("p-1,4000,8192,1,1000,,LS,Running,10.5,50,20", "creation_time", "not an integer"),
        ("p-1,4000,8192,1,1000,,LS,Running,-3,50,20", "creation_time", "negative"),
        ("p-1,4000,8192,1,1000,,LS,Running,10,,20", "deletion_time", "not an integer"),
        ("p-1,4000,8192,1,1000,,LS,Running,30,50,20", "scheduled_time", "before creation"),
        ("p-1,4000,x,1,1000,,LS,Running,3,50,20", "memory_mib", "not an integer"),
        ("p-0,4000,8192,1,1000,,LS,Running,3,50,20", "name", "repeats line 2"),
    ],
)
def test_bad_openb_row_names_file_line_and_column(tmp_path, row, column, problem):
    path = tmp_path / "pods.csv"
    path.write_text(OPENB_HEADER + OPENB_GOOD + row + "\n")
    with pytest.raises(UserError) as err:
        read_openb_jobs(path)
    assert f"pods.csv line 3, column '{column}'" in str(err.value)
    assert problem in str(err.value)
    assert err.value.todo


def test_openb_header_with_some_times_only_is_an_error(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time\np,1,1,0,0,5\n")
    with pytest.raises(UserError, match=r"pods\.csv line 1, column 'deletion_time'"):
        read_openb_jobs(path)
    with pytest.raises(UserError, match=r"line 1, column 'deletion_time'"):
        openb_has_times(path)


def test_openb_missing_column_names_line_1(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text("name,cpu_milli,num_gpu,gpu_milli\np,1,1,1000\n")
    with pytest.raises(UserError, match=r"pods\.csv line 1, column 'memory_mib'"):
        read_openb_jobs(path)


# --- Microsoft ITP ----------------------------------------------------------------------------


def test_itp_cluster01_loads_with_gangs_of_full_nodes():
    # The README says 1595 jobs; `wc -l` also prints 1595 because the file has no final
    # newline: 1595 data rows after the header.
    jobs = read_itp_jobs(ITP / "cluster01.csv")
    assert len(jobs) == 1595
    assert _sorted(jobs)
    sizes = Counter(sum(p.gpus for p in j.pods) for j in jobs)
    assert sizes == {1: 1530, 2: 11, 4: 6, 8: 5, 16: 6, 32: 11, 64: 26}
    for job in jobs:
        gpus = sum(p.gpus for p in job.pods)
        assert len(job.pods) == math.ceil(gpus / 8)
        assert all(p.kind == PodKind.TRAINING and p.priority == 0 for p in job.pods)
        assert all(
            p.cpu_milli == 8000 * p.gpus and p.memory_mi_b == 65536 * p.gpus for p in job.pods
        )
        if gpus > 8:
            assert all(p.gpus == 8 and p.gang is not None for p in job.pods)
            assert {(p.gang.name, p.gang.size) for p in job.pods} == {(job.name, len(job.pods))}
        else:
            assert job.pods[0].gang is None and job.pods[0].name == job.name
    names = [p.name for j in jobs for p in j.pods]
    assert len(set(names)) == len(names) == 1530 + 11 + 6 + 5 + 6 * 2 + 11 * 4 + 26 * 8
    assert all(re.fullmatch(r"itp-[0-9a-f]{8}-\d+(-\d+)?", n) for n in names)
    first = next(j for j in jobs if j.source_line == 2)  # 965d744f-..., 1932025, 2429, 64
    assert (first.name, first.submit, first.duration, len(first.pods)) == (
        "itp-965d744f-2",
        1_932_025,
        2429,
        8,
    )


def test_itp_gang_last_member_takes_the_rest_and_options_apply(tmp_path):
    path = tmp_path / "cluster.csv"
    path.write_text("job_id,submission_time,duration,num_gpu\nABCDEF12-x,5,100,12\nq,6,0,3\n")
    jobs = read_itp_jobs(path, gpus_per_node=8, cpu_per_gpu_milli=10000, memory_per_gpu_mib=1)
    big, small = jobs
    assert [p.gpus for p in big.pods] == [8, 4]
    assert [p.name for p in big.pods] == ["itp-abcdef12-2-0", "itp-abcdef12-2-1"]
    assert big.pods[1].cpu_milli == 40000 and big.pods[1].memory_mi_b == 4
    assert (small.name, small.duration, small.pods[0].gpus) == ("itp-q-3", 0, 3)
    assert read_trace("itp", path, gpus_per_node=4)[0].milli == 12000
    assert [p.gpus for p in read_trace("itp", path, gpus_per_node=4)[0].pods] == [4, 4, 4]


ITP_HEADER = "job_id,submission_time,duration,num_gpu\n"


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("job_id,submission_time,num_gpu\na,1,1\n", 1, "duration"),
        (ITP_HEADER + "a,1,2,1\nb,1,-5,1", 3, "duration"),
        (ITP_HEADER + "a,-1,2,1\n", 2, "submission_time"),
        (ITP_HEADER + "a,soon,2,1\n", 2, "submission_time"),
        (ITP_HEADER + "a,1,2,0\n", 2, "num_gpu"),
        (ITP_HEADER + "a,1,2,1.5\n", 2, "num_gpu"),
        (ITP_HEADER + "a,1,2\n", 2, "num_gpu"),
    ],
)
def test_bad_itp_input_names_file_line_and_column(tmp_path, text, line, column):
    path = tmp_path / "cluster.csv"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_itp_jobs(path)
    assert f"cluster.csv line {line}, column '{column}'" in str(err.value)


# --- generic CSV ------------------------------------------------------------------------------


def test_example_trace_loads():
    jobs = read_trace("csv", REPO / "examples" / "trace-small.csv")
    assert _sorted(jobs)
    assert len(jobs) == 29 and sum(len(j.pods) for j in jobs) == 30
    kinds = Counter(p.kind for j in jobs for p in j.pods)
    assert set(kinds) == set(PodKind)
    assert any(p.fractional for j in jobs for p in j.pods)
    assert len({p.priority for j in jobs for p in j.pods}) >= 3
    assert any(j.duration is None for j in jobs)
    (gang,) = [j for j in jobs if len(j.pods) > 1]
    assert gang.name == "pretrain" and len(gang.pods) == 2
    assert all(p.gang is not None and p.gang.size == 2 for p in gang.pods)


def test_worked_example_in_the_docs_loads_as_documented(tmp_path):
    doc = (REPO / "docs" / "trace-csv.md").read_text()
    example = doc.split("## Worked example")[1].split("```csv\n")[1].split("```")[0]
    path = tmp_path / "trace.csv"
    path.write_text(example)
    jobs = read_csv_jobs(path)
    assert [(j.name, j.source_line, len(j.pods)) for j in jobs] == [
        ("chat-0", 2, 1),
        ("embed-0", 3, 1),
        ("pretrain", 4, 2),
        ("job-6", 6, 1),
        ("lora-0", 7, 1),
        ("etl-0", 8, 1),
    ]
    assert jobs[0].duration is None and jobs[1].pods[0].gpu_milli == 500
    assert jobs[2].pods[0].gpu_models == ["H100-SXM"]
    assert jobs[4].pods[0].gpu_models == ["A100-SXM", "H100-SXM"]
    assert jobs[5].pods[0].gpus == 0 and jobs[5].milli == 0


def test_generic_defaults_sorting_and_blank_lines(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(
        " kind , gpus , submit , gang \ntraining,8,20,g\n\ninference,1,5,\ntraining,8,20,g\n"
    )
    early, late = read_csv_jobs(path)
    assert (early.name, early.submit, early.duration, early.source_line) == ("job-4", 5, None, 4)
    pod = early.pods[0]
    assert (pod.priority, pod.gpu_milli, pod.cpu_milli, pod.memory_mi_b, pod.gpu_models) == (
        0,
        1000,
        0,
        0,
        [],
    )
    assert late.name == "g" and [p.name for p in late.pods] == ["job-2", "job-5"]


def test_generic_rows_as_mappings_need_no_file():
    jobs = csv_jobs([{"submit": 3, "gpus": 1, "gpu_milli": 250, "kind": "inference"}])
    assert jobs[0].milli == 250 and jobs[0].name == "job-2"


CSV_HEADER = "name,submit,duration,gpus,gpu_milli,kind,priority,gang\n"
CSV_GOOD = "a,0,10,8,,training,0,g\n"


def _rows(row: str) -> str:
    """A file with the header, one good gang member on line 2 and `row` on line 3."""
    return CSV_HEADER + CSV_GOOD + row + "\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ("name,duration,gpus,kind\na,1,1,training\n", 1, "submit", "missing from the header"),
        (_rows("b,5,-10,1,,inference,0,"), 3, "duration", "not positive"),
        (_rows("b,5,0,1,,inference,0,"), 3, "duration", "not positive"),
        (_rows("b,5,10,1.5,,inference,0,"), 3, "gpus", "not an integer"),
        (_rows("b,5,10,1,,inference,high,"), 3, "priority", "not an integer"),
        (_rows("b,soon,10,1,,inference,0,"), 3, "submit", "not a number"),
        (_rows("b,-1,10,1,,inference,0,"), 3, "submit", "negative"),
        (_rows("b,5,10,1,,serving,0,"), 3, "kind", "unknown kind 'serving'"),
        (_rows("b,5,10,1,,,0,"), 3, "kind", "required"),
        (_rows("b,5,10,2,500,training,0,"), 3, "gpu_milli", "needs gpus 1"),
        (_rows("b,5,10,1,1001,inference,0,"), 3, "gpu_milli", "above 1000"),
        (_rows("b,5,10,1,0,inference,0,"), 3, "gpu_milli", "below 1"),
        (_rows("b,0,20,8,,training,0,g"), 3, "duration", "first member of gang 'g'"),
        (_rows("b,5,10,8,,training,0,g"), 3, "submit", "line 2"),
        (_rows("b,0,10,8,,training,9,g"), 3, "priority", "gang 'g'"),
        (_rows("a,5,10,1,,inference,0,"), 3, "name", "repeats line 2"),
        (_rows("g,5,10,1,,inference,0,"), 3, "name", "job on line 2"),
        (_rows("b c,5,10,1,,inference,0,"), 3, "name", "not a valid name"),
        (_rows("b,5,10,1,,inference,0,,x"), 3, "#9", "extra value 'x'"),
        (_rows("b,5,10,1,,inference"), 3, "priority", "missing value"),
        ("name,submit,gpus,kind,priorty\na,0,1,training,5\n", 1, "priorty", "unknown column"),
        ("name,submit,gpus,kind,name\na,0,1,training,b\n", 1, "name", "appears twice"),
    ],
)
def test_bad_generic_input_names_file_line_and_column(tmp_path, text, line, column, problem):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_csv_jobs(path)
    assert f"trace.csv line {line}, column '{column}'" in str(err.value)
    assert problem in str(err.value)
    assert err.value.todo


def test_unknown_column_in_mapping_rows_is_an_error():
    with pytest.raises(UserError, match=r"line 2, column 'prio'.*unknown column"):
        csv_jobs([{"submit": 0, "gpus": 1, "kind": "training", "prio": 3}], "rows")


# --- dispatch ---------------------------------------------------------------------------------


def test_read_trace_dispatches_and_rejects_unknown_kinds(tmp_path):
    assert len(read_trace("openb", OPENB / "openb_pod_list_default.csv")) == 8152
    assert len(read_trace("itp", ITP / "cluster10.csv")) == 260
    with pytest.raises(UserError, match=r"unknown trace kind 'philly'.*openb, itp, csv"):
        read_trace("philly", tmp_path / "x.csv")


def test_missing_file_is_a_user_error(tmp_path):
    for kind in ("openb", "itp", "csv"):
        with pytest.raises(UserError, match="cannot read"):
            read_trace(kind, tmp_path / "none.csv")
