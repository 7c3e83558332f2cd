"""Which pods hold which GPU, from the kubelet's PodResources API.

No kubelet runs here (the e2e cluster's nodes are KWOK's, which have none), so the server in
these tests is the test's own: a real gRPC server on a unix socket, built from the kubelet's
own api.proto (operators/kubelet/podresources) and answering with scripted pods. What it
proves is our side of the wire: the client, the socket, the mapping to GPUs and where the pods
show up. That the kubelet answers as the proto says is the kubelet's side, not tested here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import jsonschema
import pytest
import structlog
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from operators.agent.gpunode import gpunode_status
from operators.agent.metrics import RoundCollector
from operators.agent.rounds import Agent, replay_fake
from operators.kubelet.pod_gpus import PodGpus
from operators.kubelet.podresources import api_pb2, api_pb2_grpc
from operators.nvml.fake import FakeBackend, load_scenario
from scheduler.model import PackingPolicy

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "examples" / "nvml-scenario.yaml"
CRD = REPO / "manifests" / "crds" / "gpunodes.wattpack.io.yaml"
RULES = PackingPolicy().health
UUID = "GPU-00000000-fake-0000-0000-00000000000{}".format  # the scenario's GPUs
MIG = "MIG-5c0a3e8f-7a2b-5d1e-9b1f-2f6a0c3d4e5f"


def _devices(resource: str, *ids: str) -> api_pb2.ContainerDevices:
    return api_pb2.ContainerDevices(resource_name=resource, device_ids=list(ids))


def _pod(namespace: str, name: str, *containers: api_pb2.ContainerResources):
    return api_pb2.PodResources(namespace=namespace, name=name, containers=list(containers))


# What a kubelet with the NVIDIA device plugin (uuid id strategy) would list on the scenario's
# node: a trainer holding GPUs 0 and 1 beside a sidecar with no devices, an inference pod on a
# MIG slice, and two notebooks time-sliced on GPU 3 (the plugin's "<uuid>::<replica>" ids).
LISTING = api_pb2.ListPodResourcesResponse(
    pod_resources=[
        _pod(
            "ml",
            "train-0",
            api_pb2.ContainerResources(
                name="trainer",
                devices=[
                    _devices("nvidia.com/gpu", UUID(0), UUID(1)),
                    _devices("example.com/nic", "nic-0"),  # not a GPU: ignored
                ],
                cpu_ids=[2, 3],
            ),
            api_pb2.ContainerResources(name="sidecar"),
        ),
        _pod(
            "ml",
            "infer-1",
            api_pb2.ContainerResources(name="server", devices=[_devices("nvidia.com/gpu", MIG)]),
        ),
        _pod(
            "dev",
            "nb-b",
            api_pb2.ContainerResources(
                name="lab", devices=[_devices("nvidia.com/gpu", f"{UUID(3)}::1")]
            ),
        ),
        _pod(
            "dev",
            "nb-a",
            api_pb2.ContainerResources(
                name="lab", devices=[_devices("nvidia.com/gpu", f"{UUID(3)}::0")]
            ),
        ),
        _pod("kube-system", "coredns", api_pb2.ContainerResources(name="coredns")),
    ]
)
MAPPING = {
    UUID(0): ["ml/train-0"],
    UUID(1): ["ml/train-0"],
    MIG: ["ml/infer-1"],
    UUID(3): ["dev/nb-a", "dev/nb-b"],
}


class ScriptedKubelet(api_pb2_grpc.PodResourcesListerServicer):
    """The kubelet's service, answering List with `listing`, or failing with `error`."""

    def __init__(self) -> None:
        self.listing = LISTING
        self.error: tuple[grpc.StatusCode, str] | None = None
        self.calls = 0

    def List(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.error is not None:
            context.abort(*self.error)
        return self.listing


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[tuple[str, ScriptedKubelet]]:
    sock = str(tmp_path / "kubelet.sock")
    assert len(sock) < 100, "unix socket paths are limited to 107 bytes"
    servicer = ScriptedKubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"unix:{sock}") == 1
    server.start()
    try:
        yield sock, servicer
    finally:
        server.stop(grace=None).wait()


@pytest.fixture(autouse=True)
def _every_log_level() -> Iterator[None]:
    # A CLI test earlier in the run leaves structlog filtering below WARNING; these tests read
    # info events, so they start from structlog's defaults.
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _warnings(logs: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in logs if e["event"] == "pod_resources_unavailable"]


def test_each_gpu_maps_to_the_pods_that_hold_it(kubelet) -> None:  # type: ignore[no-untyped-def]
    sock, servicer = kubelet
    assert PodGpus(sock).read() == MAPPING
    assert servicer.calls == 1


