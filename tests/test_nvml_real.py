"""The real NVML backend's own logic, on machines with or without a GPU (CI has none).

No fake NVML here: the constructor test talks to whatever NVML this machine has, and the rest
feed our helpers the exceptions and ctypes values pynvml itself produces."""

from __future__ import annotations

import pynvml
import pytest

from operators.nvml.reading import GpuReading
from operators.nvml.real import (
    CLOCK_EVENT_BITS,
    NvmlBackend,
    NvmlCallFailed,
    NvmlUnavailable,
    _Reader,
    decode_clock_event_reasons,
    field_value,
    recovery_action_name,
)


def _raise(code: int):
    def fn():
        raise pynvml.NVMLError(code)

    return fn


# The backend on this machine ----------------------------------------------------------------


def test_backend_starts_only_where_a_driver_is() -> None:
    """Without a driver (this machine, CI) construction fails with a one-line message that
    names the NVML error and what to check; with one, it lists GPUs and reads GPU 0."""
    try:
        backend = NvmlBackend()
    except NvmlUnavailable as e:
        message = str(e)
        assert "\n" not in message
        assert "NVMLError_" in message  # the cause, e.g. NVMLError_LibraryNotFound
        assert "is the NVIDIA driver loaded and the device mounted into the container?" in message
        assert e.reason in message
        return
    try:
        assert backend.count() >= 1
        reading = backend.read(0, now=1.0)
        assert isinstance(reading, GpuReading)
        assert reading.index == 0 and reading.time == 1.0
        assert reading.present, reading.errors
        assert reading.uuid and reading.uuid.startswith(("GPU-", "MIG-"))
        assert reading.memory_total_mib is None or reading.memory_total_mib > 0
        assert not set(reading.unsupported) & set(reading.errors)
    finally:
        backend.close()
        backend.close()  # twice is fine


def test_unavailable_message_names_the_nvml_error() -> None:
    e = NvmlUnavailable.from_error(pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert str(e) == (
        "NVML is unavailable: nvmlInit failed with NVMLError_DriverNotLoaded (Driver Not Loaded);"
        " is the NVIDIA driver loaded and the device mounted into the container?"
    )
    assert isinstance(e, Exception)


def test_call_failed_carries_the_code() -> None:
    e = NvmlCallFailed("nvmlDeviceGetCount", pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION))
    assert e.code == pynvml.NVML_ERROR_NO_PERMISSION
    assert "NVMLError_NoPermission" in str(e) and "nvmlDeviceGetCount" in str(e)


# The field helper ---------------------------------------------------------------------------


def test_pynvml_maps_codes_to_subclasses() -> None:
    """What the helper relies on: NVMLError(code) builds the code's own subclass."""
    err = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert isinstance(err, pynvml.NVMLError_NotSupported)
    assert err.value == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_field_returns_the_value() -> None:
    r = _Reader()
    assert r._field("power_mw", lambda: 312_000) == 312_000
    assert r._field("remap_pending", lambda: False) is False
    assert r.unsupported == [] and r.errors == {} and not r.lost


def test_not_supported_lands_in_unsupported() -> None:
    r = _Reader()
    assert r._field("nvlink_errors", _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)) is None

    def subclass_raised() -> int:
        raise pynvml.NVMLError_NotSupported()

    assert r._field("pcie_replays", subclass_raised) is None
    assert r.unsupported == ["nvlink_errors", "pcie_replays"]
    assert r.errors == {}


def test_function_not_found_counts_as_unsupported() -> None:
    r = _Reader()
    assert r._field("recovery_action", _raise(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)) is None
    assert r.unsupported == ["recovery_action"] and r.errors == {}


def test_other_errors_land_in_errors() -> None:
    r = _Reader()
    assert r._field("temperature_c", _raise(pynvml.NVML_ERROR_UNKNOWN)) is None
    assert r._field("energy_mj", _raise(pynvml.NVML_ERROR_NO_PERMISSION)) is None
    assert r.errors == {"temperature_c": "Unknown Error", "energy_mj": "Insufficient Permissions"}
    assert r.unsupported == [] and not r.lost


