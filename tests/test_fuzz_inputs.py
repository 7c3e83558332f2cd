"""A fuzz harness over the formats (snapshot, policy, plan, space, trace CSV, the fake NVML
scenario) and the CLI's
number flags: whatever the input, the real CLI ends with exit code 0, 1 or 2, prints exactly one
line on stderr at exit 2, never a traceback, and every plan it prints passes the independent
checker (scheduler.verify).

CI runs a few examples per test, derandomized (tests/conftest.py pins the profile); a nightly
run raises the count and draws at random:

    WATTPACK_FUZZ_EXAMPLES=2000 HYPOTHESIS_PROFILE=wide pytest tests/test_fuzz_inputs.py
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml
from builders import H100, L40, domain, node, pod
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from soundness import assert_carried_out_safely
from typer.testing import CliRunner

from operators.cli import app
from scheduler.cli import files
from scheduler.errors import UserError
from scheduler.model import PackingPolicy, Plan
from scheduler.tune.space import TuningSpace

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "examples" / "cluster-small.yaml"
SPACE = REPO / "examples" / "tune-space.yaml"
SCENARIO = REPO / "examples" / "nvml-scenario.yaml"

fuzz = settings(
    max_examples=int(os.environ.get("WATTPACK_FUZZ_EXAMPLES", "15")),
    deadline=None,  # a shared, noisy machine: no timed assertions
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def run(*args: str) -> Any:
    """The real CLI in-process, logs at error level (so stderr holds only the outcome)."""
    return CliRunner().invoke(app, ["--log-level", "error", *args])


def assert_clean(r: Any) -> None:
    """Exit 0, 1 or 2; one line at 2; never a traceback (CliRunner keeps a crash in exception,
    with exit code 1, so that is checked too)."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 1, 2), (r.exit_code, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    if r.exit_code == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr


