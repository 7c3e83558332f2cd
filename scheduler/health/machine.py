"""The per-GPU health state machine: samples in, a state with reasons out.

healthy -> suspect (early signs) -> degraded (drain it) -> failed (fatal). A GPU moves up at
once on a fatal or degrading event, and on a noisy signal (a counter rate, thermal slowdown) only
once it held for several samples (hysteresis). It steps back to healthy only after
`cleanWindowSeconds` without any finding, and from degraded or failed only after a reset too.
Pure: the caller owns the clock, the samples and the logging of changes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from scheduler.health.sample import GpuSample
from scheduler.model import GpuHealth, HealthState
from scheduler.model.health_rules import HealthRules

_RANK = {
    HealthState.HEALTHY: 0,
    HealthState.SUSPECT: 1,
    HealthState.DEGRADED: 2,
    HealthState.FAILED: 3,
}
_COUNTERS = ("corrected_ecc", "pcie_replays", "nvlink_errors")


@dataclass(frozen=True)
class Finding:
    state: HealthState
    reason: str


@dataclass(frozen=True)
class GpuTrack:
    """What the machine remembers of one GPU between samples."""

    state: HealthState = HealthState.HEALTHY
    reasons: tuple[str, ...] = ()
    since: float | None = None  # when it entered the state
    last_finding: float | None = None
    reset_at: float | None = None
    # (time, counter values) of the samples within the rate window, oldest first
    history: tuple[tuple[float, tuple[int | None, ...]], ...] = ()
    counted: tuple[float, ...] = ()  # times of counted XIDs within the window
    hot_samples: int = 0  # consecutive samples in thermal slowdown
    last_uncorrected: int | None = None
    falls: tuple[float, ...] = ()  # times it went degraded or failed, within the lemon window

    def as_gpu_health(self, index: int) -> GpuHealth:
        return GpuHealth(index=index, state=self.state, reasons=list(self.reasons))


def _window(track: GpuTrack, s: GpuSample, rules: HealthRules) -> GpuTrack:
    """The history with this sample added and what fell out of the window dropped. A counter
    that went down was cleared (a reset, a driver reload): its history starts again."""
    values = tuple(getattr(s, c) for c in _COUNTERS)
    history = list(track.history)
    if history and any(
        v is not None and old is not None and v < old
        for v, old in zip(values, history[-1][1], strict=True)
    ):
        history = []
    history.append((s.time, values))
    start = s.time - rules.rate_window_seconds
    history = [h for h in history if h[0] >= start]
    counted = tuple(t for t in track.counted if t >= start)
    counted += tuple(s.time for x in s.xids if x in rules.counted_xids)
    return replace(track, history=tuple(history), counted=counted)


def _rising(track: GpuTrack, i: int, per_hour: float, rules: HealthRules) -> int | None:
    """The counter's rise over the window if it reaches the threshold and rose in at least
    confirmSamples samples (one burst is noise); else None."""
    values: list[int] = [v[i] for _, v in track.history if v[i] is not None]  # type: ignore[misc]
    if len(values) < 2:
        return None
    rise = values[-1] - values[0]
    rises = sum(1 for a, b in itertools.pairwise(values) if b > a)
    needed = per_hour * rules.rate_window_seconds / 3600
    if rise >= needed and rise > 0 and rises >= rules.confirm_samples:
        return rise
    return None


def findings(track: GpuTrack, s: GpuSample, rules: HealthRules) -> list[Finding]:
    """What this sample (with the window behind it) says about the GPU."""
    out: list[Finding] = []
    if not s.present:
        out.append(Finding(HealthState.FAILED, "GPU not reachable through NVML"))
        return out
    for x in s.xids:
        if x in rules.ignored_xids or x in rules.counted_xids:
            continue
        if x in rules.fatal_xids:
            out.append(Finding(HealthState.FAILED, f"XID {x}"))
        elif x in rules.degrading_xids:
            out.append(Finding(HealthState.DEGRADED, f"XID {x}"))
        else:
            out.append(Finding(HealthState.SUSPECT, f"XID {x} (not classified)"))
    if len(track.counted) >= rules.counted_xids_to_degrade:
        out.append(
            Finding(
                HealthState.DEGRADED, f"{len(track.counted)} page/row retirement XIDs in window"
            )
        )
    if s.remap_failure:
        out.append(Finding(HealthState.FAILED, "row remapping failed"))
    if s.remap_pending:
        out.append(Finding(HealthState.SUSPECT, "row remap pending (needs a reset)"))
    if (
        s.uncorrected_ecc is not None
        and track.last_uncorrected is not None
        and s.uncorrected_ecc > track.last_uncorrected
    ):
        rise = s.uncorrected_ecc - track.last_uncorrected
        out.append(Finding(HealthState.DEGRADED, f"uncorrected ECC errors +{rise}"))
    hour = f"in {rules.rate_window_seconds:g} s"
    if (rise := _rising(track, 0, rules.corrected_ecc_degrade_per_hour, rules)) is not None:
        out.append(Finding(HealthState.DEGRADED, f"corrected ECC errors +{rise} {hour}"))
    elif (rise := _rising(track, 0, rules.corrected_ecc_suspect_per_hour, rules)) is not None:
        out.append(Finding(HealthState.SUSPECT, f"corrected ECC errors +{rise} {hour}"))
    if (rise := _rising(track, 1, rules.pcie_replays_suspect_per_hour, rules)) is not None:
        out.append(Finding(HealthState.SUSPECT, f"PCIe replays +{rise} {hour}"))
    if (rise := _rising(track, 2, rules.nvlink_errors_suspect_per_hour, rules)) is not None:
        out.append(Finding(HealthState.SUSPECT, f"NVLink errors +{rise} {hour}"))
    if track.hot_samples >= rules.thermal_slowdown_samples:
        out.append(
            Finding(HealthState.SUSPECT, f"thermal slowdown for {track.hot_samples} samples")
        )
    return out


def step(track: GpuTrack, s: GpuSample, rules: HealthRules) -> GpuTrack:
    """The GPU's track after one more sample."""
    if s.reset:
        track = replace(track, reset_at=s.time, history=(), hot_samples=0)
    track = _window(track, s, rules)
    track = replace(track, hot_samples=track.hot_samples + 1 if s.thermal_slowdown else 0)
    found = findings(track, s, rules)
    if s.uncorrected_ecc is not None:
        track = replace(track, last_uncorrected=s.uncorrected_ecc)
    if found:
        track = replace(track, last_finding=s.time)
    level = max((f.state for f in found), key=_RANK.__getitem__, default=HealthState.HEALTHY)
    falls = tuple(t for t in track.falls if t > s.time - rules.lemon_window_seconds)
    if _RANK[level] > _RANK[track.state]:
        reasons = tuple(f.reason for f in found if f.state == level)
        if _RANK[level] >= _RANK[HealthState.DEGRADED] > _RANK[track.state]:
            falls += (s.time,)
        return replace(track, state=level, reasons=reasons, since=s.time, falls=falls)
    track = replace(track, falls=falls)
    if _RANK[level] == _RANK[track.state] and found and level != HealthState.HEALTHY:
        return replace(track, reasons=tuple(f.reason for f in found if f.state == level))
    if track.state != HealthState.HEALTHY and _recovered(track, s.time, rules):
        if _lemon(track, rules):
            # Healthy again by the usual rules, but it has fallen too often: kept out.
            reason = _lemon_reason(track, rules)
            return replace(track, state=HealthState.DEGRADED, reasons=(reason,))
        return replace(track, state=HealthState.HEALTHY, reasons=(), since=s.time)
    return track


def _lemon(track: GpuTrack, rules: HealthRules) -> bool:
    return rules.lemon_after is not None and len(track.falls) >= rules.lemon_after


def _lemon_reason(track: GpuTrack, rules: HealthRules) -> str:
    until = track.falls[-1] + rules.lemon_window_seconds
    return (
        f"lemon: degraded or failed {len(track.falls)} times in "
        f"{rules.lemon_window_seconds:g} s; kept out until t={until:g}"
    )


def _recovered(track: GpuTrack, now: float, rules: HealthRules) -> bool:
    quiet_since = track.last_finding if track.last_finding is not None else track.since or now
    if track.state in (HealthState.DEGRADED, HealthState.FAILED):
        if track.reset_at is None or track.reset_at < (track.since or 0):
            return False  # degraded or failed: only a reset brings it back
        quiet_since = max(quiet_since, track.reset_at)
    return now - quiet_since >= rules.clean_window_seconds
