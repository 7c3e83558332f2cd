"""The `wattpack` command as a user meets it: files in, tables or JSON out, exit codes, one-line
errors. Most runs go through a real subprocess; a few through typer's CliRunner."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scheduler.cli.main import app
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "small-cluster.yaml"


def wattpack(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tiny_snapshot() -> dict[str, Any]:
    """Two 4-GPU nodes in two racks; one pod running, four pending (one gang of two)."""
    return {
        "apiVersion": "wattpack.io/v1alpha1",
        "kind": "ClusterSnapshot",
        "metadata": {"name": "tiny"},
        "gpuModels": [{"name": "A100", "tdpWatts": 400, "idleWatts": 50, "memoryMiB": 81920}],
        "powerDomains": [
            {"name": "facility", "parent": None, "budgetWatts": 10000},
            {"name": "rack-a", "parent": "facility", "budgetWatts": 5000},
            {"name": "rack-b", "parent": "facility", "budgetWatts": 5000},
        ],
        "nodes": [
            _node("n1", "rack-a"),
            _node("n2", "rack-b"),
        ],
        "pods": [
            _pod("running", gpus=2, node="n1", gpuIndices=[0, 1]),
            _pod("train", gpus=2),
            _pod("serve", kind="inference", gpuMilli=500),
            _pod("gang-0", gang={"name": "g", "size": 2}),
            _pod("gang-1", gang={"name": "g", "size": 2}),
        ],
    }


def _node(name: str, rack: str) -> dict[str, Any]:
    return {
        "name": name,
        "powerDomain": rack,
        "gpuModel": "A100",
        "gpus": 4,
        "cpuMilli": 64000,
        "memoryMiB": 524288,
    }


def _pod(name: str, **fields: Any) -> dict[str, Any]:
    pod = {"name": name, "namespace": "ml", "kind": "training", "cpuMilli": 1000}
    pod.update(fields)
    return pod


def write(path: Path, data: Any) -> Path:
    text = json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data)
    path.write_text(text)
    return path


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.yaml", tiny_snapshot())


# --- plan -----------------------------------------------------------------------------------


def test_plan_table_shows_placements_power_and_solver(snapshot_file: Path) -> None:
    r = wattpack("plan", str(snapshot_file))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for heading in ("Bindings", "Still pending", "Power per domain", "% of budget", "Summary"):
        assert heading in out
    assert "the indices are advisory" in out  # under the NVIDIA device plugin
    for pod in ("ml/train", "ml/serve", "ml/gang-0", "ml/gang-1"):
        assert pod in out
    for name in ("facility", "rack-a", "rack-b", "solver status", "gap", "solve seconds"):
        assert name in out
    assert "GPU allocation before" in out and "GPU allocation after" in out
    assert "Traceback" not in r.stderr


def test_a_rack_over_budget_is_a_degraded_note_and_the_rest_is_planned(tmp_path: Path) -> None:
    snap = tiny_snapshot()
    snap["powerDomains"][1]["budgetWatts"] = 500  # rack-a draws 900 W already (n1 running)
    path = write(tmp_path / "cut.yaml", snap)
    table = wattpack("plan", str(path))
    assert table.returncode == 0, table.stderr
    assert "degraded" in table.stdout and "rack-a" in table.stdout
    r = wattpack("plan", str(path), "--output", "json")
    plan = Plan.model_validate_json(r.stdout)
    assert plan.summary.degraded
    assert any("rack-a" in n for n in plan.summary.notes)
    assert plan.bindings and all(b.node == "n2" for b in plan.bindings)


def test_plan_json_is_a_plan_that_matches_the_published_schema(snapshot_file: Path) -> None:
    r = wattpack("plan", str(snapshot_file), "--output", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    plan = Plan.model_validate(data)
    # Every pending pod is either bound or explained; the running one is left alone.
    decided = {b.pod for b in plan.bindings} | {u.pod for u in plan.unplaced}
    assert decided == {"ml/train", "ml/serve", "ml/gang-0", "ml/gang-1"}
    assert set(plan.summary.power_watts) == {"facility", "rack-a", "rack-b"}
    schema = json.loads(wattpack("schema", "plan").stdout)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(data, schema)


def test_plan_is_a_dry_run_that_logs_to_stderr_only(snapshot_file: Path) -> None:
    before = {p: p.read_bytes() for p in snapshot_file.parent.iterdir()}
    args = ["--log-level=info", "--log-format=json", "plan", str(snapshot_file), "--output=json"]
    r = wattpack(*args)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # stdout holds the plan and nothing else
    events = [json.loads(line)["event"] for line in r.stderr.splitlines()]
    assert "plan_done" in events
    assert {p: p.read_bytes() for p in snapshot_file.parent.iterdir()} == before


def test_plan_reads_json_snapshots_and_policies(tmp_path: Path) -> None:
    snap = write(tmp_path / "tiny.json", tiny_snapshot())
    policy = write(
        tmp_path / "policy.yaml",
        {"preemption": False, "solver": {"timeLimitSeconds": 5, "seed": 3}},
    )
    r = wattpack("plan", str(snap), "--policy", str(policy), "--time-limit", "2")
    assert r.returncode == 0, r.stderr


def test_plan_reads_stdin(snapshot_file: Path) -> None:
    r = wattpack("plan", "-", "--output", "json", stdin=snapshot_file.read_text())
    assert r.returncode == 0, r.stderr
    Plan.model_validate_json(r.stdout)


def test_fail_on_unplaced_exits_1_only_when_asked(tmp_path: Path) -> None:
    data = tiny_snapshot()
    data["pods"].append(_pod("too-big", gpus=8))  # no node has 8 GPUs
    snap = write(tmp_path / "big.yaml", data)
    assert wattpack("plan", str(snap)).returncode == 0
    r = wattpack("plan", str(snap), "--fail-on-unplaced", "--output", "json")
    assert r.returncode == 1
    assert "ml/too-big" in {u["pod"] for u in json.loads(r.stdout)["unplaced"]}
    assert "Traceback" not in r.stderr


def test_plan_on_the_example_cluster() -> None:
    assert EXAMPLE.exists(), "examples/small-cluster.yaml is what the README runs first"
    r = wattpack("plan", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "Power per domain" in r.stdout
    j = wattpack("plan", str(EXAMPLE), "--output", "json")
    assert j.returncode == 0, j.stderr
    Plan.model_validate_json(j.stdout)


# --- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "model", "field"),
    [
        ("snapshot", ClusterSnapshot, "gpuModels"),
        ("policy", PackingPolicy, "kindWeights"),
        ("plan", Plan, "bindings"),
    ],
)
def test_schema_prints_the_json_schema_by_alias(what: str, model: type, field: str) -> None:
    r = CliRunner().invoke(app, ["schema", what])
    assert r.exit_code == 0, r.output
    schema = json.loads(r.stdout)
    assert schema == model.model_json_schema(by_alias=True)
    assert field in schema["properties"]


def test_unknown_schema_is_a_usage_error() -> None:
    assert wattpack("schema", "cluster").returncode == 2


# --- bad input: exit 2, one line "error: ..." on stderr, no traceback -------------------------


def _mutated(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(tiny_snapshot())
    change(data)
    return data


def _set(path: list[Any], value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


BAD_SNAPSHOTS: dict[str, tuple[Any, str]] = {
    "wrong type": (_set(["pods", 1, "gpuMilli"], "half"), "pods[1].gpuMilli"),
    "misspelt field": (_set(["pods", 1, "gpuMili"], 500), "pods[1].gpuMili"),
    "missing field": (lambda d: d.pop("nodes"), "nodes"),
    "idle above tdp": (_set(["gpuModels", 0, "idleWatts"], 500), "idleWatts"),
    "unknown GPU model": (_set(["nodes", 0, "gpuModel"], "H100"), "unknown GPU model 'H100'"),
    "unknown pod GPU model": (_set(["pods", 1, "gpuModels"], ["B200"]), "pods[ml/train]"),
    "unknown power domain": (_set(["nodes", 1, "powerDomain"], "rack-z"), "rack-z"),
    "cyclic domains": (_set(["powerDomains", 0, "parent"], "rack-a"), "cycle"),
    "pod on a missing node": (_set(["pods", 0, "node"], "n9"), "unknown node 'n9'"),
    "GPU index that does not exist": (
        _set(["pods", 0, "gpuIndices"], [0, 7]),
        "GPU 7 does not exist",
    ),
    "overcommitted GPU": (
        lambda d: d["pods"].append(_pod("dup", gpus=1, node="n1", gpuIndices=[1])),
        "GPU 1 on node n1",
    ),
    "gang size mismatch": (_set(["pods", 3, "gang"], {"name": "g", "size": 3}), "gang"),
    "gpuMilli 0": (_set(["pods", 2, "gpuMilli"], 0), "gpuMilli: 0 is outside 1..1000"),
    "gpuMilli 1200": (_set(["pods", 2, "gpuMilli"], 1200), "gpuMilli: 1200 is outside"),
    "gpuMilli 500 with gpus 2": (
        lambda d: d["pods"][1].update({"gpuMilli": 500}),
        "needs gpus 1 (got 2)",
    ),
}


def assert_one_error_line(r: Any, code: int = 2) -> str:
    """r: a CompletedProcess or a CliRunner result."""
    stderr = r.stderr
    assert getattr(r, "returncode", getattr(r, "exit_code", None)) == code, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("case", sorted(BAD_SNAPSHOTS))
def test_inconsistent_snapshot_is_one_line_naming_the_field(tmp_path: Path, case: str) -> None:
    change, expected = BAD_SNAPSHOTS[case]
    snap = write(tmp_path / "bad.yaml", _mutated(change))
    line = assert_one_error_line(wattpack("plan", str(snap)))
    assert expected in line
    assert str(snap) in line


def test_malformed_json(tmp_path: Path) -> None:
    snap = tmp_path / "bad.json"
    snap.write_text('{"gpuModels": [}')
    line = assert_one_error_line(wattpack("plan", str(snap)))
    assert "malformed JSON" in line and f"{snap}:1:" in line


def test_malformed_yaml(tmp_path: Path) -> None:
    snap = tmp_path / "bad.yaml"
    snap.write_text("gpuModels:\n  - {name: A100, tdpWatts: 400\nnodes: []\n")
    line = assert_one_error_line(wattpack("plan", str(snap)))
    assert "malformed YAML" in line and f"{snap}:3:" in line


def test_document_that_is_not_a_mapping() -> None:
    line = assert_one_error_line(wattpack("plan", "-", stdin="- just\n- a list\n"))
    assert "<stdin>: top level" in line


def test_missing_file() -> None:
    line = assert_one_error_line(wattpack("plan", "no/such/snapshot.yaml"))
    assert "no/such/snapshot.yaml: no such file" in line


def test_bad_policy_names_the_policy_field(snapshot_file: Path, tmp_path: Path) -> None:
    policy = write(tmp_path / "policy.yaml", {"solver": {"timeLimitSeconds": -1}})
    line = assert_one_error_line(wattpack("plan", str(snapshot_file), "--policy", str(policy)))
    assert "solver.timeLimitSeconds" in line and "wattpack schema policy" in line


def test_missing_policy_file(snapshot_file: Path) -> None:
    line = assert_one_error_line(wattpack("plan", str(snapshot_file), "--policy", "nope.yaml"))
    assert "nope.yaml: no such file" in line


def test_non_positive_time_limit(snapshot_file: Path) -> None:
    assert_one_error_line(wattpack("plan", str(snapshot_file), "--time-limit", "0"))


def test_cli_runner_sees_the_same_exit_code_and_line(tmp_path: Path) -> None:
    snap = write(tmp_path / "bad.json", _mutated(_set(["nodes", 0, "gpuModel"], "H100")))
    r = CliRunner().invoke(app, ["plan", str(snap)])
    line = assert_one_error_line(r)
    assert "nodes[n1].gpuModel" in line
    assert r.stdout == ""


# --- import-openb ---------------------------------------------------------------------------

NODES_CSV = "sn,cpu_milli,memory_mib,gpu,model\nn1,96000,393216,8,G2\nn2,64000,262144,2,T4\n"
PODS_CSV = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos\n"
    "share,4000,1000,1,500,,LS\n"
    "multi,8000,2000,2,1000,G2,BE\n"
    "whole-be,1000,100,1,1000,,BE\n"
)


@pytest.fixture
def openb(tmp_path: Path) -> tuple[Path, Path]:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    nodes.write_text(NODES_CSV)
    pods.write_text(PODS_CSV)
    return nodes, pods


def test_import_openb_writes_a_snapshot_that_plans(
    openb: tuple[Path, Path], tmp_path: Path
) -> None:
    nodes, pods = openb
    out = tmp_path / "openb.json"
    r = wattpack(
        "import-openb", "--nodes", str(nodes), "--pods", str(pods), "--out", str(out),
        "--budget-fraction", "0.8",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    snap = ClusterSnapshot.model_validate_json(out.read_text())
    kinds = {p.name: p.kind.value for p in snap.pods}
    assert kinds == {"share": "inference", "multi": "training", "whole-be": "fine-tuning"}
    assert all(d.budget_watts is not None for d in snap.power_domains)
    assert wattpack("plan", str(out)).returncode == 0


def test_import_openb_prints_yaml_without_output_file(openb: tuple[Path, Path]) -> None:
    nodes, pods = openb
    r = CliRunner().invoke(app, ["import-openb", "--nodes", str(nodes), "--pods", str(pods)])
    assert r.exit_code == 0, r.output
    snap = ClusterSnapshot.model_validate(yaml.safe_load(r.stdout))
    assert all(d.budget_watts is None for d in snap.power_domains)
    assert len(snap.nodes) == 2 and len(snap.pods) == 3


def test_import_openb_bad_row_is_one_line(openb: tuple[Path, Path], tmp_path: Path) -> None:
    nodes, _ = openb
    pods = tmp_path / "bad-pods.csv"
    pods.write_text(PODS_CSV + "broken,1,1,two,1000,,BE\n")
    line = assert_one_error_line(
        wattpack("import-openb", "--nodes", str(nodes), "--pods", str(pods))
    )
    assert "num_gpu" in line


def test_import_openb_missing_file(openb: tuple[Path, Path]) -> None:
    nodes, _ = openb
    assert_one_error_line(wattpack("import-openb", "--nodes", str(nodes), "--pods", "nope.csv"))


def test_import_openb_inventory_only_needs_no_pod_list(openb: tuple[Path, Path]) -> None:
    nodes, _ = openb
    r = CliRunner().invoke(app, ["import-openb", "--nodes", str(nodes), "--inventory-only"])
    assert r.exit_code == 0, r.output
    snap = ClusterSnapshot.model_validate(yaml.safe_load(r.stdout))
    assert len(snap.nodes) == 2 and snap.pods == []
    line = assert_one_error_line(wattpack("import-openb", "--nodes", str(nodes)))
    assert "--pods" in line


# --- check ----------------------------------------------------------------------------------


def test_check_accepts_the_plan_that_plan_printed(snapshot_file: Path, tmp_path: Path) -> None:
    plan_json = wattpack("plan", str(snapshot_file), "--output", "json")
    assert plan_json.returncode == 0, plan_json.stderr
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_json.stdout)
    r = wattpack("check", str(snapshot_file), "--plan", str(plan_file))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "plan is feasible" in r.stdout


def test_check_exits_1_and_lists_violations(snapshot_file: Path, tmp_path: Path) -> None:
    # ml/running already holds GPUs 0 and 1 of n1.
    bad = {
        "bindings": [{"pod": "ml/train", "node": "n1", "gpuIndices": [0, 1]}],
        "summary": _summary(),
    }
    plan_file = write(tmp_path / "bad-plan.json", bad)
    r = wattpack("check", str(snapshot_file), "--plan", str(plan_file))
    assert r.returncode == 1
    assert r.stdout.strip(), "violations go to stdout"
    assert r.stderr.startswith("problem: ") and len(r.stderr.splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_check_with_a_malformed_plan_is_bad_input(snapshot_file: Path, tmp_path: Path) -> None:
    plan_file = write(tmp_path / "plan.json", {"bindings": [{"pod": "ml/train"}]})
    line = assert_one_error_line(wattpack("check", str(snapshot_file), "--plan", str(plan_file)))
    assert "bindings[0].node" in line and "wattpack schema plan" in line


def _summary() -> dict[str, Any]:
    return {
        "status": "FEASIBLE",
        "solveSeconds": 0.0,
        "gpuAllocationBefore": 0.25,
        "gpuAllocation": 0.5,
        "objective": 0.0,
        "bound": 0.0,
        "gap": 0.0,
        "powerWatts": {},
    }


def test_plan_exports_the_solver_model_for_debugging(snapshot_file: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.txt"
    r = wattpack("plan", str(snapshot_file), "--export-model", str(model))
    assert r.returncode == 0, r.stderr
    text = model.read_text()
    assert "variables {" in text and "constraints {" in text and "objective {" in text


def test_unwritable_model_export_is_one_error_line(snapshot_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "model.txt"
    r = wattpack("plan", str(snapshot_file), "--export-model", str(target))
    assert "--export-model" in assert_one_error_line(r)


# --- output: -o/--output is the format everywhere; --out FILE is a file ----------------------

# Every command that prints a document, and the formats it offers.
DOCUMENT_COMMANDS = {
    "plan": {"table", "json", "yaml"},
    "simulate": {"table", "json", "yaml"},
    "tune": {"table", "json", "yaml"},
    "agent": {"table", "json", "yaml"},
    "schema": {"json", "yaml"},
    "export": {"json", "yaml"},
    "import-openb": {"json", "yaml"},
    "make-cluster": {"json", "yaml"},
}


def test_o_names_the_format_in_every_command() -> None:
    import typer

    from operators.cli import app as full_app  # the shell's commands too (agent, export)

    group = typer.main.get_command(full_app)
    seen = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            opts = set(param.opts) | set(param.secondary_opts)
            assert "--format" not in opts, name
            if "-o" in opts or "--output" in opts:
                assert opts == {"-o", "--output"}, (name, opts)
                seen[name] = set(param.metavar.split("|"))
    assert seen == DOCUMENT_COMMANDS


def test_plan_prints_the_same_plan_as_json_and_yaml(snapshot_file: Path) -> None:
    runs = {
        fmt: CliRunner().invoke(app, ["plan", str(snapshot_file), "-o", fmt])
        for fmt in ("json", "yaml")
    }
    assert all(r.exit_code == 0 for r in runs.values()), {f: r.output for f, r in runs.items()}
    as_json = Plan.model_validate_json(runs["json"].stdout)
    as_yaml = Plan.model_validate(yaml.safe_load(runs["yaml"].stdout))
    assert not runs["yaml"].stdout.lstrip().startswith("{")
    drop = {"summary": {"solve_seconds"}}
    assert as_yaml.model_dump(exclude=drop) == as_json.model_dump(exclude=drop)


def test_schema_prints_yaml_too() -> None:
    r = CliRunner().invoke(app, ["schema", "policy", "-o", "yaml"])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == PackingPolicy.model_json_schema(by_alias=True)


def test_out_writes_the_file_and_o_picks_its_format(tmp_path: Path) -> None:
    by_extension, forced = tmp_path / "c.json", tmp_path / "c.yaml"
    r = CliRunner().invoke(app, ["make-cluster", "--nodes", "2", "--out", str(by_extension)])
    assert r.exit_code == 0 and r.stdout == "", r.output
    json.loads(by_extension.read_text())
    r = CliRunner().invoke(
        app, ["make-cluster", "--nodes", "2", "--out", str(forced), "-o", "json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(forced.read_text()) == json.loads(by_extension.read_text())
    r = CliRunner().invoke(app, ["make-cluster", "--nodes", "2", "-o", "json"])
    assert json.loads(r.stdout) == json.loads(by_extension.read_text())


@pytest.mark.parametrize("command", [["make-cluster", "--nodes", "2"], ["plan", "x.yaml"]])
def test_the_old_o_file_spelling_says_what_to_use(command: list[str], tmp_path: Path) -> None:
    line = assert_one_error_line(wattpack(*command, "-o", str(tmp_path / "out.yaml")))
    assert "'-o'" in line and "--out FILE" in line
    assert not (tmp_path / "out.yaml").exists()


# --- a misspelt field is named as unknown, not as the right one missing ----------------------


def test_a_misspelt_required_field_is_reported_as_unknown_with_a_suggestion(tmp_path: Path) -> None:
    data = tiny_snapshot()
    data["gpuModels"][0]["tdpWats"] = data["gpuModels"][0].pop("tdpWatts")
    line = assert_one_error_line(wattpack("plan", str(write(tmp_path / "typo.yaml", data))))
    assert "unknown field gpuModels[0].tdpWats (did you mean tdpWatts?)" in line
    assert "missing" not in line.lower()


def test_a_misspelt_policy_field_is_reported_as_unknown_with_a_suggestion(
    snapshot_file: Path, tmp_path: Path
) -> None:
    policy = write(
        tmp_path / "policy.yaml", {"preemption": False, "solver": {"timeLimitSecnds": 3}}
    )
    line = assert_one_error_line(wattpack("plan", str(snapshot_file), "--policy", str(policy)))
    assert "unknown field solver.timeLimitSecnds (did you mean timeLimitSeconds?)" in line
    assert "wattpack schema policy" in line


# --- why a pod stays pending names the node with the most of what it lacks -------------------


def _gpu_hungry(rack_b_budget: int) -> dict[str, Any]:
    """n1's GPUs all taken, n2's 4 free; a pod asks for 8: no node has them."""
    data = tiny_snapshot()
    data["powerDomains"][2]["budgetWatts"] = rack_b_budget
    data["pods"] = [
        _pod("full", gpus=4, node="n1", gpuIndices=[0, 1, 2, 3]),
        _pod("big", gpus=8),
    ]
    return data


def _reason(data: dict[str, Any], tmp_path: Path) -> str:
    r = CliRunner().invoke(app, ["plan", str(write(tmp_path / "s.yaml", data)), "-o", "json"])
    assert r.exit_code == 0, r.output
    (unplaced,) = Plan.model_validate_json(r.stdout).unplaced
    return unplaced.reason


def test_the_best_node_named_is_the_one_with_the_most_free_gpus(tmp_path: Path) -> None:
    reason = _reason(_gpu_hungry(rack_b_budget=5000), tmp_path)
    assert "best node n2 has 4" in reason, reason


def test_a_roomier_node_that_is_out_is_named_with_why(tmp_path: Path) -> None:
    # n2 idles at 200 W; its rack's budget leaves no room for a pod's draw.
    reason = _reason(_gpu_hungry(rack_b_budget=250), tmp_path)
    assert "best node n1 has 0" in reason, reason
    assert "n2 has 4 free but its power domain rack-b is" in reason and "W short" in reason


# --- plan shows what it is doing while it solves, on a terminal only ------------------------


def _needs_the_solver(tmp_path: Path) -> Path:
    """A pod no node holds: greedy cannot place every pod, so the cycle builds the model."""
    data = tiny_snapshot()
    data["pods"].append(_pod("too-big", gpus=8))
    return write(tmp_path / "hard.yaml", data)


def test_the_planner_reports_its_phases_and_the_solvers_progress(tmp_path: Path) -> None:
    from scheduler import progress
    from scheduler.cli.files import load_snapshot
    from scheduler.planner import plan

    heard: list[tuple[str, str]] = []
    snapshot = load_snapshot(str(_needs_the_solver(tmp_path)))
    with progress.listening(lambda phase, detail: heard.append((phase, detail))):
        plan(snapshot, PackingPolicy())
    phases = [phase for phase, _ in heard]
    for phase in ("reading the snapshot", "greedy plan", "building the model", "CP-SAT"):
        assert phase in phases, phases
    assert phases[-1] == "writing the plan"
    solutions = [d for p, d in heard if p == "CP-SAT" and d.startswith("solution")]
    assert solutions and "gap" in solutions[-1], heard
    assert any(d.startswith("best so far") for _, d in heard), heard
    # Nobody listening: nothing is kept.
    assert progress.current() is None


def _plan_on_a_terminal(snapshot: Path, *extra: str) -> tuple[str, str]:
    """plan -o json with stderr on a pseudo-terminal: (stdout, what the terminal showed)."""
    import os
    import pty
    import threading

    leader, follower = pty.openpty()
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the follower closed: the command ended
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    args = [sys.executable, "-m", "scheduler.cli.main", "plan", str(snapshot), "-o", "json"]
    done = subprocess.run(
        [*args, *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=follower, timeout=300
    )
    os.close(follower)
    reader.join(timeout=60)
    os.close(leader)
    assert done.returncode == 0, shown.decode(errors="replace")
    return done.stdout.decode(), shown.decode(errors="replace")


def test_plan_shows_a_spinner_on_a_terminal_and_never_in_stdout(tmp_path: Path) -> None:
    snapshot = _needs_the_solver(tmp_path)
    out, terminal = _plan_on_a_terminal(snapshot)
    Plan.model_validate_json(out)  # stdout holds the plan alone
    assert "planning: " in terminal, terminal
    quiet_out, quiet = _plan_on_a_terminal(snapshot, "--no-progress")
    Plan.model_validate_json(quiet_out)
    assert "planning" not in quiet
    # Piped, as in every other test here, stderr holds no spinner either.
    piped = wattpack("plan", str(snapshot), "-o", "json")
    assert piped.returncode == 0 and "planning" not in piped.stderr


def test_the_agent_prints_its_round_as_yaml_too() -> None:
    scenario = REPO / "examples" / "nvml-scenario.yaml"
    args = ["--backend", "fake", "--scenario", str(scenario), "--once", "--node", "n"]
    rounds = {
        fmt: subprocess.run(
            [sys.executable, "-m", "operators.cli", "agent", *args, "-o", fmt],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for fmt in ("json", "yaml")
    }
    assert all(r.returncode == 0 for r in rounds.values()), rounds
    assert rounds["yaml"].stdout.startswith("---\n")  # one document per round
    assert yaml.safe_load(rounds["yaml"].stdout) == json.loads(rounds["json"].stdout)
