"""The real NVML backend: one GpuReading per GPU per round, XID events, and power caps.

The only module of the project that imports pynvml. Every NVML error stays in here: a field
that fails is None and named in `unsupported` (NOT_SUPPORTED) or `errors` (anything else), a
GPU that cannot be reached is `present=False`, and the calls that cannot degrade per field
(init, count, set_power_limit, the XID watch) raise this module's own exceptions, so callers
never need pynvml to catch them.

Units follow NVML: power in mW, energy in mJ (counter since the driver loaded), memory converted
from bytes to MiB. Strings may come back as bytes from older bindings and are decoded.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pynvml
import structlog

from operators.nvml.reading import GpuReading

log = structlog.get_logger(__name__)

T = TypeVar("T")

_MIB = 1024 * 1024
_CHECK_HINT = "is the NVIDIA driver loaded and the device mounted into the container?"

# Codes that mean "this GPU or driver has no such thing": the field goes to `unsupported`.
# FUNCTION_NOT_FOUND is a driver too old to export the call, which is the same answer.
_UNSUPPORTED_CODES = frozenset(
    {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
)
# The device fell off the bus or is otherwise unreachable: the reading is `present=False`.
_LOST_CODES = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST})

# Clock-event (formerly "throttle") reason bits, by our snake_case name. Current bindings name
# them nvmlClocksEventReason*, older ones nvmlClocksThrottleReason*; the bit values are the same.
# A name neither spelling defines in the installed bindings is left out.
_CLOCK_EVENT_NAMES: tuple[tuple[str, str], ...] = (
    ("gpu_idle", "GpuIdle"),
    ("applications_clocks_setting", "ApplicationsClocksSetting"),
    ("sw_power_cap", "SwPowerCap"),
    ("hw_slowdown", "HwSlowdown"),
    ("sync_boost", "SyncBoost"),
    ("sw_thermal_slowdown", "SwThermalSlowdown"),
    ("hw_thermal_slowdown", "HwThermalSlowdown"),
    ("hw_power_brake_slowdown", "HwPowerBrakeSlowdown"),
    ("display_clock_setting", "DisplayClockSetting"),
    ("board_limit", "BoardLimit"),
    ("reliability", "Reliability"),
)


def _clock_event_bits() -> tuple[tuple[str, int], ...]:
    bits = []
    for name, suffix in _CLOCK_EVENT_NAMES:
        bit = getattr(pynvml, f"nvmlClocksEventReason{suffix}", None)
        if bit is None:
            bit = getattr(pynvml, f"nvmlClocksThrottleReason{suffix}", None)
        if bit:
            bits.append((name, int(bit)))
    return tuple(bits)


CLOCK_EVENT_BITS = _clock_event_bits()

# NVML_FI_DEV_GET_GPU_RECOVERY_ACTION values (nvmlDeviceGpuRecoveryAction_t) by our name.
_RECOVERY_ACTIONS: tuple[tuple[str, str], ...] = (
    ("NVML_GPU_RECOVERY_ACTION_NONE", "none"),
    ("NVML_GPU_RECOVERY_ACTION_GPU_RESET", "reset"),
    ("NVML_GPU_RECOVERY_ACTION_NODE_REBOOT", "reboot"),
    ("NVML_GPU_RECOVERY_ACTION_DRAIN_P2P", "drain"),
    ("NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET", "drain_and_reset"),
    ("NVML_GPU_RECOVERY_ACTION_RECOVER_IMEX_DOMAIN", "recover_imex_domain"),
    ("NVML_GPU_RECOVERY_ACTION_BUS_RESET", "bus_reset"),
    ("NVML_GPU_RECOVERY_ACTION_SYSTEM_REBOOT", "system_reboot"),
)
_RECOVERY_NAMES = {
    int(getattr(pynvml, const)): name
    for const, name in _RECOVERY_ACTIONS
    if getattr(pynvml, const, None) is not None
}

# NVLink data-link error counters summed into `nvlink_errors`.
_NVLINK_COUNTERS = (
    pynvml.NVML_NVLINK_ERROR_DL_REPLAY,
    pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
    pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
    pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
)
# Answers for a link this GPU does not have (INVALID_ARGUMENT) or a GPU without NVLink.
_NO_LINK_CODES = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_INVALID_ARGUMENT})

_XID_EVENT = pynvml.nvmlEventTypeXidCriticalError
_WAIT_SLICE_MS = 1000  # longest single wait, so close() is never blocked for long
_MAX_EVENTS_PER_DRAIN = 10_000


class NvmlUnavailable(Exception):
    """NVML could not be started on this machine (no driver, no library, no permission)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"NVML is unavailable: {reason}; {_CHECK_HINT}")
        self.reason = reason

    @classmethod
    def from_error(cls, err: pynvml.NVMLError) -> NvmlUnavailable:
        return cls(f"nvmlInit failed with {_describe(err)}")