def test_gpu_is_lost_marks_the_reading_lost() -> None:
    r = _Reader()
    assert r._field("uuid", _raise(pynvml.NVML_ERROR_GPU_IS_LOST)) is None
    assert r.lost and r.errors == {"uuid": "GPU is lost"}


def test_a_bug_in_a_conversion_never_raises() -> None:
    r = _Reader()
    assert r._field("memory_total_mib", lambda: 1 // 0) is None
    assert r.errors["memory_total_mib"].startswith("ZeroDivisionError")


def test_one_call_for_several_fields() -> None:
    names = ("utilization_gpu_pct", "utilization_memory_pct")
    r = _Reader()
    assert r._fields(names, lambda: (97, 40)) == (97, 40)
    assert r._fields(names, _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)) == (None, None)
    assert r.unsupported == list(names)
    assert r._fields(names, _raise(pynvml.NVML_ERROR_UNKNOWN)) == (None, None)
    assert r.errors == dict.fromkeys(names, "Unknown Error")
    assert r._fields(names, lambda: (1,)) == (None, None)  # wrong arity is a bug, recorded


# Decoding -----------------------------------------------------------------------------------


def test_clock_events_hw_thermal() -> None:
    mask = pynvml.nvmlClocksEventReasonHwThermalSlowdown
    assert decode_clock_event_reasons(mask) == ["hw_thermal_slowdown"]
    assert pynvml.nvmlClocksThrottleReasonHwThermalSlowdown == mask  # older name, same bit


def test_clock_events_none() -> None:
    assert decode_clock_event_reasons(0) == []


def test_clock_events_several_and_unknown_bits() -> None:
    mask = (
        pynvml.nvmlClocksEventReasonGpuIdle
        | pynvml.nvmlClocksEventReasonSwPowerCap
        | pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown
        | (1 << 40)
    )
    assert decode_clock_event_reasons(mask) == [
        "gpu_idle",
        "sw_power_cap",
        "hw_power_brake_slowdown",
        "unknown_0x10000000000",
    ]


def test_clock_event_table_has_the_documented_names() -> None:
    names = {name for name, _ in CLOCK_EVENT_BITS}
    assert {
        "gpu_idle",
        "applications_clocks_setting",
        "sw_power_cap",
        "hw_slowdown",
        "sync_boost",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
        "display_clock_setting",
    } <= names
    bits = [bit for _, bit in CLOCK_EVENT_BITS]
    assert len(set(bits)) == len(bits)  # one name per bit


def test_the_health_sample_sees_thermal_slowdown() -> None:
    mask = pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonSwPowerCap
    reading = GpuReading(time=0, index=0, clock_event_reasons=decode_clock_event_reasons(mask))
    assert reading.health_sample().thermal_slowdown is True
    idle = GpuReading(time=0, index=0, clock_event_reasons=decode_clock_event_reasons(0))
    assert idle.health_sample().thermal_slowdown is False


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (pynvml.NVML_GPU_RECOVERY_ACTION_NONE, "none"),
        (pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET, "reset"),
        (pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT, "reboot"),
        (pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_P2P, "drain"),
        (pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET, "drain_and_reset"),
        (99, "unknown_99"),
    ],
)
def test_recovery_action_names(value: int, name: str) -> None:
    assert recovery_action_name(value) == name


def test_field_value_reads_the_typed_union() -> None:
    fv = pynvml.c_nvmlFieldValue_t()
    fv.nvmlReturn = pynvml.NVML_SUCCESS
    fv.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    fv.value.uiVal = pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT
    assert field_value(fv) == pynvml.NVML_GPU_RECOVERY_ACTION_NODE_REBOOT
    fv.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    fv.value.ullVal = 2**40
    assert field_value(fv) == 2**40


def test_field_value_raises_its_own_return_code() -> None:
    fv = pynvml.c_nvmlFieldValue_t()
    fv.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
    r = _Reader()
    assert r._field("recovery_action", lambda: field_value(fv)) is None
    assert r.unsupported == ["recovery_action"]
