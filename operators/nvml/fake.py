"""A scripted NVML backend: GPUs and events over time from a YAML scenario, for tests and the
end-to-end cluster (`wattpack agent --backend fake --scenario FILE`).

    gpus:                       # one entry per GPU, index = position
      - uuid: GPU-fake-0
        name: NVIDIA H100 80GB HBM3
        unsupported: [nvlink_errors]      # reported as NOT_SUPPORTED
    events:                     # at simulated seconds since the agent started
      - {at: 60, gpu: 0, set: {ecc_corrected_aggregate: 40}}
      - {at: 90, gpu: 1, xid: 79}
      - {at: 120, gpu: 2, gone: true}     # the GPU disappears
      - {at: 300, gpu: 2, back: true, reset: true}
      - {at: 400, gpu: 1, hang: true}     # reading it never returns (a wedged driver)

`set` and `initial` take the GpuReading fields listed in _IDLE (snake_case), each of its type
and never below 0 (NVML's counters are unsigned); a GPU starts healthy and idle with the values
under `initial`.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import Field, ValidationError

from operators.nvml.reading import GpuReading
from scheduler.errors import UserError
from scheduler.model import limits as lim
from scheduler.model.base import Wire

_IDLE: dict[str, Any] = {
    "utilization_gpu_pct": 0,
    "utilization_memory_pct": 0,
    "memory_used_mib": 0,
    "memory_total_mib": 81_559,
    "power_mw": 70_000,
    "energy_mj": 0,
    "power_limit_mw": 700_000,
    "power_limit_min_mw": 200_000,
    "power_limit_max_mw": 700_000,
    "power_limit_default_mw": 700_000,
    "temperature_c": 35,
    "clock_event_reasons": ["gpu_idle"],
    "ecc_corrected_volatile": 0,
    "ecc_uncorrected_volatile": 0,
    "ecc_corrected_aggregate": 0,
    "ecc_uncorrected_aggregate": 0,
    "remapped_rows_corrected": 0,
    "remapped_rows_uncorrected": 0,
    "remap_pending": False,
    "remap_failure": False,
    "retired_pages_sbe": 0,
    "retired_pages_dbe": 0,
    "retired_pages_pending": False,
    "pcie_replays": 0,
    "nvlink_errors": 0,
    "recovery_action": "none",
}


class FakeGpu(Wire):
    uuid: str = Field(description="GPU UUID.")
    name: str = Field(default="NVIDIA H100 80GB HBM3", description="Model name.")
    pci_bus_id: str | None = Field(default=None, description="PCI bus id.")
    initial: dict[str, Any] = Field(default_factory=dict, description="Starting field values.")
    unsupported: list[str] = Field(default_factory=list, description="NOT_SUPPORTED fields.")


class FakeEvent(Wire):
    at: float = Field(ge=0, le=lim.MAX_SECONDS, description="Seconds since the agent started.")
    gpu: int = Field(ge=0, description="GPU index.")
    set: dict[str, Any] = Field(default_factory=dict, description="Field values from now on.")
    xid: int | None = Field(default=None, ge=0, le=lim.MAX_COUNT, description="An XID event.")
    gone: bool = Field(default=False, description="The GPU stops answering.")
    back: bool = Field(default=False, description="The GPU answers again.")
    reset: bool = Field(default=False, description="The GPU was reset.")
    hang: bool = Field(default=False, description="Reading the GPU never returns from now on.")


class FakeScenario(Wire):
    gpus: list[FakeGpu] = Field(description="The GPUs, index = position.")
    events: list[FakeEvent] = Field(default_factory=list, description="What happens, when.")


def load_scenario(data: Any, source: str) -> FakeScenario:
    try:
        scenario = FakeScenario.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"{source}: {where}: {err['msg']}", "fix the fake NVML scenario") from None
    for i, gpu in enumerate(scenario.gpus):
        _check_values(gpu.initial, f"{source}: gpus[{i}].initial")
    for i, ev in enumerate(scenario.events):
        if ev.gpu >= len(scenario.gpus):
            raise UserError(
                f"{source}: events[{i}].gpu {ev.gpu} is not a GPU of the scenario",
                f"use 0..{len(scenario.gpus) - 1}",
            )
        _check_values(ev.set, f"{source}: events[{i}].set")
    return scenario


def _check_values(values: dict[str, Any], where: str) -> None:
    """Reading fields only, each of its type; counters, watts and sizes never below 0 (NVML's
    are unsigned): found here, not as a crash when the agent reads the GPU."""
    todo = "use a GpuReading field name (snake_case) and a value of its type"
    for key, value in values.items():
        if key not in _IDLE:
            raise UserError(f"{where}.{key} is not a reading field a scenario sets", todo)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise UserError(f"{where}.{key} is {value}, below 0", "give a value of 0 or more")
    try:
        GpuReading(time=0.0, index=0, **{**_IDLE, **values})
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise UserError(f"{where}.{field}: {err['msg']}", todo) from None


class FakeBackend:
    """Reads what the scenario says at `now - start`; XIDs are handed out once each."""

    def __init__(self, scenario: FakeScenario, start: float = 0.0) -> None:
        self.scenario = scenario
        self.start = start
        self._xids_seen: set[int] = set()  # event positions already drained
        self._limits: dict[int, int] = {}

    def count(self) -> int:
        return len(self.scenario.gpus)

    def _state(self, index: int, now: float) -> tuple[dict[str, Any], bool]:
        gpu = self.scenario.gpus[index]
        values = {**_IDLE, **gpu.initial}
        present = True
        for ev in self.scenario.events:
            if ev.gpu != index or ev.at > now - self.start:
                continue
            values.update(ev.set)
            present = False if ev.gone else (True if ev.back else present)
        if index in self._limits:
            values["power_limit_mw"] = self._limits[index] * 1000
        return values, present

    def reset_seen(self, index: int, since: float, now: float) -> bool:
        """Whether a reset event fell in (since, now]."""
        return any(
            ev.gpu == index and ev.reset and since < ev.at + self.start <= now
            for ev in self.scenario.events
        )

    def read(self, index: int, now: float) -> GpuReading:
        gpu = self.scenario.gpus[index]
        if any(
            e.hang and e.gpu == index and e.at + self.start <= now for e in self.scenario.events
        ):
            threading.Event().wait()  # as an NVML call into a wedged driver: forever
        values, present = self._state(index, now)
        if not present:
            return GpuReading(
                time=now, index=index, present=False, uuid=gpu.uuid, errors={"device": "GPU lost"}
            )
        for name in gpu.unsupported:
            values[name] = None
        return GpuReading(
            time=now,
            index=index,
            uuid=gpu.uuid,
            name=gpu.name,
            pci_bus_id=gpu.pci_bus_id or f"00000000:{index + 0x18:02X}:00.0",
            unsupported=sorted(gpu.unsupported),
            **values,
        )

    def drain_xids(self, now: float) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, ev in enumerate(self.scenario.events):
            if ev.xid is not None and ev.at + self.start <= now and i not in self._xids_seen:
                self._xids_seen.add(i)
                out.setdefault(ev.gpu, []).append(ev.xid)
        return out

    def event_times(self, until: float) -> list[float]:
        return sorted({ev.at + self.start for ev in self.scenario.events if ev.at <= until})

    def set_power_limit(self, index: int, watts: int) -> int:
        values, _ = self._state(index, float("inf"))
        low, high = values["power_limit_min_mw"] // 1000, values["power_limit_max_mw"] // 1000
        self._limits[index] = max(low, min(high, watts))
        return self._limits[index]
