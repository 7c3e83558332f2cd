"""The agent's Prometheus metrics: the GPU gauges under the names dcgm-exporter uses, so
existing dashboards work, and the health state and pod attribution wattpack adds.

A collector, not module-level gauges: each scrape renders the latest round, and a GPU that
vanished is still shown (failed) instead of silently dropping out.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from operators.agent.rounds import AgentRound
from scheduler.model import HealthState

# (metric name, help, reading field, scale): dcgm-exporter's names and units.
_GAUGES = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization_gpu_pct", 1),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "utilization_memory_pct", 1),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory_used_mib", 1),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_mw", 1e-3),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        "energy_mj",
        1,
    ),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Enforced power limit (in W).", "power_limit_mw", 1e-3),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c", 1),
    (
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "Volatile single-bit ECC errors.",
        "ecc_corrected_volatile",
        1,
    ),
    (
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "Volatile double-bit ECC errors.",
        "ecc_uncorrected_volatile",
        1,
    ),
    (
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "Aggregate single-bit ECC errors.",
        "ecc_corrected_aggregate",
        1,
    ),
    (
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "Aggregate double-bit ECC errors.",
        "ecc_uncorrected_aggregate",
        1,
    ),
    (
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "Rows remapped for correctable errors.",
        "remapped_rows_corrected",
        1,
    ),
    (
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "Rows remapped for uncorrectable errors.",
        "remapped_rows_uncorrected",
        1,
    ),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "PCIe replays.", "pcie_replays", 1),
    (
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        "NVLink errors, all kinds.",
        "nvlink_errors",
        1,
    ),
)
_STATES = [s.value for s in HealthState]


class RoundCollector(Collector):
    def __init__(self) -> None:
        self.latest: AgentRound | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        r = self.latest
        if r is None:
            return
        labels = ["gpu", "UUID", "Hostname", "modelName"]
        for name, help_text, field, scale in _GAUGES:
            g = GaugeMetricFamily(name, help_text, labels=labels)
            for gpu in r.gpus:
                value = getattr(gpu.reading, field)
                if value is not None:
                    g.add_metric(_labels(r, gpu), float(value) * scale)
            yield g
        health = GaugeMetricFamily(
            "wattpack_gpu_health",
            "1 for the GPU's current health state (healthy, suspect, degraded, failed).",
            labels=[*labels, "state"],
        )
        for gpu in r.gpus:
            for state in _STATES:
                health.add_metric(
                    [*_labels(r, gpu), state], 1.0 if gpu.health.state.value == state else 0.0
                )
        yield health
        unsupported = GaugeMetricFamily(
            "wattpack_gpu_field_unsupported",
            "1 for each NVML field this GPU reports as not supported.",
            labels=[*labels, "field"],
        )
        for gpu in r.gpus:
            for field in gpu.reading.unsupported:
                unsupported.add_metric([*_labels(r, gpu), field], 1.0)
        yield unsupported
        # An info metric, not pod labels on every gauge as dcgm-exporter has them: a shared GPU
        # holds several pods, and a gauge's series would break each time its pod changes.
        pods = GaugeMetricFamily(
            "wattpack_gpu_pod_info",
            "1 for each pod holding the GPU (the kubelet's PodResources API).",
            labels=[*labels, "namespace", "pod"],
        )
        for gpu in r.gpus:
            for holder in gpu.pods:
                namespace, _, pod = holder.partition("/")
                pods.add_metric([*_labels(r, gpu), namespace, pod], 1.0)
        yield pods


def _labels(r: AgentRound, gpu) -> list[str]:  # type: ignore[no-untyped-def]
    rd = gpu.reading
    return [str(rd.index), rd.uuid or "", r.node, rd.name or ""]
