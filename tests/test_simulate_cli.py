"""`wattpack simulate` and `make-cluster` end to end, through the real command: a slice of each
trace kind with a report, and bad traces as one line naming the row and column, exit code 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.test_cli import REPO, wattpack
from tests.traces import trace_dir

TRACE = REPO / "examples" / "trace-small.csv"
CLUSTER = REPO / "examples" / "cluster-small.yaml"


def _slice(src: Path, dst: Path, every: int) -> Path:
    with src.open(newline="") as f:
        rows = list(csv.reader(f))
    with dst.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *rows[1::every]])
    return dst


def test_simulate_the_example_with_every_scheduler_writes_a_report(tmp_path: Path) -> None:
    r = wattpack(
        "simulate", "--trace", str(TRACE), "--cluster", str(CLUSTER), "--scheduler", "all",
        "--report", str(tmp_path / "rep"), "--output", "json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    names = [run["scheduler"] for run in report["runs"]]
    assert names == ["wattpack", "spread", "binpack", "volcano-binpack", "best-fit", "fgd"]
    assert all(run["budgetViolations"] == 0 for run in report["runs"])
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "volcano-binpack" in html
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == report
    # It says where it wrote, on stderr (stdout holds the report itself).
    said = [line for line in r.stderr.splitlines() if line.startswith("report: ")]
    assert said == [
        f"report: {tmp_path / 'rep' / 'report.html'} and {tmp_path / 'rep' / 'report.json'}"
    ]


def test_the_fgd_protocol_on_the_shipped_example_runs_without_preemption(tmp_path: Path) -> None:
    # The example trace carries priorities: wattpack would preempt; the protocol has no evictions.
    assert len({row["priority"] for row in csv.DictReader(TRACE.open())}) > 1
    r = wattpack(
        "simulate", "--trace", str(TRACE), "--cluster", str(CLUSTER), "--protocol", "fgd",
        "--seeds", "2", "--scheduler", "wattpack,best-fit", "-o", "yaml",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "fgd_without_preemption" in r.stderr and "preemption off" in r.stderr
    report = yaml.safe_load(r.stdout)
    assert report["settings"]["preemption"].startswith("off")
    wattpack_curve, best_fit = report["curves"]
    assert wattpack_curve["scheduler"] == "wattpack" and wattpack_curve["seeds"] == [0, 1]
    assert all(0 < seed[-1] <= 1 for seed in wattpack_curve["milli"])
    assert best_fit["scheduler"] == "best-fit"


@pytest.mark.slow
def test_simulate_an_openb_slice_under_the_fgd_protocol(tmp_path: Path) -> None:
    d = trace_dir("alibaba-gpu-v2023-openb")
    pods = _slice(d / "openb_pod_list_gpuspec33.csv", tmp_path / "pods.csv", 16)
    r = wattpack(
        "simulate", "--trace", str(pods), "--cluster", str(d / "openb_node_list_gpu_node.csv"),
        "--node-step", "16", "--protocol", "fgd", "--seeds", "2", "--step", "0.1",
        "--scheduler", "wattpack,best-fit,fgd", "--output", "json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    curves = json.loads(r.stdout)["curves"]
    assert [c["scheduler"] for c in curves] == ["wattpack", "best-fit", "fgd"]
    for c in curves:
        assert c["seeds"] == [0, 1] and c["demand"][-1] == pytest.approx(1.3)
        assert all(0.5 < seed[-1] <= 1 for seed in c["milli"])


@pytest.mark.slow
def test_simulate_an_itp_slice_on_a_generated_cluster(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    made = wattpack("make-cluster", "--nodes", "6", "--facility-budget", "0.8", "--out", str(spec))
    assert made.returncode == 0, made.stderr
    trace = _slice(trace_dir("microsoft-itp-elasticflow") / "cluster01.csv", tmp_path / "t.csv", 4)
    r = wattpack(
        "simulate", "--trace", str(trace), "--cluster", str(spec), "--scheduler", "wattpack",
        "--scheduler", "best-fit", "--arrival-scale", "2", "--cycle-seconds", "30",
        "--output", "json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)["runs"]
    assert [x["scheduler"] for x in runs] == ["wattpack", "best-fit"]
    for run in runs:
        assert run["budgetViolations"] == 0 and run["started"] > 0
        # All training under 80% of nameplate: the budget, not the GPUs, caps allocation.
        assert run["boundWhileWaiting"] < 0.8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("submit,gpus\n0,1\n", "column 'kind'"),
        ("submit,duration,gpus,kind\n0,-5,1,training\n", "line 2, column 'duration'"),
        ("submit,gpus,kind\n0,x,training\n", "line 2, column 'gpus'"),
        ("submit,gpus,kind,gpu_models\n0,1,training,B200\n", "line 2, column 'gpu_models'"),
    ],
)
def test_bad_traces_are_one_line_naming_row_and_column_exit_2(
    tmp_path: Path, text: str, expected: str
) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(text)
    r = wattpack("simulate", "--trace", str(trace), "--cluster", str(CLUSTER))
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_openb_and_itp_rows_name_row_and_column(tmp_path: Path) -> None:
    itp = tmp_path / "itp.csv"
    itp.write_text("job_id,submission_time,duration,num_gpu\nabc,10,-3,1\n")
    r = wattpack("simulate", "--trace", str(itp), "--cluster", str(CLUSTER))
    assert r.returncode == 2 and "line 2, column 'duration'" in r.stderr, r.stderr
    openb = tmp_path / "openb.csv"
    openb.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
        "deletion_time,scheduled_time\np0,1000,1024,1,1000,,LS,Running,50,10,50\n"
    )
    r = wattpack("simulate", "--trace", str(openb), "--cluster", str(CLUSTER))
    assert r.returncode == 2 and "line 2, column 'deletion_time'" in r.stderr, r.stderr


def test_a_trace_without_times_cannot_be_replayed_in_time(tmp_path: Path) -> None:
    trace = tmp_path / "multigpu.csv"
    trace.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1024,2,1000\n")
    r = wattpack("simulate", "--trace", str(trace), "--cluster", str(CLUSTER))
    assert r.returncode == 2 and "fgd" in r.stderr.lower(), r.stderr
    r = wattpack(
        "simulate", "--trace", str(trace), "--cluster", str(CLUSTER), "--protocol", "fgd",
        "--seeds", "1", "--step", "0.5", "--target", "1.0",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_unknown_scheduler_and_a_cluster_with_pods_are_user_errors() -> None:
    r = wattpack("simulate", "--trace", str(TRACE), "--cluster", str(CLUSTER), "--scheduler", "x")
    assert r.returncode == 2 and "unknown scheduler 'x'" in r.stderr
    example = REPO / "examples" / "small-cluster.yaml"
    r = wattpack("simulate", "--trace", str(TRACE), "--cluster", str(example))
    assert r.returncode == 2 and "lists 17 pods" in r.stderr


def test_an_unrecognised_header_asks_for_the_format(tmp_path: Path) -> None:
    trace = tmp_path / "what.csv"
    trace.write_text("a,b,c\n1,2,3\n")
    r = wattpack("simulate", "--trace", str(trace), "--cluster", str(CLUSTER))
    assert r.returncode == 2 and "--trace-format" in r.stderr


def test_simulate_with_failures_in_each_migration_mode(tmp_path: Path) -> None:
    """The example trace with failures at a high rate: every mode runs, alarms are raised only
    where they are acted on, and bad degradation settings are one line, exit 2."""
    lost = {}
    for mode in ("none", "reactive", "proactive"):
        r = wattpack(
            "simulate", "--trace", str(TRACE), "--cluster", str(CLUSTER), "--output", "json",
            "--gpu-failures", "20000", "--checkpoint-seconds", "600", "--migration", mode,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        (run,) = report["runs"]
        assert report["settings"]["migration"] == mode and run["gpuFailures"] > 0
        assert run["budgetViolations"] == 0
        assert (run["gpuAlarms"] > 0) == (mode == "proactive")
        lost[mode] = run["gpuSecondsLost"]
    assert lost["none"] >= lost["reactive"]
    r = wattpack(
        "simulate", "--trace", str(TRACE), "--cluster", str(CLUSTER), "--gpu-failures", "1",
        "--warned-share", "2",
    )  # fmt: skip
    assert r.returncode == 2 and "warned-share" in r.stderr
