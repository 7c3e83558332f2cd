"""The GPU health state machine, driven through scenarios: samples in, a state with reasons out."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from scheduler.health import GpuSample, GpuTrack, step
from scheduler.model import HealthState, PackingPolicy
from scheduler.model.health_rules import HealthRules

RULES = PackingPolicy().health
H, S, D, F = HealthState.HEALTHY, HealthState.SUSPECT, HealthState.DEGRADED, HealthState.FAILED


def run(samples: Iterable[GpuSample], rules: HealthRules = RULES) -> list[GpuTrack]:
    track, out = GpuTrack(), []
    for s in samples:
        track = step(track, s, rules)
        out.append(track)
    return out


def quiet(t0: float, t1: float, every: float = 60.0, **fields) -> list[GpuSample]:
    n = int((t1 - t0) // every) + 1
    return [GpuSample(time=t0 + i * every, **fields) for i in range(n)]


@pytest.mark.parametrize("xid", [13, 31, 43, 45, 68, 109])
def test_application_xids_leave_health_alone(xid: int) -> None:
    states = [t.state for t in run([GpuSample(time=0), GpuSample(time=60, xids=[xid] * 5)])]
    assert states == [H, H]


@pytest.mark.parametrize("xid", [48, 79])
def test_xid_48_or_79_fails_the_gpu_at_once(xid: int) -> None:
    track = run([GpuSample(time=0), GpuSample(time=60, xids=[xid])])[-1]
    assert track.state == F and track.reasons == (f"XID {xid}",)


def test_a_pending_row_remap_makes_it_suspect() -> None:
    track = run([GpuSample(time=0, remap_pending=False), GpuSample(time=60, remap_pending=True)])[
        -1
    ]
    assert track.state == S and "row remap pending" in track.reasons[0]


def test_a_row_remap_failure_or_a_lost_gpu_fails_it() -> None:
    assert run([GpuSample(time=0, remap_failure=True)])[-1].state == F
    lost = run([GpuSample(time=0), GpuSample(time=60, present=False)])[-1]
    assert lost.state == F and "not reachable" in lost.reasons[0]


def test_a_corrected_ecc_rate_over_threshold_degrades_it() -> None:
    # 40 corrected errors a minute for five minutes: 200 in the hour, over the 100/h threshold.
    samples = [GpuSample(time=60 * i, corrected_ecc=40 * i) for i in range(6)]
    states = [t.state for t in run(samples)]
    assert states[-1] == D
    assert S in states or states.index(D) >= 2  # it took more than one sample to get there


def test_a_slow_corrected_ecc_rise_only_makes_it_suspect() -> None:
    samples = [GpuSample(time=300 * i, corrected_ecc=2 * i) for i in range(13)]  # 24 in an hour
    track = run(samples)[-1]
    assert track.state == S and "corrected ECC" in track.reasons[0]


def test_a_single_noisy_sample_does_not_flap_it() -> None:
    # One burst of 500 corrected errors, then nothing; one sample of thermal slowdown.
    samples = [GpuSample(time=0, corrected_ecc=0), GpuSample(time=60, corrected_ecc=500)]
    samples += [GpuSample(time=60 * i, corrected_ecc=500) for i in range(2, 10)]
    samples += [GpuSample(time=600, corrected_ecc=500, thermal_slowdown=True)]
    samples += [GpuSample(time=660, corrected_ecc=500, thermal_slowdown=False)]
    assert {t.state for t in run(samples)} == {H}


def test_sustained_thermal_slowdown_makes_it_suspect() -> None:
    samples = quiet(0, 600, thermal_slowdown=True)
    states = [t.state for t in run(samples)]
    first = states.index(S)
    assert first == RULES.thermal_slowdown_samples - 1


def test_rising_pcie_replays_or_nvlink_errors_make_it_suspect() -> None:
    pcie = [GpuSample(time=60 * i, pcie_replays=30 * i) for i in range(6)]
    assert run(pcie)[-1].state == S
    nvlink = [GpuSample(time=60 * i, nvlink_errors=5 * i) for i in range(4)]
    assert run(nvlink)[-1].state == S


def test_uncorrected_ecc_and_repeated_retirements_degrade_it() -> None:
    ecc = run([GpuSample(time=0, uncorrected_ecc=0), GpuSample(time=60, uncorrected_ecc=1)])
    assert ecc[-1].state == D
    xid63 = run([GpuSample(time=60 * i, xids=[63]) for i in range(3)])
    assert [t.state for t in xid63] == [H, H, D]


def test_suspect_recovers_only_after_a_clean_window() -> None:
    samples = [GpuSample(time=0, remap_pending=True)]
    samples += quiet(60, 60 + RULES.clean_window_seconds)
    tracks = run(samples)
    healthy_at = next(t.since for t in tracks if t.state == H and t.since)
    assert healthy_at == pytest.approx(RULES.clean_window_seconds)  # not a sample sooner


def test_failed_needs_a_reset_and_then_a_clean_window() -> None:
    window = RULES.clean_window_seconds
    samples = [GpuSample(time=0, xids=[79])]
    samples += quiet(60, 3 * window)  # quiet for hours, but never reset: stays failed
    assert run(samples)[-1].state == F
    samples += [GpuSample(time=3 * window + 60, reset=True)]
    samples += quiet(3 * window + 120, 4 * window + 120)
    tracks = run(samples)
    back = next(t for t in tracks if t.state == H and t.since)
    assert back.since == pytest.approx(4 * window + 60)  # a clean window after the reset


def test_a_finding_during_the_clean_window_starts_it_again() -> None:
    window = RULES.clean_window_seconds
    samples = [GpuSample(time=0, xids=[48]), GpuSample(time=60, reset=True)]
    samples += quiet(120, window / 2)
    samples += [GpuSample(time=window / 2 + 60, remap_pending=True)]
    samples += quiet(window / 2 + 120, window + 120)
    assert run(samples)[-1].state == F  # the pending remap at half-window reset the clock


def test_rules_are_data_in_the_policy() -> None:
    strict = PackingPolicy.model_validate({"health": {"fatalXids": [13], "ignoredXids": []}})
    assert run([GpuSample(time=0, xids=[13])], strict.health)[-1].state == F
    unknown = run([GpuSample(time=0, xids=[999])])[-1]
    assert unknown.state == S and "not classified" in unknown.reasons[0]


def test_the_track_reads_as_snapshot_health() -> None:
    track = run([GpuSample(time=0, xids=[48])])[-1]
    health = track.as_gpu_health(3)
    assert health.index == 3 and health.state == F and health.reasons == ["XID 48"]


def _falls(times: int, start: float, window: float) -> list[GpuSample]:
    """The GPU fails (XID 79), is reset a minute later and runs clean for a window and a bit,
    `times` times over."""
    samples: list[GpuSample] = []
    t = start
    for _ in range(times):
        samples += [GpuSample(time=t, xids=[79]), GpuSample(time=t + 60, reset=True)]
        samples += quiet(t + 120, t + 120 + window + 120)
        t += window + 360
    return samples


def test_a_gpu_that_falls_again_and_again_is_kept_out_until_its_window_passes() -> None:
    rules = RULES.model_copy(update={"lemon_window_seconds": 8 * 3600.0})
    window = rules.clean_window_seconds
    samples = _falls(3, 0.0, window)
    tracks = run(samples, rules)
    # The first two times it came back after a reset and a clean window; the third, not.
    assert [t.state for t in tracks].count(H) > 0
    last = tracks[-1]
    assert last.state == D and last.reasons[0].startswith("lemon: degraded or failed 3 times")
    third = samples[-1].time - window - 240  # when it fell the third time (about)
    later = quiet(samples[-1].time + 60, third + rules.lemon_window_seconds + window)
    after = run(samples + later, rules)
    assert after[-1].state == H  # the window since the last fall passed: back in service
    held = [t for t in after[len(samples) :] if t.state == D]
    assert held and all(t.reasons[0].startswith("lemon") for t in held)


def test_two_falls_or_the_rule_off_leave_the_usual_recovery() -> None:
    window = RULES.clean_window_seconds
    assert run(_falls(2, 0.0, window))[-1].state == H
    off = RULES.model_copy(update={"lemon_after": None})
    assert run(_falls(3, 0.0, window), off)[-1].state == H
