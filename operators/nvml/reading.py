"""One round of NVML readings for one GPU, whichever backend (real NVML or a scripted fake)
produced it. A field the GPU or driver does not support is None and named in `unsupported`; a
field whose read failed otherwise is None and named in `errors`: one bad field never loses the
rest."""

from __future__ import annotations

from pydantic import Field

from scheduler.health import GpuSample
from scheduler.model.base import Wire


class GpuReading(Wire):
    time: float = Field(description="When it was read (the agent's clock, seconds).")
    index: int = Field(ge=0, description="NVML device index.")
    present: bool = Field(default=True, description="false = the device could not be reached.")
    uuid: str | None = Field(default=None, description="GPU UUID.")
    name: str | None = Field(default=None, description="Model name, e.g. NVIDIA H100 80GB HBM3.")
    pci_bus_id: str | None = Field(default=None, description="PCI bus id.")
    utilization_gpu_pct: int | None = Field(default=None, description="SM busy, percent.")
    utilization_memory_pct: int | None = Field(default=None, description="Memory busy, percent.")
    memory_used_mib: int | None = Field(default=None, description="Memory used, MiB.")
    memory_total_mib: int | None = Field(default=None, description="Memory total, MiB.")
    power_mw: int | None = Field(default=None, description="Power draw, milliwatts.")
    energy_mj: int | None = Field(default=None, description="Total energy counter, millijoules.")
    power_limit_mw: int | None = Field(default=None, description="Enforced power limit, mW.")
    power_limit_min_mw: int | None = Field(default=None, description="Lowest settable limit.")
    power_limit_max_mw: int | None = Field(default=None, description="Highest settable limit.")
    power_limit_default_mw: int | None = Field(
        default=None, description="The limit the GPU comes up with (restored when a cap is lifted)."
    )
    temperature_c: int | None = Field(default=None, description="GPU temperature, Celsius.")
    clock_event_reasons: list[str] | None = Field(
        default=None, description="Active clock-event (throttle) reasons, by name."
    )
    ecc_corrected_volatile: int | None = Field(default=None, description="Since last reboot.")
    ecc_uncorrected_volatile: int | None = Field(default=None, description="Since last reboot.")
    ecc_corrected_aggregate: int | None = Field(default=None, description="Lifetime.")
    ecc_uncorrected_aggregate: int | None = Field(default=None, description="Lifetime.")
    remapped_rows_corrected: int | None = Field(default=None, description="Rows remapped (CE).")
    remapped_rows_uncorrected: int | None = Field(default=None, description="Rows remapped (UE).")
    remap_pending: bool | None = Field(default=None, description="A remap awaits a reset.")
    remap_failure: bool | None = Field(default=None, description="Row remapping failed.")
    retired_pages_sbe: int | None = Field(default=None, description="Pages retired (single-bit).")
    retired_pages_dbe: int | None = Field(default=None, description="Pages retired (double-bit).")
    retired_pages_pending: bool | None = Field(default=None, description="Retirement pending.")
    pcie_replays: int | None = Field(default=None, description="PCIe replay counter.")
    nvlink_errors: int | None = Field(
        default=None, description="NVLink error counters summed over links and kinds."
    )
    xids: list[int] = Field(default_factory=list, description="XID events since the last round.")
    recovery_action: str | None = Field(
        default=None, description="The driver's recovery action (none/reset/reboot/drain)."
    )
    unsupported: list[str] = Field(
        default_factory=list, description="Fields this GPU or driver reports as NOT_SUPPORTED."
    )
    errors: dict[str, str] = Field(
        default_factory=dict, description="Fields whose read failed otherwise, with the error."
    )

    def health_sample(self, reset: bool = False) -> GpuSample:
        """The signals the health state machine judges."""
        thermal = None
        if self.clock_event_reasons is not None:
            thermal = "hw_thermal_slowdown" in self.clock_event_reasons
        return GpuSample(
            time=self.time,
            present=self.present,
            xids=list(self.xids),
            corrected_ecc=self.ecc_corrected_aggregate
            if self.ecc_corrected_aggregate is not None
            else self.ecc_corrected_volatile,
            uncorrected_ecc=self.ecc_uncorrected_volatile,
            remap_pending=self.remap_pending,
            remap_failure=self.remap_failure,
            pcie_replays=self.pcie_replays,
            nvlink_errors=self.nvlink_errors,
            thermal_slowdown=thermal,
            reset=reset,
        )
