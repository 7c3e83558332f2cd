"""The node agent on the scripted NVML backend, through the real command, and its error paths:
a GPU that cannot be read is reported failed, and one bad GPU never stops the round."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from operators.agent.rounds import Agent, replay_fake
from operators.nvml.fake import FakeBackend, load_scenario
from operators.nvml.reading import GpuReading
from scheduler.model import HealthState, PackingPolicy

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "examples" / "nvml-scenario.yaml"
RULES = PackingPolicy().health


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "operators.cli", "agent", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_agent_once_on_the_scripted_node_reports_readings_and_health() -> None:
    r = agent("--backend", "fake", "--scenario", str(SCENARIO), "--once", "--at", "200",
              "--output", "json", "--node", "gpu-node-1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["node"] == "gpu-node-1" and out["time"] == 200
    states = [g["health"]["state"] for g in out["gpus"]]
    assert states == ["degraded", "suspect", "failed", "suspect"]
    reasons = [g["health"]["reasons"] for g in out["gpus"]]
    assert "corrected ECC" in reasons[0][0] and "row remap pending" in reasons[1][0]
    assert out["gpus"][2]["reading"]["present"] is False
    # Every state change was logged, to stderr only.
    changes = [json.loads(line) for line in r.stderr.splitlines() if "gpu_health_changed" in line]
    assert {(c["gpu"], c["new"]) for c in changes} >= {(2, "failed"), (0, "degraded")}


def test_unsupported_fields_are_recorded_not_fatal() -> None:
    r = agent("--backend", "fake", "--scenario", str(SCENARIO), "--once", "--at", "50")
    assert r.returncode == 0, r.stderr
    gpu2 = json.loads(r.stdout)["gpus"][2]["reading"]
    assert gpu2["unsupported"] == ["nvlink_errors", "recovery_action"]
    assert gpu2["nvlinkErrors"] is None and gpu2["eccCorrectedAggregate"] == 0
    assert json.loads(r.stdout)["gpus"][2]["health"]["state"] == "healthy"


def test_the_real_backend_without_a_driver_is_one_clear_line() -> None:
    r = agent("--once")
    if r.returncode == 0:  # a machine with a GPU and a driver: a real round
        assert json.loads(r.stdout)["gpus"]
    else:
        assert r.returncode == 2, r.stderr
        assert "NVML" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_a_bad_scenario_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("gpus: [{uuid: a}]\nevents: [{at: 1, gpu: 0, set: {eccCorrected: 3}}]\n")
    r = agent("--backend", "fake", "--scenario", str(bad), "--once")
    assert r.returncode == 2 and "events[0].set.eccCorrected" in r.stderr, r.stderr


class _Flaky:
    """A backend double whose GPU 1 breaks on read and whose driver can vanish."""

    def __init__(self) -> None:
        self.gone = False

    def count(self) -> int:
        if self.gone:
            raise RuntimeError("NVML: driver not loaded")
        return 3

    def read(self, index: int, now: float) -> GpuReading:
        if index == 1:
            raise RuntimeError("NVML: unknown error")
        return GpuReading(time=now, index=index, uuid=f"GPU-{index}")


def test_one_broken_gpu_never_stops_the_round_and_a_lost_driver_fails_them_all() -> None:
    backend = _Flaky()
    a = Agent(backend, RULES, "n")
    first = a.round(0.0)
    assert [g.health.state for g in first.gpus] == [
        HealthState.HEALTHY,
        HealthState.FAILED,
        HealthState.HEALTHY,
    ]
    assert "unknown error" in first.gpus[1].reading.errors["device"]
    backend.gone = True
    second = a.round(10.0)
    assert [g.health.state for g in second.gpus] == [HealthState.FAILED] * 3


def test_xids_are_handed_out_once_and_application_xids_change_nothing() -> None:
    fake = FakeBackend(load_scenario({"gpus": [{"uuid": "a"}], "events": [
        {"at": 5, "gpu": 0, "xid": 43}, {"at": 6, "gpu": 0, "xid": 48}]}, "inline"))  # fmt: skip
    assert fake.drain_xids(5.5) == {0: [43]}
    assert fake.drain_xids(10) == {0: [48]} and fake.drain_xids(20) == {}
    a = Agent(fake, RULES, "n")
    assert a.round(5.5, {0: [43]}).gpus[0].health.state == HealthState.HEALTHY
    assert a.round(6.5, {0: [48]}).gpus[0].health.state == HealthState.FAILED


def test_power_cap_is_clamped_to_the_gpu_constraints() -> None:
    fake = FakeBackend(load_scenario({"gpus": [{"uuid": "a"}]}, "inline"))
    assert fake.set_power_limit(0, 900) == 700 and fake.set_power_limit(0, 50) == 200
    assert fake.read(0, 1.0).power_limit_mw == 200_000


def _scrape(collector: object) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_metrics_use_wattpack_names_snake_case_labels_and_counters() -> None:
    from operators.agent.metrics import RoundCollector

    fake = FakeBackend(load_scenario(_yaml(SCENARIO), str(SCENARIO)))
    a = Agent(fake, RULES, "node-a")
    collector = RoundCollector("node-a")
    assert "wattpack_gpu_" not in _scrape(collector)  # nothing before the first round
    collector.observe(a.round(100.0, fake.drain_xids(100.0)))
    collector.observe(a.round(101.0, {2: [79]}))
    text = _scrape(collector)
    assert "DCGM_FI_" not in text  # dcgm-exporter's names only with --dcgm-names
    gpu2 = 'gpu="2",model="NVIDIA H100 80GB HBM3",node="node-a"'
    uuid2 = 'uuid="GPU-00000000-fake-0000-0000-000000000002"'
    assert f'wattpack_gpu_health{{{gpu2},state="failed",{uuid2}}} 1.0' in text
    assert 'wattpack_gpu_power_watts{gpu="0",model="NVIDIA H100 80GB HBM3",node="node-a"' in text
    for name in ("energy_joules", "ecc_errors", "pcie_replays", "nvlink_errors", "xid_errors"):
        assert f"# TYPE wattpack_gpu_{name}_total counter" in text
        assert f"wattpack_gpu_{name}_total{{" in text
    # XIDs are counted over rounds: GPU 2 saw 79 in the scenario (at 100), then once more.
    assert f'wattpack_gpu_xid_errors_total{{{gpu2},{uuid2},xid="79"}} 2.0' in text
    assert 'field="nvlink_errors"' in text  # GPU 2 does not support it
    labels = set(re.findall(r"[{,]([A-Za-z_]+)=", text))
    assert {"node", "gpu", "uuid", "model", "state", "severity", "xid"} <= labels
    assert all(re.fullmatch(r"[a-z_]+", n) for n in labels), labels  # no Hostname, modelName


def test_dcgm_names_come_with_the_flag() -> None:
    from operators.agent.metrics import RoundCollector

    fake = FakeBackend(load_scenario(_yaml(SCENARIO), str(SCENARIO)))
    collector = RoundCollector("node-a", dcgm_names=True)
    collector.observe(Agent(fake, RULES, "node-a").round(100.0))
    text = _scrape(collector)
    assert 'DCGM_FI_DEV_POWER_USAGE{gpu="0",model="NVIDIA H100 80GB HBM3",node="node-a"' in text
    assert "wattpack_gpu_power_watts{" in text  # as well, not instead


def _yaml(path: Path):  # type: ignore[no-untyped-def]
    import yaml

    return yaml.safe_load(path.read_text())


def test_the_gpunode_status_fits_the_crd_schema() -> None:
    import jsonschema

    from operators.agent.gpunode import gpunode_status

    crd = _yaml(REPO / "manifests" / "crds" / "gpunodes.wattpack.io.yaml")
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    fake = FakeBackend(load_scenario(_yaml(SCENARIO), str(SCENARIO)))
    r = replay_fake(Agent(fake, RULES, "node-a"), fake, 200.0)
    status = gpunode_status(r)
    jsonschema.validate(status, schema)
    assert status["gpuCount"] == 4 and status["healthyCount"] == 0
    assert status["gpus"][2] == {
        "index": 2,
        "health": "failed",
        "reasons": ["GPU not reachable through NVML"],
        "unsupported": [],
        "uuid": "GPU-00000000-fake-0000-0000-000000000002",
    }
    # A status the CRD would refuse is caught by the same check.
    status["gpus"][0]["health"] = "poorly"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(status, schema)


def test_the_xid_thread_keeps_events_until_taken_and_survives_a_failed_wait() -> None:
    import time

    from operators.agent.xids import XidWatcher

    script = [{0: [79]}, RuntimeError("NVML: unknown error"), {1: [13, 48]}, {0: [31]}]

    def drain(wait_ms: int) -> dict[int, list[int]]:
        if not script:
            time.sleep(wait_ms / 1000)
            return {}
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    w = XidWatcher(drain, wait_ms=10, retry_s=0.01).start()
    try:
        for _ in range(200):
            if not script:
                break
            time.sleep(0.01)
        time.sleep(0.05)
        assert w.take() == {0: [79, 31], 1: [13, 48]}
        assert w.take() == {}
    finally:
        w.stop()
    assert not w._thread.is_alive()


def test_a_round_says_what_changed_since_the_last() -> None:
    from operators.agent.round_changes import changes

    gone_and_back = [{"at": 10, "gpu": 1, "gone": True}, {"at": 20, "gpu": 1, "back": True}]
    scenario = {"gpus": [{"uuid": "a"}, {"uuid": "b"}], "events": gone_and_back}
    fake = FakeBackend(load_scenario(scenario, "inline"))
    a = Agent(fake, RULES, "n")
    first = a.round(0.0)
    assert changes(None, first) == ["gpu 0: found, healthy", "gpu 1: found, healthy"]
    assert changes(first, a.round(1.0)) == []  # telemetry alone is no change
    fake.set_power_limit(0, 500)
    capped = a.round(2.0, pods={"a": ["ml/p"]})
    assert changes(first, capped) == ["gpu 0: power limit 700 -> 500 W", "gpu 0: pods ml/p"]
    lost = a.round(10.0, {0: [13]})
    said = changes(capped, lost)
    assert said[0] == "gpu 0: pods none" and said[1] == "gpu 0: XID 13"
    assert said[2:] == [
        "gpu 1: not reachable",
        "gpu 1: healthy -> failed (GPU not reachable through NVML)",
    ]
    assert changes(lost, a.round(20.0))[0] == "gpu 1: answers again"
