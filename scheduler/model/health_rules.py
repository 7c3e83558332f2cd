"""GPU health rules as data: which signals make a GPU suspect, degraded or failed, and what it
takes to come back. Part of the PackingPolicy (`health`), so a cluster tunes them like any
other setting. Defaults follow docs/power-and-health.md (NVIDIA's XID guidance)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scheduler.model import limits as lim
from scheduler.model.base import Wire

Xids = list[Annotated[int, Field(ge=0, le=lim.MAX_COUNT)]]


class HealthRules(Wire):
    ignored_xids: Xids = Field(
        default_factory=lambda: [13, 31, 43, 45, 68, 109],
        description="Application errors, not hardware health: never change a GPU's state.",
    )
    fatal_xids: Xids = Field(
        default_factory=lambda: [48, 64, 79, 95, 119, 120],
        description="Fail the GPU at once (double-bit ECC, remap failure, fell off the bus, "
        "uncontained ECC, GSP errors).",
    )
    degrading_xids: Xids = Field(
        default_factory=lambda: [74, 92, 94],
        description="Degrade the GPU at once: drain it (NVLink error, high single-bit ECC rate, "
        "contained ECC).",
    )
    counted_xids: Xids = Field(
        default_factory=lambda: [63],
        description="Counted, not acted on alone (a retired page or remapped row): "
        "countedXidsToDegrade of them within rateWindowSeconds degrade the GPU.",
    )
    counted_xids_to_degrade: int = Field(
        default=3,
        ge=1,
        le=lim.MAX_COUNT,
        description="How many counted XIDs in the window degrade the GPU.",
    )
    rate_window_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=lim.MAX_SECONDS,
        description="Window over which counter rates are measured.",
    )
    corrected_ecc_suspect_per_hour: float = Field(
        default=10.0,
        ge=0,
        le=lim.MAX_COUNT,
        description="Corrected ECC errors per hour that make a GPU suspect.",
    )
    corrected_ecc_degrade_per_hour: float = Field(
        default=100.0,
        ge=0,
        le=lim.MAX_COUNT,
        description="Corrected ECC errors per hour that degrade a GPU.",
    )
    pcie_replays_suspect_per_hour: float = Field(
        default=100.0,
        ge=0,
        le=lim.MAX_COUNT,
        description="PCIe replays per hour that make a GPU suspect.",
    )
    nvlink_errors_suspect_per_hour: float = Field(
        default=10.0,
        ge=0,
        le=lim.MAX_COUNT,
        description="NVLink error-counter increments per hour: suspect.",
    )
    thermal_slowdown_samples: int = Field(
        default=5,
        ge=1,
        le=lim.MAX_COUNT,
        description="Consecutive samples in hardware thermal slowdown that make a GPU suspect.",
    )
    confirm_samples: int = Field(
        default=2,
        ge=1,
        le=lim.MAX_COUNT,
        description="Hysteresis: a rate over its threshold must hold for this many samples in "
        "a row before it counts, so one noisy sample does not flap a GPU.",
    )
    lemon_after: int | None = Field(
        default=3,
        ge=1,
        le=lim.MAX_COUNT,
        description="A GPU that went degraded or failed this many times within lemonWindowSeconds "
        "is a lemon: it stays degraded (no new work; its pods migrate) until that long has "
        "passed since the last time, resets and clean windows notwithstanding. null = off.",
    )
    lemon_window_seconds: float = Field(
        default=7 * 86400.0,
        gt=0,
        le=lim.MAX_SECONDS,
        description="The window lemonAfter counts in, and how long a lemon is kept out after "
        "its last fall.",
    )
    clean_window_seconds: float = Field(
        default=3600.0,
        ge=0,
        le=lim.MAX_SECONDS,
        description="A GPU steps back to healthy only after this long without any finding; a "
        "degraded or failed one also needs a reset first.",
    )