def test_a_missing_socket_is_empty_and_warned_about_once(tmp_path: Path) -> None:
    pods = PodGpus(str(tmp_path / "absent.sock"), timeout=0.5)
    with capture_logs() as logs:
        assert pods.read() == {}
        assert pods.read() == {}
    (warning,) = _warnings(logs)
    assert warning["log_level"] == "warning" and "absent.sock" in warning["error"]


def test_a_socket_nobody_answers_on_is_empty_not_fatal(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: connect is refused
        with capture_logs() as logs:
            assert PodGpus(str(path), timeout=0.5).read() == {}
    (warning,) = _warnings(logs)
    assert warning["error"].startswith("UNAVAILABLE")


def test_a_grpc_error_is_warned_once_per_distinct_error_and_recovers(kubelet) -> None:  # type: ignore[no-untyped-def]
    sock, servicer = kubelet
    pods = PodGpus(sock)
    with capture_logs() as logs:
        servicer.error = (grpc.StatusCode.PERMISSION_DENIED, "not root")
        assert pods.read() == {} and pods.read() == {}
        servicer.error = (grpc.StatusCode.INTERNAL, "kubelet broke")
        assert pods.read() == {} and pods.read() == {}
        servicer.error = None
        assert pods.read() == MAPPING
        servicer.error = (grpc.StatusCode.PERMISSION_DENIED, "not root")
        assert pods.read() == {}
    assert [w["error"] for w in _warnings(logs)] == [
        "PERMISSION_DENIED: not root",
        "INTERNAL: kubelet broke",
        "PERMISSION_DENIED: not root",  # after a good read, the same error is news again
    ]
    assert [e["event"] for e in logs].count("pod_resources_recovered") == 1
    assert servicer.calls == 6


def _fake() -> FakeBackend:
    return FakeBackend(load_scenario(yaml.safe_load(SCENARIO.read_text()), str(SCENARIO)))


def test_an_agent_round_puts_the_pods_on_their_gpus(kubelet) -> None:  # type: ignore[no-untyped-def]
    sock, _ = kubelet
    fake = _fake()
    agent = Agent(fake, RULES, "node-a")
    with capture_logs() as logs:
        r = replay_fake(agent, fake, 200.0, PodGpus(sock).read())
        again = agent.round(201.0, pods=PodGpus(sock).read())
    assert [g.pods for g in r.gpus] == [
        ["ml/train-0"],
        ["ml/train-0"],
        [],  # no pod holds GPU 2 (failed and gone by 200 s)
        ["dev/nb-a", "dev/nb-b"],
    ]
    assert [g.pods for g in again.gpus] == [g.pods for g in r.gpus]
    # The MIG slice names no GPU NVML listed: logged once, not every round.
    unmapped = [e for e in logs if e["event"] == "pod_device_unmapped"]
    assert [(e["device"], e["pods"]) for e in unmapped] == [(MIG, ["ml/infer-1"])]

    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = gpunode_status(r)
    jsonschema.validate(status, schema["properties"]["status"])
    assert [g.get("pods") for g in status["gpus"]] == [
        ["ml/train-0"],
        ["ml/train-0"],
        None,  # no pods: no key, as for the other fields a GPU has nothing for
        ["dev/nb-a", "dev/nb-b"],
    ]

    collector = RoundCollector("node-a")
    registry = CollectorRegistry()
    registry.register(collector)
    collector.observe(r)
    text = generate_latest(registry).decode()
    assert (
        'wattpack_gpu_pod_info{gpu="3",model="NVIDIA H100 80GB HBM3",namespace="dev",'
        f'node="node-a",pod="nb-b",uuid="{UUID(3)}"}} 1.0'
    ) in text
    assert text.count("wattpack_gpu_pod_info{") == 4


def test_device_ids_of_the_plugins_index_strategy_map_by_index() -> None:
    fake = _fake()
    r = Agent(fake, RULES, "n").round(0.0, pods={"1": ["a/p"], "2:0": ["a/q"], "7": ["a/r"]})
    assert [g.pods for g in r.gpus] == [[], ["a/p"], ["a/q"], []]


def test_the_agent_command_reads_the_socket(kubelet) -> None:  # type: ignore[no-untyped-def]
    sock, servicer = kubelet
    run = [sys.executable, "-m", "operators.cli", "agent", "--backend", "fake", "--scenario",
           str(SCENARIO), "--once", "--at", "50"]  # fmt: skip
    r = subprocess.run(
        [*run, "--pod-resources-socket", sock], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    gpus = json.loads(r.stdout)["gpus"]
    assert [g["pods"] for g in gpus] == [
        ["ml/train-0"],
        ["ml/train-0"],
        [],
        ["dev/nb-a", "dev/nb-b"],
    ]
    assert servicer.calls == 1
    off = subprocess.run(
        [*run, "--pod-resources-socket", ""], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert all(g["pods"] == [] for g in json.loads(off.stdout)["gpus"])
    assert "pod_resources" not in off.stderr and servicer.calls == 1
