"""The node agent's core loop step: read every GPU, judge its health, say what changed.

Backends (real NVML, the scripted fake) only read; this module owns the per-GPU health tracks
and turns readings into the node's report. A GPU that cannot be read is reported failed, and a
read that breaks never stops the round for the other GPUs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn, Protocol

import structlog
from pydantic import Field

from operators.agent.xids import sleep_until
from operators.endpoints import Heartbeat
from operators.nvml.fake import FakeBackend
from operators.nvml.reading import GpuReading
from scheduler.health import GpuTrack, step
from scheduler.model import GpuHealth
from scheduler.model.base import Wire
from scheduler.model.health_rules import HealthRules

log = structlog.get_logger(__name__)


class Backend(Protocol):
    def count(self) -> int: ...
    def read(self, index: int, now: float) -> GpuReading: ...


class AgentGpu(Wire):
    reading: GpuReading = Field(description="What NVML reported this round.")
    health: GpuHealth = Field(description="The GPU's health after this round, with reasons.")
    pods: list[str] = Field(
        default_factory=list,
        description="Pods (namespace/name) holding this GPU, from the kubelet's PodResources API.",
    )


class AgentRound(Wire):
    node: str = Field(description="Node name.")
    time: float = Field(description="When the round was read.")
    gpus: list[AgentGpu] = Field(description="One entry per GPU.")


class Agent:
    def __init__(self, backend: Backend, rules: HealthRules, node: str) -> None:
        self.backend = backend
        self.rules = rules
        self.node = node
        self.tracks: dict[int, GpuTrack] = {}
        self.known = 0  # GPUs seen so far: a vanished GPU is still reported
        self.unmapped: set[str] = set()  # device ids already logged as matching no GPU

    def round(
        self,
        now: float,
        xids: dict[int, list[int]] | None = None,
        resets: set[int] | None = None,
        pods: dict[str, list[str]] | None = None,
    ) -> AgentRound:
        """`pods`: device id -> pods holding it, as operators.kubelet.PodGpus reads them."""
        xids, resets = xids or {}, resets or set()
        try:
            count = self.backend.count()
        except Exception as e:  # the driver went away: every GPU we knew is unreachable
            log.error("nvml_count_failed", error=str(e))
            count = -1
        self.known = max(self.known, count)
        readings = []
        for i in range(self.known):
            reading = self._read(i, now, count)
            readings.append(reading.model_copy(update={"xids": xids.get(i, [])}))
        holders = self._pods_by_index(readings, pods or {})
        gpus = []
        for i, reading in enumerate(readings):
            before = self.tracks.get(i, GpuTrack())
            after = step(before, reading.health_sample(reset=i in resets), self.rules)
            if after.state != before.state:
                log.warning(
                    "gpu_health_changed",
                    node=self.node,
                    gpu=i,
                    uuid=reading.uuid,
                    old=before.state.value,
                    new=after.state.value,
                    reasons=list(after.reasons),
                )
            self.tracks[i] = after
            gpus.append(
                AgentGpu(reading=reading, health=after.as_gpu_health(i), pods=holders.get(i, []))
            )
        return AgentRound(node=self.node, time=now, gpus=gpus)

    def _pods_by_index(
        self, readings: list[GpuReading], pods: dict[str, list[str]]
    ) -> dict[int, list[str]]:
        by_uuid = {r.uuid: r.index for r in readings if r.uuid}
        out: dict[int, set[str]] = {}
        for device, holders in pods.items():
            index = by_uuid.get(device)
            if index is None:
                index = _plugin_index(device, len(readings))
            if index is None:
                # MIG UUIDs match no reading (NVML is read per GPU, not per slice); logged once,
                # since the same pods hold them every round.
                if device not in self.unmapped:
                    self.unmapped.add(device)
                    log.info("pod_device_unmapped", node=self.node, device=device, pods=holders)
                continue
            out.setdefault(index, set()).update(holders)
        return {i: sorted(p) for i, p in out.items()}

    def _read(self, i: int, now: float, count: int) -> GpuReading:
        if i >= count:
            return GpuReading(time=now, index=i, present=False, errors={"device": "not listed"})
        try:
            return self.backend.read(i, now)
        except Exception as e:  # one broken GPU never stops the round
            log.error("gpu_read_failed", gpu=i, error=str(e))
            return GpuReading(time=now, index=i, present=False, errors={"device": str(e)})


def _plugin_index(device: str, count: int) -> int | None:
    """The NVML index in a device id of the device plugin's index strategy: "2", or "2:1" for
    a MIG slice of GPU 2."""
    head = device.split(":", 1)[0]
    if head.isdigit() and int(head) < count:
        return int(head)
    return None


def replay_fake(
    agent: Agent, backend: FakeBackend, until: float, pods: dict[str, list[str]] | None = None
) -> AgentRound:
    """For the fake backend: a round at every scripted event up to `until`, then one at
    `until`, so that the health shown is what a running agent would have seen. `pods` is what
    the kubelet says now, so it goes into the last round only."""
    out = None
    prev = -1.0  # scripted times are >= 0: a reset at 0 counts in the first round
    for t in sorted({0.0, *backend.event_times(until), until}):
        resets = {i for i in range(backend.count()) if backend.reset_seen(i, prev, t)}
        out = agent.round(t, backend.drain_xids(t), resets, pods if t == until else None)
        prev = t
    assert out is not None
    return out


def run_forever(
    read: Callable[[], AgentRound],
    then: Callable[[AgentRound], None],
    interval: float,
    heartbeat: Heartbeat,
) -> NoReturn:
    """The running agent: a round every `interval` seconds, each handed to `then`. A round that
    hangs (a wedged driver) fails /healthz once it overruns the heartbeat's limit."""
    while True:
        deadline = time.monotonic() + interval
        heartbeat.beat()
        then(read())
        heartbeat.beat(max(0.0, deadline - time.monotonic()))
        sleep_until(deadline)
