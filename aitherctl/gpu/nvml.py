"""GPU readings through NVML (the `nvidia-ml-py` package, imported as `pynvml`).

Every number here is what `nvidia-smi` shows:
- memory: `nvmlDeviceGetMemoryInfo(h, version=nvmlMemory_v2)` (`nvidia-smi --query-gpu=
  memory.total,memory.used,memory.reserved`). Version 1 (older drivers) counts the driver's and
  firmware's reservation in `used`: on an idle H100 (driver 580) it says 480 MiB used where
  nvidia-smi says 0 MiB used, 480 MiB reserved. Either way nothing counts it twice: the planner
  reads `memory_held_bytes` (used + reserved).
- utilisation: `nvmlDeviceGetUtilizationRates().gpu` (`utilization.gpu`, percent)
- temperature: `nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU)` (`temperature.gpu`, °C)
- power: `nvmlDeviceGetPowerUsage` in mW (`power.draw`), limit `nvmlDeviceGetEnforcedPowerLimit`
- processes: `nvmlDeviceGetComputeRunningProcesses` + `...GraphicsRunningProcesses`
  (`nvidia-smi --query-compute-apps=pid,used_memory`); PIDs are host PIDs.

NVML is initialised once per reader and shut down by `close()`, never per sample.
"""

from __future__ import annotations

import contextlib
import threading
from types import ModuleType
from typing import Any

from aitherctl.gpu.model import GpuInventory, GpuProcess, GpuSnapshot


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlReader:
    """Reads every GPU's state. Pass `nvml_module` (a double in tests) or get the real pynvml."""

    def __init__(self, nvml_module: ModuleType | Any | None = None) -> None:
        self._nvml = nvml_module
        self._initialised = False
        self._error: str | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Any | None:
        if self._initialised:
            return self._nvml
        if self._error is not None:
            return None
        if self._nvml is None:
            if not _driver_library_loads():
                # What pynvml's nvmlInit says here, without importing pynvml (25-50 ms of
                # every command on a machine without an NVIDIA driver).
                self._error = _describe(RuntimeError("NVML Shared Library Not Found"))
                return None
            try:
                import pynvml
            except ImportError:
                self._error = "nvidia-ml-py is not installed"
                return None
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except Exception as exc:  # NVMLError and OSError when libnvidia-ml.so is missing
            self._error = _describe(exc)
            return None
        self._initialised = True
        return self._nvml

    def read(self) -> GpuInventory:
        with self._lock:
            nvml = self._ensure()
            if nvml is None:
                return GpuInventory(error=self._error)
            try:
                driver = _text(nvml.nvmlSystemGetDriverVersion())
                count = nvml.nvmlDeviceGetCount()
                gpus = tuple(self._read_gpu(nvml, index) for index in range(count))
            except Exception as exc:
                return GpuInventory(error=_describe(exc))
            if not gpus:
                return GpuInventory(driver_version=driver, error="NVML sees no GPU")
            return GpuInventory(gpus=gpus, driver_version=driver)

    def _read_gpu(self, nvml: Any, index: int) -> GpuSnapshot:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory, reserved = _memory_info(nvml, handle)

        def optional(call: Any, *args: Any) -> Any:
            try:
                return call(handle, *args)
            except Exception:  # NVML_ERROR_NOT_SUPPORTED on some boards
                return None

        utilization = optional(nvml.nvmlDeviceGetUtilizationRates)
        temperature = optional(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        power_mw = optional(nvml.nvmlDeviceGetPowerUsage)
        limit_mw = optional(nvml.nvmlDeviceGetEnforcedPowerLimit)
        processes: dict[int, GpuProcess] = {}
        for getter in (
            nvml.nvmlDeviceGetComputeRunningProcesses,
            nvml.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            for proc in optional(getter) or ():
                used = getattr(proc, "usedGpuMemory", None)
                if proc.pid not in processes or (used or 0) > (processes[proc.pid].used_bytes or 0):
                    processes[proc.pid] = GpuProcess(pid=proc.pid, used_bytes=used)
        return GpuSnapshot(
            index=index,
            name=_text(nvml.nvmlDeviceGetName(handle)),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            memory_total_bytes=int(memory.total),
            memory_used_bytes=int(memory.used),
            memory_reserved_bytes=reserved,
            utilization_pct=float(utilization.gpu) if utilization is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            power_w=power_mw / 1000 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
            processes=tuple(processes.values()),
        )

    def close(self) -> None:
        with self._lock:
            if self._initialised and self._nvml is not None:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
            self._initialised = False


def _memory_info(nvml: Any, handle: Any) -> tuple[Any, int]:
    """Memory info v2 (used without the driver's reservation, the reservation apart) where the
    driver and bindings have it, else v1 (reservation inside `used`, reported as 0 apart)."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            return memory, int(getattr(memory, "reserved", 0) or 0)
        except Exception:  # NVML_ERROR_FUNCTION_NOT_FOUND / NOT_SUPPORTED before R510
            pass
    return nvml.nvmlDeviceGetMemoryInfo(handle), 0


def _driver_library_loads() -> bool:
    """Whether the NVIDIA driver's NVML library loads, as pynvml loads it on Linux
    (`CDLL("libnvidia-ml.so.1")`); elsewhere, leave it to pynvml."""
    import sys

    if not sys.platform.startswith("linux"):
        return True
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if (
        "Driver Not Loaded" in text
        or "NVML Shared Library Not Found" in text
        or isinstance(exc, OSError)
    ):
        return f"no NVIDIA driver ({text})"
    return f"NVML: {text}"