# Numbers a hostile user tries, beside hypothesis' own.
INTEGERS = [0, -1, 1, 255, 256, 257, 1000, 1001, 2**31 - 1, 2**31, 2**53, 2**63, 10**20]
FLOATS = [0.5, -0.5, 1e20, 1e300, -1e300, float("nan"), float("inf"), float("-inf")]
HOSTILE = st.sampled_from([*INTEGERS, -(10**30), *FLOATS])
SCALARS = st.one_of(
    HOSTILE,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["training", "inference", "healthy", "degraded", "H100", "rack", "n0"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def snapshots(draw: Any) -> dict[str, Any]:
    """A valid snapshot as wire data: up to 3 nodes in 2 racks, up to 6 pods, some running."""
    models = [H100, L40] if draw(st.booleans()) else [H100]
    budget = draw(st.sampled_from([None, 300, 1500, 4000]))
    domains = [domain("facility", budget), domain("r0", parent="facility")]
    domains.append(domain("r1", draw(st.sampled_from([None, 800])), parent="facility"))
    nodes = [
        node(
            f"n{i}",
            draw(st.integers(0, 8)),
            model=draw(st.sampled_from([m["name"] for m in models])),
            domain=f"r{i % 2}",
            cpu=draw(st.sampled_from([0, 8_000, 64_000])),
            mem=draw(st.sampled_from([0, 65_536])),
        )
        for i in range(draw(st.integers(1, 3)))
    ]
    pods = []
    free = {n["name"]: list(range(n["gpus"])) for n in nodes}
    for i in range(draw(st.integers(0, 6))):
        gpus = draw(st.integers(0, 4))
        milli = draw(st.sampled_from([1000, 1000, 500, 250])) if gpus == 1 else 1000
        p = pod(
            f"p{i}",
            draw(st.sampled_from(["training", "fine-tuning", "inference"])),
            gpus,
            milli=milli,
            priority=draw(st.sampled_from([-(2**31), -5, 0, 10, 2**31 - 1])),
            cpu=draw(st.sampled_from([0, 4_000, 100_000])),
            mem=draw(st.sampled_from([0, 32_768])),
        )
        host = draw(st.sampled_from([None, *free]))
        if host is not None and len(free[host]) >= gpus and milli == 1000:
            # Running pods may already ask for more CPU than their node has.
            p["node"], p["gpuIndices"] = host, [free[host].pop(0) for _ in range(gpus)]
        pods.append(p)
    return {"gpuModels": models, "powerDomains": domains, "nodes": nodes, "pods": pods}


def places(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into nested data: where a mutation can land."""
    out = [path]
    if isinstance(data, dict):
        for k, v in data.items():
            out += places(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += places(v, (*path, i))
    return out


@st.composite
def mutated(draw: Any, base: Any) -> Any:
    """The data with up to three places replaced by hostile values, or removed."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(places(data)))
        if not path:
            return draw(VALUES)
        target = data
        for part in path[:-1]:
            target = target[part]
        if draw(st.integers(0, 4)) == 0:
            del target[path[-1]]
        else:
            target[path[-1]] = draw(VALUES)
    return data


@st.composite
def documents(draw: Any, data: Any) -> tuple[str, str]:
    """(file suffix, text): the data as JSON or YAML, sometimes cut short or nested deep."""
    suffix = draw(st.sampled_from([".json", ".yaml"]))
    text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data)
    damage = draw(st.integers(0, 9))
    if damage == 0:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 1:
        depth = draw(st.integers(60, 3000))
        text = "[" * depth + text + "]" * depth
    elif damage == 2:
        text = text + "\n" + text  # every top-level key twice in YAML; trailing data in JSON
    return suffix, text


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def plan_is_checked(tmp: Path, snap_file: str, r: Any, policy: PackingPolicy) -> None:
    """A plan the CLI printed passes the independent checker, at its end and at every step of
    carrying it out, in-process, and through `check`."""
    plan = Plan.model_validate_json(r.stdout)
    assert_carried_out_safely(files.load_snapshot(snap_file), policy, plan)
    plan_file = write(tmp, "plan.json", r.stdout)
    checked = run("check", snap_file, "--plan", plan_file)
    assert checked.exit_code == 0, checked.stdout + checked.stderr


@fuzz
@given(data=st.data())
def test_plan_on_fuzzed_snapshots(tmp_path_factory: Any, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("snap")
    base = data.draw(snapshots())
    doc = data.draw(st.one_of(st.just(base), mutated(base)))
    suffix, text = data.draw(documents(doc))
    snap_file = write(tmp, "s" + suffix, text)
    r = run("plan", snap_file, "--output", "json", "--time-limit", "0.5")
    assert_clean(r)
    if r.exit_code == 0:
        plan_is_checked(tmp, snap_file, r, PackingPolicy())


@fuzz
@given(base=snapshots())
def test_every_plan_of_a_valid_snapshot_passes_the_checker(
    tmp_path_factory: Any, base: Any
) -> None:
    tmp = tmp_path_factory.mktemp("valid")
    snap_file = write(tmp, "s.json", json.dumps(base))
    r = run("plan", snap_file, "--output", "json", "--time-limit", "0.5")
    assert_clean(r)
    assert r.exit_code == 0, r.stderr
    plan_is_checked(tmp, snap_file, r, PackingPolicy())


@fuzz
@given(data=st.data())
def test_plan_with_fuzzed_policies(tmp_path_factory: Any, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("policy")
    base = PackingPolicy().model_dump(by_alias=True, mode="json")
    suffix, text = data.draw(documents(data.draw(mutated(base))))
    policy_file = write(tmp, "p" + suffix, text)
    snap_file = write(tmp, "s.json", json.dumps(data.draw(snapshots())))
    r = run("plan", snap_file, "--policy", policy_file, "--output", "json", "--time-limit", "0.5")
    assert_clean(r)
    if r.exit_code == 0:
        plan_is_checked(tmp, snap_file, r, files.load_policy(policy_file))


@fuzz
@given(data=st.data())
def test_check_with_fuzzed_plans(tmp_path_factory: Any, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("plan")
    snap_file = write(tmp, "s.json", json.dumps(data.draw(snapshots())))
    made = run("plan", snap_file, "--output", "json", "--time-limit", "0.5")
    assert made.exit_code == 0, made.stderr
    suffix, text = data.draw(documents(data.draw(mutated(json.loads(made.stdout)))))
    assert_clean(run("check", snap_file, "--plan", write(tmp, "plan" + suffix, text)))


@fuzz
@given(data=st.data())
def test_fuzzed_spaces_load_or_fail_with_a_user_error(
    tmp_path_factory: Any, data: st.DataObject
) -> None:
    # What `wattpack tune` does with its space before any trial runs.
    tmp = tmp_path_factory.mktemp("space")
    base = yaml.safe_load(SPACE.read_text())
    suffix, text = data.draw(documents(data.draw(mutated(base))))
    try:
        space = files.load(write(tmp, "space" + suffix, text), TuningSpace, "space")
        space.check()
        space.base_values()
    except UserError as e:
        assert "\n" not in e.line()


@fuzz
@given(data=st.data(), at=st.sampled_from(["0", "100", "200", "1e9"]))
def test_agent_on_fuzzed_scenarios(tmp_path_factory: Any, data: st.DataObject, at: str) -> None:
    tmp = tmp_path_factory.mktemp("scenario")
    base = yaml.safe_load(SCENARIO.read_text())
    suffix, text = data.draw(documents(data.draw(mutated(base))))
    scenario = write(tmp, "scenario" + suffix, text)
    r = run("agent", "--backend", "fake", "--scenario", scenario, "--once", "--at", at,
            "--node", "n", "--output", "json")  # fmt: skip
    assert_clean(r)


TRACE_COLUMNS = ["name", "submit", "duration", "gpus", "gpu_milli", "kind", "priority"]
CELLS = st.one_of(
    st.sampled_from(["", "0", "1", "8", "500", "training", "inference", "g", "-1", "nan"]),
    st.sampled_from(["inf", "1e20", str(10**20), str(2**31), "1e300", "x y", '"'])
    | st.text(max_size=6),
    HOSTILE.map(str),
)


@fuzz
@given(data=st.data())
def test_simulate_on_fuzzed_traces(tmp_path_factory: Any, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("trace")
    columns = data.draw(st.lists(st.sampled_from([*TRACE_COLUMNS, "gang", "bogus"]), max_size=8))
    columns = data.draw(st.sampled_from([TRACE_COLUMNS, columns]))
    rows = data.draw(
        st.lists(st.lists(CELLS, min_size=len(columns), max_size=len(columns)), max_size=5)
    )
    text = "\n".join(",".join(row) for row in [columns, *rows]) + "\n"
    trace = write(tmp, "t.csv", text)
    args = ["simulate", "--trace", trace, "--cluster", str(CLUSTER), "--no-progress"]
    r = run(*args, "--scheduler", "best-fit", "--output", "json")
    assert_clean(r)
    if r.exit_code == 0:
        assert "NaN" not in r.stdout and "Infinity" not in r.stdout


NUMBERS = st.one_of(
    HOSTILE.map(str),
    st.floats().map(str),
    st.sampled_from(["1e20", "1e-20", "-0", "0x10", "", "abc", "Infinity", "-nan"]),
)
FLAGS = [
    ("plan", "--time-limit"),
    ("simulate", "--facility-budget"),
    ("simulate", "--rack-budget"),
    ("simulate", "--horizon"),
    ("simulate", "--time-limit"),
    ("simulate", "--gpu-failures"),
    ("simulate", "--arrival-scale"),
    ("make-cluster", "--nodes"),
    ("make-cluster", "--gpus-per-node"),
    ("make-cluster", "--tdp-watts"),
    ("make-cluster", "--facility-budget"),
    ("make-cluster", "--cpu-milli"),
]


@fuzz
@given(flag=st.sampled_from(FLAGS), value=NUMBERS)
def test_number_flags_take_only_finite_numbers_in_range(flag: tuple[str, str], value: str) -> None:
    command, option = flag
    args = {
        "plan": ["plan", str(REPO / "examples" / "small-cluster.yaml"), "--output", "json"],
        "simulate": [
            "simulate",
            "--trace",
            str(REPO / "examples" / "trace-small.csv"),
            "--cluster",
            str(CLUSTER),
            "--scheduler",
            "best-fit",
            "--output",
            "json",
            "--no-progress",
        ],
        "make-cluster": ["make-cluster", "--nodes", "2"],
    }[command]
    r = run(*args, f"{option}={value}")
    assert_clean(r)
    assert "NaN" not in r.stdout and "Infinity" not in r.stdout