class NvmlCallFailed(Exception):
    """An NVML call that cannot degrade to a missing field failed (count, power cap, XID watch)."""

    def __init__(self, call: str, err: pynvml.NVMLError) -> None:
        super().__init__(f"{call} failed with {_describe(err)}")
        self.call = call
        self.code = _code(err)


def _code(err: BaseException) -> int | None:
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


def _describe(err: BaseException) -> str:
    """'NVMLError_DriverNotLoaded (Driver Not Loaded)': the class names the NVML error."""
    try:
        text = str(err)
    except Exception:  # NVMLError.__str__ asks the library for unknown codes
        text = f"code {_code(err)}"
    return f"{type(err).__name__} ({text})" if text else type(err).__name__


def _text(value: Any) -> str:
    """NVML strings: str from current bindings, bytes from old ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def decode_clock_event_reasons(mask: int) -> list[str]:
    """The clock-event reason bitmask as snake_case names, lowest bit first; bits the bindings
    do not name come out as 'unknown_0x...'."""
    names = []
    known = 0
    for name, bit in CLOCK_EVENT_BITS:
        known |= bit
        if mask & bit:
            names.append(name)
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return names


def recovery_action_name(value: int) -> str:
    """nvmlDeviceGpuRecoveryAction_t as a name: none, reset, reboot, drain, ..."""
    return _RECOVERY_NAMES.get(value, f"unknown_{value}")


_VALUE_MEMBERS = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


def field_value(fv: Any) -> float | int:
    """The number in one nvmlFieldValue_t; its own nvmlReturn, if not SUCCESS, is raised as the
    matching NVMLError (nvmlDeviceGetFieldValues succeeds as a call while a field fails)."""
    if fv.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(fv.nvmlReturn)
    member = _VALUE_MEMBERS.get(fv.valueType)
    if member is None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
    return getattr(fv.value, member)


class _Reader:
    """Collects what one GPU's read could not get. Every NVML call of a read goes through
    `_field` (one field) or `_fields` (one call filling several fields), which never raise."""

    def __init__(self) -> None:
        self.unsupported: list[str] = []
        self.errors: dict[str, str] = {}
        self.lost = False

    def _field(self, name: str, fn: Callable[[], T]) -> T | None:
        ok, value = self._call((name,), fn)
        return value if ok else None

    def _fields(self, names: Sequence[str], fn: Callable[[], Sequence[Any]]) -> tuple[Any, ...]:
        ok, values = self._call(tuple(names), fn)
        if not ok:
            return (None,) * len(names)
        values = tuple(values)
        if len(values) != len(names):
            self._record_bug(names, ValueError(f"got {len(values)} values for {len(names)}"))
            return (None,) * len(names)
        return values

    def _call(self, names: tuple[str, ...], fn: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            return True, fn()
        except pynvml.NVMLError as err:
            code = _code(err)
            if isinstance(err, pynvml.NVMLError_NotSupported) or code in _UNSUPPORTED_CODES:
                self.unsupported.extend(n for n in names if n not in self.unsupported)
            else:
                if code in _LOST_CODES:
                    self.lost = True
                for n in names:
                    self.errors[n] = str(err)
                log.debug("nvml_field_failed", fields=list(names), error=_describe(err))
        except Exception as err:  # a bug in our conversion must not lose the other fields
            self._record_bug(names, err)
        return False, None

    def _record_bug(self, names: Sequence[str], err: Exception) -> None:
        for n in names:
            self.errors[n] = f"{type(err).__name__}: {err}"
        log.warning("nvml_field_conversion_failed", fields=list(names), error=repr(err))


def _clock_event_mask(handle: Any) -> int:
    """Current clock-event reasons; drivers older than the 'event' name only have 'throttle'."""
    current = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if current is not None:
        try:
            return int(current(handle))
        except pynvml.NVMLError as err:
            if _code(err) != pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                raise
    older = getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
    if older is None:  # bindings that dropped the old name, on a driver without the new one
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    return int(older(handle))


def _nvlink_errors(handle: Any) -> int:
    """Replay, recovery and CRC (flit, data) counters summed over every link the GPU has."""
    total = 0
    links = 0
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        answered = False
        for counter in _NVLINK_COUNTERS:
            try:
                total += int(pynvml.nvmlDeviceGetNvLinkErrorCounter(handle, link, counter))
                answered = True
            except pynvml.NVMLError as err:
                if _code(err) not in _NO_LINK_CODES:
                    raise
                if not answered:  # this link does not exist or has no counters: next link
                    break
        links += answered
    if links == 0:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return total


def _recovery_action(handle: Any) -> str:
    field_id = getattr(pynvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)
    if field_id is None:  # bindings older than the field
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    values = pynvml.nvmlDeviceGetFieldValues(handle, [field_id])
    return recovery_action_name(int(field_value(values[0])))


def _address(handle: Any) -> int | None:
    """A device handle's pointer value: the same GPU gives the same handle."""
    return ctypes.cast(handle, ctypes.c_void_p).value


