"""Which GPUs get their power limit set from spec.powerLimits, and to what: clamped to what each
GPU allows, never re-set when it already enforces the ask, and never re-set in a loop when the
GPU keeps enforcing something else after a set."""

from __future__ import annotations

from operators.agent.power_caps import CapChange, PowerCaps, cap_changes, clamp
from operators.agent.rounds import AgentGpu, AgentRound
from operators.nvml.fake import FakeBackend, load_scenario
from operators.nvml.reading import GpuReading
from scheduler.model import GpuHealth, HealthState


def gpu(index: int, limit_w: int | None = 700, lo_mw: int | None = 200_000,
        hi_mw: int | None = 700_000, present: bool = True) -> GpuReading:  # fmt: skip
    return GpuReading(
        time=0.0,
        index=index,
        present=present,
        power_limit_mw=None if limit_w is None else limit_w * 1000,
        power_limit_min_mw=lo_mw,
        power_limit_max_mw=hi_mw,
    )


def test_asks_are_clamped_to_the_gpu_range_rounded_inwards() -> None:
    assert clamp(500, gpu(0)) == 500
    assert clamp(900, gpu(0)) == 700 and clamp(50, gpu(0)) == 200
    odd = gpu(0, lo_mw=150_500, hi_mw=699_600)
    assert clamp(1, odd) == 151 and clamp(10_000, odd) == 699
    assert clamp(10_000, gpu(0, lo_mw=None, hi_mw=None)) == 10_000


def test_only_gpus_whose_enforced_limit_differs_are_set() -> None:
    readings = [gpu(0), gpu(1, limit_w=500), gpu(2, limit_w=300)]
    got = cap_changes(readings, {0: 500, 1: 500, 2: 900})
    assert got == [
        CapChange(index=0, asked=500, target=500, current=700),
        CapChange(index=2, asked=900, target=700, current=300),
    ]
    # An ask above the maximum on a GPU already at its maximum is no change.
    assert cap_changes([gpu(0)], {0: 5000}) == []
    assert cap_changes(readings, {}) == []


def test_absent_unreadable_and_unknown_gpus_are_skipped() -> None:
    readings = [gpu(0, present=False), gpu(1, limit_w=None), gpu(2)]
    assert cap_changes(readings, {0: 400, 1: 400, 7: 400}) == []


def test_a_settled_set_is_not_repeated_until_the_gpu_or_the_ask_changes() -> None:
    # Asked 500, set, and the GPU enforces 498 (another limit binds): leave it be.
    settled = {0: (500, 498)}
    assert cap_changes([gpu(0, limit_w=498)], {0: 500}, settled) == []
    # A reset restored the default: set again.
    assert [c.target for c in cap_changes([gpu(0, limit_w=700)], {0: 500}, settled)] == [500]
    # A new ask: set again.
    assert [c.target for c in cap_changes([gpu(0, limit_w=498)], {0: 400}, settled)] == [400]


def _round(readings: list[GpuReading]) -> AgentRound:
    return AgentRound(
        node="n",
        time=0.0,
        gpus=[
            AgentGpu(reading=r, health=GpuHealth(index=r.index, state=HealthState.HEALTHY))
            for r in readings
        ],
    )


class _Stubborn:
    """A backend whose GPU 0 always enforces 2 W below the set, and whose GPU 1 refuses."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def set_power_limit(self, index: int, watts: int) -> int:
        self.calls.append((index, watts))
        if index == 1:
            raise RuntimeError("NVML: insufficient permissions")
        return watts - 2


def test_the_actuator_sets_once_survives_a_refusal_and_does_not_loop() -> None:
    backend = _Stubborn()
    caps = PowerCaps(backend, "n")
    readings = [gpu(0), gpu(1)]
    assert caps.apply(_round(readings), {0: 500, 1: 400}) == {0: 498}
    assert backend.calls == [(0, 500), (1, 400)]
    # Next round GPU 0 shows what it enforces; only the refused GPU 1 is tried again.
    readings = [gpu(0, limit_w=498), gpu(1)]
    assert caps.apply(_round(readings), {0: 500, 1: 400}) == {}
    assert backend.calls[2:] == [(1, 400)]
    assert caps.apply(_round(readings), {0: 500, 1: 400}) == {}
    assert backend.calls[3:] == [(1, 400)]


def test_the_fake_backend_reports_the_set_limit_next_round() -> None:
    fake = FakeBackend(load_scenario({"gpus": [{"uuid": "a"}, {"uuid": "b"}]}, "inline"))
    caps = PowerCaps(fake, "n")
    first = _round([fake.read(i, 0.0) for i in range(2)])
    assert caps.apply(first, {0: 500, 1: 900}) == {0: 500}  # GPU 1 is at its 700 W maximum
    second = _round([fake.read(i, 1.0) for i in range(2)])
    assert [g.reading.power_limit_mw for g in second.gpus] == [500_000, 700_000]
    assert caps.apply(second, {0: 500, 1: 900}) == {}


def test_a_removed_ask_restores_the_default_limit_once() -> None:
    fake = FakeBackend(load_scenario({"gpus": [{"uuid": "a"}]}, "inline"))
    caps = PowerCaps(fake, "n")
    assert caps.apply(_round([fake.read(0, 0.0)]), {0: 450}) == {0: 450}
    assert fake.read(0, 1.0).power_limit_mw == 450_000
    # The ask is gone from spec.powerLimits: the GPU gets its 700 W default back, and only once.
    assert caps.apply(_round([fake.read(0, 1.0)]), {}) == {0: 700}
    assert fake.read(0, 2.0).power_limit_mw == 700_000
    assert caps.apply(_round([fake.read(0, 2.0)]), {}) == {}
    assert caps.apply(_round([fake.read(0, 3.0)]), {}) == {}
