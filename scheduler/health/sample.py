"""One round of health signals for one GPU, as the node agent reads them through NVML."""

from __future__ import annotations

from pydantic import Field

from scheduler.model.base import Wire


class GpuSample(Wire):
    """Counters are cumulative; None = the GPU or driver does not report the field."""

    time: float = Field(description="When it was read, seconds (any fixed origin).")
    present: bool = Field(
        default=True, description="false = NVML could not reach the GPU (fell off, no driver)."
    )
    xids: list[int] = Field(default_factory=list, description="XID events since the last round.")
    corrected_ecc: int | None = Field(default=None, ge=0, description="Corrected ECC errors.")
    uncorrected_ecc: int | None = Field(default=None, ge=0, description="Uncorrected ECC errors.")
    remap_pending: bool | None = Field(default=None, description="A row remap awaits a reset.")
    remap_failure: bool | None = Field(default=None, description="Row remapping has failed.")
    pcie_replays: int | None = Field(default=None, ge=0, description="PCIe replay counter.")
    nvlink_errors: int | None = Field(
        default=None, ge=0, description="NVLink error counters, summed over links and kinds."
    )
    thermal_slowdown: bool | None = Field(
        default=None, description="Hardware thermal slowdown is active (a clock-event reason)."
    )
    reset: bool = Field(default=False, description="The GPU was reset since the last round.")