class NvmlBackend:
    """The GPUs of this node through NVML. read() never raises; drain_xids() may be called from
    another thread than read() (NVML is thread-safe); close() frees the event set and shuts NVML
    down."""

    def __init__(self) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise NvmlUnavailable.from_error(err) from None
        self._lock = threading.Lock()  # guards the event set between drain_xids and close
        self._open = True
        self._events: Any = None
        self._watching = False
        self._by_address: dict[int, int] = {}
        self._by_uuid: dict[str, int] = {}
        log.info("nvml_started", driver=self._driver_version())

    def _driver_version(self) -> str | None:
        try:
            return _text(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError:
            return None

    def count(self) -> int:
        try:
            return int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as err:
            raise NvmlCallFailed("nvmlDeviceGetCount", err) from None

    def read(self, index: int, now: float) -> GpuReading:
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
        except pynvml.NVMLError as err:
            log.warning("nvml_gpu_unreachable", gpu=index, error=_describe(err))
            return GpuReading(time=now, index=index, present=False, errors={"device": str(err)})
        r = _Reader()
        uuid = r._field("uuid", lambda: _text(pynvml.nvmlDeviceGetUUID(h)))
        if r.lost:  # nothing else will answer either
            return GpuReading(time=now, index=index, present=False, errors=r.errors)
        name = r._field("name", lambda: _text(pynvml.nvmlDeviceGetName(h)))
        pci = r._field("pci_bus_id", lambda: _text(pynvml.nvmlDeviceGetPciInfo(h).busId))

        def utilization() -> tuple[int, int]:
            u = pynvml.nvmlDeviceGetUtilizationRates(h)
            return int(u.gpu), int(u.memory)

        def memory() -> tuple[int, int]:
            m = pynvml.nvmlDeviceGetMemoryInfo(h)
            return int(m.used) // _MIB, int(m.total) // _MIB

        def limits() -> tuple[int, int]:
            low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h)
            return int(low), int(high)

        def remapped() -> tuple[int, int, bool, bool]:
            corrected, uncorrected, pending, failure = pynvml.nvmlDeviceGetRemappedRows(h)
            return int(corrected), int(uncorrected), bool(pending), bool(failure)

        def ecc(kind: int, counter: int) -> Callable[[], int]:
            return lambda: int(pynvml.nvmlDeviceGetTotalEccErrors(h, kind, counter))

        def retired(cause: int) -> Callable[[], int]:
            return lambda: len(pynvml.nvmlDeviceGetRetiredPages(h, cause))

        util_gpu, util_mem = r._fields(
            ("utilization_gpu_pct", "utilization_memory_pct"), utilization
        )
        mem_used, mem_total = r._fields(("memory_used_mib", "memory_total_mib"), memory)
        limit_min, limit_max = r._fields(("power_limit_min_mw", "power_limit_max_mw"), limits)
        rows_ce, rows_ue, remap_pending, remap_failure = r._fields(
            (
                "remapped_rows_corrected",
                "remapped_rows_uncorrected",
                "remap_pending",
                "remap_failure",
            ),
            remapped,
        )
        corrected = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
        uncorrected = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        values: dict[str, Any] = {
            "power_mw": r._field("power_mw", lambda: int(pynvml.nvmlDeviceGetPowerUsage(h))),
            "energy_mj": r._field(
                "energy_mj", lambda: int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
            ),
            "power_limit_mw": r._field(
                "power_limit_mw", lambda: int(pynvml.nvmlDeviceGetEnforcedPowerLimit(h))
            ),
            "power_limit_default_mw": r._field(
                "power_limit_default_mw",
                lambda: int(pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h)),
            ),
            "temperature_c": r._field(
                "temperature_c",
                lambda: int(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            ),
            "clock_event_reasons": r._field(
                "clock_event_reasons", lambda: decode_clock_event_reasons(_clock_event_mask(h))
            ),
            "ecc_corrected_volatile": r._field(
                "ecc_corrected_volatile", ecc(corrected, pynvml.NVML_VOLATILE_ECC)
            ),
            "ecc_uncorrected_volatile": r._field(
                "ecc_uncorrected_volatile", ecc(uncorrected, pynvml.NVML_VOLATILE_ECC)
            ),
            "ecc_corrected_aggregate": r._field(
                "ecc_corrected_aggregate", ecc(corrected, pynvml.NVML_AGGREGATE_ECC)
            ),
            "ecc_uncorrected_aggregate": r._field(
                "ecc_uncorrected_aggregate", ecc(uncorrected, pynvml.NVML_AGGREGATE_ECC)
            ),
            "retired_pages_sbe": r._field(
                "retired_pages_sbe",
                retired(pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS),
            ),
            "retired_pages_dbe": r._field(
                "retired_pages_dbe",
                retired(pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR),
            ),
            "retired_pages_pending": r._field(
                "retired_pages_pending",
                lambda: bool(pynvml.nvmlDeviceGetRetiredPagesPendingStatus(h)),
            ),
            "pcie_replays": r._field(
                "pcie_replays", lambda: int(pynvml.nvmlDeviceGetPcieReplayCounter(h))
            ),
            "nvlink_errors": r._field("nvlink_errors", lambda: _nvlink_errors(h)),
            "recovery_action": r._field("recovery_action", lambda: _recovery_action(h)),
        }
        if r.lost:
            log.warning("nvml_gpu_lost", gpu=index, uuid=uuid, errors=r.errors)
        return GpuReading(
            time=now,
            index=index,
            present=not r.lost,
            uuid=uuid,
            name=name,
            pci_bus_id=pci,
            utilization_gpu_pct=util_gpu,
            utilization_memory_pct=util_mem,
            memory_used_mib=mem_used,
            memory_total_mib=mem_total,
            power_limit_min_mw=limit_min,
            power_limit_max_mw=limit_max,
            remapped_rows_corrected=rows_ce,
            remapped_rows_uncorrected=rows_ue,
            remap_pending=remap_pending,
            remap_failure=remap_failure,
            unsupported=r.unsupported,
            errors=r.errors,
            **values,
        )

    # XID events -----------------------------------------------------------------------------

    def start_xid_watch(self) -> None:
        """Register every GPU for XID critical-error events. A GPU that cannot be registered is
        logged and skipped; with none registered, drain_xids() just waits out its timeout."""
        with self._lock:
            if self._watching or not self._open:
                return
            try:
                self._events = pynvml.nvmlEventSetCreate()
            except pynvml.NVMLError as err:
                raise NvmlCallFailed("nvmlEventSetCreate", err) from None
            self._watching = True
            for index in range(self.count()):
                self._register(index)
        log.info("nvml_xid_watch_started", gpus=sorted(self._by_address.values()))

    def _register(self, index: int) -> None:
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            supported = int(pynvml.nvmlDeviceGetSupportedEventTypes(h))
            if not supported & _XID_EVENT:
                log.warning("nvml_xid_events_unsupported", gpu=index)
                return
            pynvml.nvmlDeviceRegisterEvents(h, _XID_EVENT, self._events)
        except pynvml.NVMLError as err:
            log.warning("nvml_xid_register_failed", gpu=index, error=_describe(err))
            return
        address = _address(h)
        if address is not None:
            self._by_address[address] = index
        try:
            self._by_uuid[_text(pynvml.nvmlDeviceGetUUID(h))] = index
        except pynvml.NVMLError as err:
            log.warning("nvml_xid_uuid_failed", gpu=index, error=_describe(err))

    def drain_xids(self, timeout_ms: int) -> dict[int, list[int]]:
        """XIDs per GPU index. Waits up to `timeout_ms` for the first event, then takes every
        event already queued and returns at once; {} when the time ran out with none. Always
        takes about `timeout_ms` when nothing comes (callers may pace their loop on it)."""
        if not self._watching:
            raise RuntimeError("drain_xids() before start_xid_watch()")
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        out: dict[int, list[int]] = {}
        if not self._by_address and not self._by_uuid:  # nothing registered: just wait
            _sleep_until(deadline)
            return out
        wait_ms = max(timeout_ms, 0)
        taken = 0
        while taken < _MAX_EVENTS_PER_DRAIN:
            try:
                event = self._wait(min(wait_ms, _WAIT_SLICE_MS))
            except pynvml.NVMLError as err:
                log.error("nvml_xid_wait_failed", error=_describe(err))
                if not out:
                    _sleep_until(deadline)
                return out
            if event is not None:
                self._take(event, out)
                taken += 1
                wait_ms = 0  # sweep what is already queued, without waiting
                continue
            if taken or not self._open:  # the queue is empty after an event, or we are closed
                return out
            wait_ms = int((deadline - time.monotonic()) * 1000)
            if wait_ms <= 0:
                return out
        return out

    def _wait(self, timeout_ms: int) -> Any:
        """One event or None on timeout (or once closed)."""
        with self._lock:
            if not self._open or self._events is None:
                return None
            try:
                return pynvml.nvmlEventSetWait_v2(self._events, timeout_ms)
            except pynvml.NVMLError_Timeout:
                return None

    def _take(self, event: Any, out: dict[int, list[int]]) -> None:
        if int(event.eventType) != _XID_EVENT:
            return
        xid = int(event.eventData)
        index = self._event_index(event.device)
        if index is None:
            # As NVIDIA's device plugin does: an XID we cannot place counts against every GPU.
            log.error("nvml_xid_device_unknown", xid=xid, gpus=sorted(self._by_uuid.values()))
            targets = sorted(set(self._by_address.values()) | set(self._by_uuid.values()))
        else:
            targets = [index]
        for i in targets:
            out.setdefault(i, []).append(xid)
        log.warning("nvml_xid", xid=xid, gpus=targets)

    def _event_index(self, device: Any) -> int | None:
        if not device:  # NULL handle
            return None
        index = self._by_address.get(_address(device) or 0)
        if index is not None:
            return index
        try:
            return self._by_uuid.get(_text(pynvml.nvmlDeviceGetUUID(device)))
        except pynvml.NVMLError:
            return None

    # Power ------------------------------------------------------------------------------------

    def set_power_limit(self, index: int, watts: int) -> int:
        """Cap one GPU at `watts`, clamped to what it allows; returns the enforced limit in W.
        Needs root (or CAP_SYS_ADMIN) on the node."""
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h)
            target = max(int(low), min(int(high), int(watts) * 1000))
            pynvml.nvmlDeviceSetPowerManagementLimit(h, target)
            enforced = int(pynvml.nvmlDeviceGetEnforcedPowerLimit(h))
        except pynvml.NVMLError as err:
            raise NvmlCallFailed(f"setting GPU {index}'s power limit to {watts} W", err) from None
        log.info(
            "nvml_power_limit_set", gpu=index, asked_w=watts, set_mw=target, enforced_mw=enforced
        )
        return round(enforced / 1000)

    def close(self) -> None:
        """Free the XID event set and shut NVML down; errors are ignored. Safe to call twice."""
        with self._lock:
            if not self._open:
                return
            self._open = False
            if self._events is not None:
                try:
                    pynvml.nvmlEventSetFree(self._events)
                except pynvml.NVMLError as err:
                    log.debug("nvml_event_set_free_failed", error=_describe(err))
                self._events = None
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as err:
                log.debug("nvml_shutdown_failed", error=_describe(err))


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
