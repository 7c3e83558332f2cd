"""The agent's Prometheus metrics: wattpack_gpu_* per GPU (labels node, gpu, uuid, model), its
health state and the pods on it, and the agent's own rounds.

dcgm-exporter's DCGM_FI_* names come only with `dcgm_names` (--dcgm-names): a cluster that runs
the GPU Operator's dcgm-exporter already has them, and would get every series twice. They are
typed gauge there, as their sample names must stay exactly dcgm-exporter's (a counter's sample
would gain a _total suffix).

A collector, not module-level metrics: each scrape renders the latest round, and a GPU that
vanished is still shown (failed) instead of silently dropping out.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from operators.agent.rounds import AgentGpu, AgentRound
from scheduler.model import HealthState

LABELS = ["node", "gpu", "uuid", "model"]
_MIB = 2**20

# (name, help, reading field, scale to the base unit)
_GAUGES = (
    (
        "wattpack_gpu_utilization_ratio",
        "Time the GPU was busy (0..1).",
        "utilization_gpu_pct",
        0.01,
    ),
    (
        "wattpack_gpu_memory_utilization_ratio",
        "Time the GPU memory was read or written (0..1).",
        "utilization_memory_pct",
        0.01,
    ),
    ("wattpack_gpu_memory_used_bytes", "GPU memory in use.", "memory_used_mib", _MIB),
    ("wattpack_gpu_memory_total_bytes", "GPU memory in all.", "memory_total_mib", _MIB),
    ("wattpack_gpu_power_watts", "Power draw.", "power_mw", 1e-3),
    ("wattpack_gpu_power_limit_watts", "Enforced power limit.", "power_limit_mw", 1e-3),
    ("wattpack_gpu_temperature_celsius", "GPU temperature.", "temperature_c", 1),
)
# (name without _total, help, extra label or "", [(its value, reading field, scale)]):
# cumulative counts NVML keeps (since the driver loaded, or for the GPU's life).
_COUNTERS = (
    ("wattpack_gpu_energy_joules", "Energy used since the driver loaded.", "",
     [("", "energy_mj", 1e-3)]),
    ("wattpack_gpu_ecc_errors", "ECC errors in the GPU's life, by severity.", "severity",
     [("corrected", "ecc_corrected_aggregate", 1),
      ("uncorrected", "ecc_uncorrected_aggregate", 1)]),
    ("wattpack_gpu_ecc_volatile_errors", "ECC errors since the driver loaded, by severity.",
     "severity", [("corrected", "ecc_corrected_volatile", 1),
                  ("uncorrected", "ecc_uncorrected_volatile", 1)]),
    ("wattpack_gpu_remapped_rows", "Memory rows remapped, by the errors' severity.", "severity",
     [("corrected", "remapped_rows_corrected", 1),
      ("uncorrected", "remapped_rows_uncorrected", 1)]),
    ("wattpack_gpu_retired_pages", "Memory pages retired, by cause.", "cause",
     [("single_bit_ecc", "retired_pages_sbe", 1), ("double_bit_ecc", "retired_pages_dbe", 1)]),
    ("wattpack_gpu_pcie_replays", "PCIe replays.", "", [("", "pcie_replays", 1)]),
    ("wattpack_gpu_nvlink_errors", "NVLink errors, all links and kinds.", "",
     [("", "nvlink_errors", 1)]),
)  # fmt: skip
# --dcgm-names: (dcgm-exporter's name, help, reading field, scale to its unit)
_DCGM = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization_gpu_pct", 1),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "utilization_memory_pct", 1),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory_used_mib", 1),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_mw", 1e-3),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy since boot (in mJ).", "energy_mj", 1),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Enforced power limit (in W).", "power_limit_mw", 1e-3),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c", 1),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Volatile single-bit ECC errors.",
     "ecc_corrected_volatile", 1),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Volatile double-bit ECC errors.",
     "ecc_uncorrected_volatile", 1),
    ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Aggregate single-bit ECC errors.",
     "ecc_corrected_aggregate", 1),
    ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Aggregate double-bit ECC errors.",
     "ecc_uncorrected_aggregate", 1),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Rows remapped for correctable errors.",
     "remapped_rows_corrected", 1),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Rows remapped for uncorrectable errors.",
     "remapped_rows_uncorrected", 1),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "PCIe replays.", "pcie_replays", 1),
    ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "NVLink errors, all kinds.",
     "nvlink_errors", 1),
)  # fmt: skip
_STATES = [s.value for s in HealthState]


class RoundCollector(Collector):
    def __init__(self, node: str, dcgm_names: bool = False) -> None:
        self.node = node
        self.dcgm_names = dcgm_names
        self.latest: AgentRound | None = None
        self._lock = threading.Lock()
        self._rounds = 0
        self._last_round_at = 0.0
        self._xids: dict[tuple[str, ...], Counter[int]] = {}  # GPU labels -> XID -> count

    def observe(self, round_: AgentRound) -> None:
        """A round read: what the next scrape shows, and the XIDs it brought counted."""
        with self._lock:
            for gpu in round_.gpus:
                if gpu.reading.xids:
                    counts = self._xids.setdefault(tuple(_labels(round_, gpu)), Counter())
                    counts.update(gpu.reading.xids)
            self._rounds += 1
            self._last_round_at = time.time()
            self.latest = round_

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            r, rounds, last = self.latest, self._rounds, self._last_round_at
            xids = {k: dict(v) for k, v in self._xids.items()}
        agent = CounterMetricFamily("wattpack_agent_rounds", "Rounds read.", labels=["node"])
        agent.add_metric([self.node], rounds)
        yield agent
        if r is None:
            return
        when = GaugeMetricFamily(
            "wattpack_agent_last_round_timestamp_seconds",
            "When the last round was read (Unix time).",
            labels=["node"],
        )
        when.add_metric([self.node], last)
        yield when
        for name, help_text, field, scale in _GAUGES:
            yield _family(GaugeMetricFamily(name, help_text, labels=LABELS), r, field, scale)
        for name, help_text, extra, fields in _COUNTERS:
            c = CounterMetricFamily(name, help_text, labels=[*LABELS, extra] if extra else LABELS)
            for gpu in r.gpus:
                for label, field, scale in fields:
                    value = getattr(gpu.reading, field)
                    if value is not None:
                        tail = [label] if extra else []
                        c.add_metric([*_labels(r, gpu), *tail], float(value) * scale)
            yield c
        xid = CounterMetricFamily(
            "wattpack_gpu_xid_errors",
            "XID events the agent saw since it started, by XID.",
            labels=[*LABELS, "xid"],
        )
        for labels, counts in sorted(xids.items()):
            for code, n in sorted(counts.items()):
                xid.add_metric([*labels, str(code)], n)
        yield xid
        yield from self._wattpack(r)
        if self.dcgm_names:
            for name, help_text, field, scale in _DCGM:
                yield _family(GaugeMetricFamily(name, help_text, labels=LABELS), r, field, scale)

    def _wattpack(self, r: AgentRound) -> Iterator[Metric]:
        health = GaugeMetricFamily(
            "wattpack_gpu_health",
            "1 for the GPU's current health state (healthy, suspect, degraded, failed).",
            labels=[*LABELS, "state"],
        )
        unsupported = GaugeMetricFamily(
            "wattpack_gpu_field_unsupported",
            "1 for each NVML field this GPU reports as not supported.",
            labels=[*LABELS, "field"],
        )
        clocks = GaugeMetricFamily(
            "wattpack_gpu_clock_event_active",
            "1 for each clock-event (throttle) reason active on the GPU.",
            labels=[*LABELS, "reason"],
        )
        # An info metric, not pod labels on every series as dcgm-exporter has them: a shared
        # GPU holds several pods, and a gauge's series would break each time its pod changes.
        pods = GaugeMetricFamily(
            "wattpack_gpu_pod_info",
            "1 for each pod holding the GPU (the kubelet's PodResources API).",
            labels=[*LABELS, "namespace", "pod"],
        )
        for gpu in r.gpus:
            labels = _labels(r, gpu)
            for state in _STATES:
                health.add_metric([*labels, state], float(gpu.health.state.value == state))
            for field in gpu.reading.unsupported:
                unsupported.add_metric([*labels, field], 1.0)
            for reason in gpu.reading.clock_event_reasons or []:
                clocks.add_metric([*labels, reason], 1.0)
            for holder in gpu.pods:
                namespace, _, pod = holder.partition("/")
                pods.add_metric([*labels, namespace, pod], 1.0)
        yield from (health, unsupported, clocks, pods)


def _family(family: GaugeMetricFamily, r: AgentRound, field: str, scale: float) -> Metric:
    for gpu in r.gpus:
        value = getattr(gpu.reading, field)
        if value is not None:
            family.add_metric(_labels(r, gpu), float(value) * scale)
    return family


def _labels(r: AgentRound, gpu: AgentGpu) -> list[str]:
    rd = gpu.reading
    return [r.node, str(rd.index), rd.uuid or "", rd.name or ""]
