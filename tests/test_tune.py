"""`wattpack tune` end to end on a tiny study (SQLite storage), its errors, and the rules that
keep a trial honest: a policy that assumes less power than the GPUs draw breaks budgets and is
never chosen. Two workers on a real PostgreSQL server: tests/test_tune_postgres.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from test_cli import REPO, wattpack

from scheduler.cli.simulate import load_cluster
from scheduler.model import PackingPolicy
from scheduler.simulate.replay import ReplaySettings
from scheduler.traces import read_trace
from scheduler.tune.outcome import Entry, Scored, choose
from scheduler.tune.search import Problem, Scores
from scheduler.tune.space import TuningSpace

TRACE, CLUSTER = "examples/trace-small.csv", "examples/cluster-small.yaml"
SPACE = "examples/tune-space.yaml"
ITP_SPACE = "benchmarks/tune-space-itp.yaml"


def _tune_args(out: Path, *extra: str) -> list[str]:
    return [
        "tune", "--trace", TRACE, "--cluster", CLUSTER, "--space", SPACE, "--out", str(out),
        "--no-progress", "--output", "json", *extra,
    ]  # fmt: skip


def _tune(out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return wattpack(*_tune_args(out, *extra))


def test_a_tiny_study_writes_a_policy_that_plan_accepts_and_resumes(tmp_path: Path) -> None:
    r = _tune(tmp_path, "--trials", "4")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["trials"] == 4 and report["storage"].startswith("sqlite:///")
    assert report["default"]["holdout"] is not None  # the later arrivals were held out
    for e in report["front"]:
        assert e["tuning"]["budgetViolations"] == 0 and e["params"]
    chosen = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    PackingPolicy.model_validate(chosen)
    assert "<html" in (tmp_path / "report.html").read_text()
    planned = wattpack(
        "plan", "examples/small-cluster.yaml", "--policy", str(tmp_path / "policy.yaml")
    )
    assert planned.returncode == 0, planned.stderr
    # The same study, asked for more trials, resumes: the four it has count.
    r = _tune(tmp_path, "--trials", "6")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["trials"] == 6
    with sqlite3.connect(tmp_path / "study.db") as db:
        (n,) = db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()
    assert n == 6
    # The first trial was the base policy: the default row carries its scores.
    space = TuningSpace.model_validate(yaml.safe_load((REPO / SPACE).read_text()))
    study = optuna.load_study(study_name="wattpack", storage=f"sqlite:///{tmp_path / 'study.db'}")
    first = min(study.trials, key=lambda t: t.number)
    assert first.params == space.base_values()
    default = json.loads(r.stdout)["default"]["tuning"]
    assert default["allocationWhileWaiting"] == round(first.values[0], 6)


def test_a_bad_space_or_an_unreachable_storage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  - path: kindWeights.nope\n    int: {low: 1, high: 5}\n")
    r = wattpack("tune", "--trace", TRACE, "--cluster", CLUSTER, "--space", str(space),
                 "--out", str(tmp_path / "o"), "--no-progress")  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nope is not a field" in r.stderr, r.stderr
    space.write_text("params:\n  - path: moves.perCycle\n    int: {low: -3, high: 5}\n")
    r = wattpack("tune", "--trace", TRACE, "--cluster", CLUSTER, "--space", str(space),
                 "--out", str(tmp_path / "o"), "--no-progress")  # fmt: skip
    assert r.returncode == 2 and "moves.perCycle = -3" in r.stderr, r.stderr
    r = _tune(tmp_path / "o2", "--trials", "2", "--storage", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "cannot open the study" in r.stderr, r.stderr


def test_a_policy_that_assumes_less_power_than_gpus_draw_breaks_budgets() -> None:
    inventory = load_cluster(CLUSTER, 4)
    jobs = tuple(read_trace("csv", TRACE))
    base = PackingPolicy()
    believer = PackingPolicy.model_validate(
        {"powerFactors": {"training": 0.3, "fine-tuning": 0.3, "inference": 0.05}}
    )
    truth = ReplaySettings(physics=base.power_factors)
    assert Problem(inventory, jobs, truth).score(base).budget_violations == 0
    cheat = Problem(inventory, jobs, truth).score(believer)
    assert cheat.budget_violations > 0
    # Judged by its own belief it would look like a winner: that is why the truth is kept.
    assert Problem(inventory, jobs, ReplaySettings()).score(believer).budget_violations == 0


def _entry(label: str, hold: tuple[float, float, float]) -> Entry:
    s = Scored.of(Scores(*hold, 0))
    return Entry(label=label, params={"x": 1} if label != "default" else {}, tuning=s, holdout=s)


def test_the_chosen_policy_beats_the_default_on_the_holdout_and_loses_on_nothing() -> None:
    default = _entry("default", (0.80, 100.0, 2.0))
    overfit = _entry("trial 1", (0.85, 300.0, 2.0))  # better allocation, worse waits
    honest = _entry("trial 2", (0.82, 100.0, 1.0))
    tie = _entry("trial 3", (0.80, 100.0, 2.0))
    assert choose(default, [overfit, honest, tie])[0] == "trial 2"
    label, why = choose(default, [overfit, tie])
    assert label == "default" and "without losing" in why


def test_the_space_format_has_a_schema_and_the_example_follows_it() -> None:
    r = wattpack("schema", "space")
    assert r.returncode == 0
    assert "params" in json.loads(r.stdout)["properties"]
    space = TuningSpace.model_validate(yaml.safe_load((REPO / SPACE).read_text()))
    space.check()
    assert {"kindWeights.inference", "moves.perCycle", "solver.timeLimitSeconds"} <= {
        p.path for p in space.params
    }


def test_worker_processes_on_one_machine_share_the_study(tmp_path: Path) -> None:
    r = _tune(tmp_path, "--trials", "12", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    # Each worker stops once the study holds twelve; one in flight each may finish past it.
    assert 12 <= json.loads(r.stdout)["trials"] <= 14
    with sqlite3.connect(tmp_path / "study.db") as db:
        workers = db.execute(
            "select count(distinct value_json) from trial_user_attributes where key = 'worker'"
        ).fetchone()[0]
    assert workers == 2


def test_replay_assumptions_reach_every_trial(tmp_path: Path) -> None:
    """--resume-evicted and --time-limit, as in simulate: the example's preemptions cost their
    work unless evicted pods checkpoint as they leave; the default row and the trials are
    replayed so, with the solver budget given (written into the chosen policy)."""
    lost = {}
    for flag in ("--no-resume-evicted", "--resume-evicted"):
        out = tmp_path / flag
        r = _tune(out, "--trials", "2", flag, "--time-limit", "0.5", "--space", ITP_SPACE)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        rows = [report["default"]] + report["front"]
        lost[flag] = [e[part]["lostGpuHours"] for e in rows for part in ("tuning", "holdout")]
        chosen = yaml.safe_load((out / "policy.yaml").read_text())
        assert chosen["solver"]["timeLimitSeconds"] == 0.5
    assert max(lost["--no-resume-evicted"]) > 0
    assert lost["--resume-evicted"] == [0.0] * len(lost["--resume-evicted"])
    # A space that searches the solver's budget and the flag that fixes it: one of them.
    r = _tune(tmp_path / "both", "--trials", "1", "--time-limit", "1")
    assert r.returncode == 2 and "--time-limit" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    pids = (int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())
    return [c for c in pids if (st := _stat(c)) and st[1] == pid and st[0] != "Z"]


def _running(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def test_sigterm_stops_the_workers_too(tmp_path: Path) -> None:
    """A terminated `tune --jobs 2` (a Job's pod deleted, a `timeout`) ends with code 130 and
    leaves no worker replaying on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.main", *_tune_args(tmp_path, "--trials", "500",
         "--jobs", "2")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            # The spawn context also starts a resource tracker: the workers are the others.
            workers = [c for c in _children(proc.pid) if "resource_tracker" not in _cmdline(c)]
            time.sleep(0.2)
        assert len(workers) == 2, proc.stderr.read() if proc.poll() is not None else workers
        db = tmp_path / "study.db"
        while time.monotonic() < deadline and not _finished_trials(db):
            time.sleep(0.5)  # let the workers get into their replays
        proc.terminate()
        # Workers left running would hold the output pipes open: this would time out.
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        time.sleep(1.0)
        assert not [w for w in workers if _running(w)], "workers still running after SIGTERM"
    finally:
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _finished_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return int(
                conn.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
            )
    except sqlite3.Error:
        return 0
