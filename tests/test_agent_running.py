"""The running agent as a real process on the scripted backend: its /metrics, /healthz and
/readyz (a hung round fails liveness), promtool on what it serves, and its logs (one JSON line
per round on stderr, nothing on stdout)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from promtool import metrics_problems
from served import fetch, free_port
from waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "examples" / "nvml-scenario.yaml"


@contextmanager
def running_agent(tmp_path: Path, *args: str) -> Iterator[tuple[int, Path, Path]]:
    """(port, stdout file, stderr file) of `wattpack agent --backend fake ... args`."""
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "operators.cli", "--log-format", "json", "--log-level",
             "info", "agent", "--backend", "fake", "--interval", "0.2",
             "--metrics-port", str(port), *args],
            cwd=REPO, stdout=o, stderr=e,
        )  # fmt: skip
    try:
        yield port, out, err
        assert proc.poll() is None, err.read_text()  # still running
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _scenario(tmp_path: Path, events: list[dict[str, object]]) -> str:
    path = tmp_path / "scenario.yaml"
    gpus = [{"uuid": f"GPU-{i}"} for i in range(2)]
    path.write_text(yaml.safe_dump({"gpus": gpus, "events": events}))
    return str(path)


def _metrics(port: int) -> str:
    status, text = fetch(port, "/metrics")
    return text if status == 200 and "wattpack_gpu_temperature_celsius" in text else ""


def test_the_running_agent_serves_metrics_and_probes_that_promtool_finds_clean(
    tmp_path: Path,
) -> None:
    with running_agent(tmp_path, "--scenario", str(SCENARIO)) as (port, _, _):
        text = wait_until(lambda: _metrics(port), 60, "the first round's metrics")
        assert fetch(port, "/healthz") == (200, "ok\n")
        assert fetch(port, "/readyz") == (200, "ok\n")
        assert fetch(port, "/")[0] == 404 and fetch(port, "/metricsz")[0] == 404
        assert "wattpack_gpu_health{" in text and "DCGM_FI_" not in text
        assert "process_resident_memory_bytes " in text and "python_info{" in text
        assert metrics_problems(text) == []


def test_with_dcgm_names_promtool_only_minds_a_name_dcgm_exporter_chose(tmp_path: Path) -> None:
    with running_agent(tmp_path, "--scenario", str(SCENARIO), "--dcgm-names") as (port, _, _):
        text = wait_until(lambda: _metrics(port), 60, "the first round's metrics")
        assert "DCGM_FI_DEV_POWER_USAGE{" in text
        assert metrics_problems(text) == [
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'"
        ]


def test_a_round_that_hangs_fails_liveness_and_keeps_readiness(tmp_path: Path) -> None:
    # GPU 1's driver wedges after the first rounds: the round loop never comes back.
    scenario = _scenario(tmp_path, [{"at": 1, "gpu": 1, "hang": True}])
    with running_agent(tmp_path, "--scenario", scenario, "--stuck-after", "1") as (port, _, _):
        _, body = wait_until(
            lambda: (x := fetch(port, "/healthz"))[0] == 503 and x, 60, "/healthz to fail"
        )
        assert "no progress" in body and "--stuck-after 1" in body
        assert fetch(port, "/readyz") == (200, "ok\n")  # it did read rounds
        assert "wattpack_agent_rounds_total" in fetch(port, "/metrics")[1]


def test_an_agent_that_never_read_a_round_is_not_ready(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, [{"at": 0, "gpu": 0, "hang": True}])
    with running_agent(tmp_path, "--scenario", scenario, "--stuck-after", "1") as (port, _, _):
        wait_until(lambda: fetch(port, "/healthz")[0] == 503, 60, "/healthz to fail")
        assert fetch(port, "/readyz") == (503, "no round read yet\n")


def test_the_running_agent_logs_one_json_line_per_round_and_prints_nothing(
    tmp_path: Path,
) -> None:
    scenario = _scenario(tmp_path, [{"at": 0.6, "gpu": 1, "xid": 79}])
    with running_agent(tmp_path, "--scenario", scenario) as (_, out, err):
        wait_until(lambda: "healthy -> failed" in err.read_text(), 60, "GPU 1 failing")
    assert out.read_text() == ""  # no round documents: stdout is for --once
    events = [json.loads(line) for line in err.read_text().splitlines()]
    rounds = [e for e in events if e["event"] == "round"]
    assert len(rounds) >= 2 and all(e["level"] == "info" for e in rounds)
    assert rounds[0]["changes"] == ["gpu 0: found, healthy", "gpu 1: found, healthy"]
    (failed,) = [e for e in rounds if any("gpu 1: XID 79" in c for c in e["changes"])]
    assert "gpu 1: healthy -> failed (XID 79)" in failed["changes"]
    assert failed["gpus"] == {"healthy": 1, "failed": 1}
    assert all(e["changes"] == [] for e in rounds[1:] if e is not failed)
    # A scripted node has no kubelet: the PodResources socket is not asked, nor warned about.
    assert not [e for e in events if "pod_resources" in e["event"]]


def test_the_fake_backend_once_does_not_warn_about_the_kubelet() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "operators.cli", "agent", "--backend", "fake", "--scenario",
         str(SCENARIO), "--once"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "pod_resources" not in r.stderr and "kubelet" not in r.stderr
    assert json.loads(r.stdout)["gpus"]


def test_output_without_once_is_one_line_and_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "operators.cli", "agent", "--backend", "fake", "--scenario",
         str(SCENARIO), "--output", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --output:") and "--once" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "operators.cli", "agent", "--backend", "fake", "--scenario",
             str(SCENARIO), "--metrics-port", str(port)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: --metrics-port {port}: ") and "or 0 (off)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
