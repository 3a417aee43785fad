"""Contract double of the `pynvml` module (nvidia-ml-py), for machines without an NVIDIA GPU.

Follows the NVML API reference (docs.nvidia.com/deploy/nvml-api) and nvidia-ml-py's bindings:
`nvmlInit` must come first (else NVMLError_Uninitialized), handles come from
`nvmlDeviceGetHandleByIndex` (NVMLError_InvalidArgument past the count), memory is a struct with
`total/used/free` in bytes (v1, where `used` includes what the driver reserves) or, called with
`version=nvmlMemory_v2` (nvmlDeviceGetMemoryInfo_v2, drivers since R510), `total/reserved/free/
used` with `used` apart from `reserved` (`FakeGpu(reserved_bytes=...)` sets that reservation),
utilisation a struct with `gpu/memory` in percent, power in milliwatts, temperature in °C, running
processes a list of structs with `pid` (host PID) and `usedGpuMemory` in bytes (None when not
available). Strings are `str`, as in nvidia-ml-py >= 11.515. Only what aitherctl calls is
implemented; calling anything else fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0
GIB = 1024**3


class NVMLError(Exception):
    pass


class NVMLError_Uninitialized(NVMLError):
    pass


class NVMLError_InvalidArgument(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    """NVML_ERROR_NOT_SUPPORTED: the board has no such sensor (utilisation, temperature or
    power on some boards and vGPUs)."""

    def __str__(self) -> str:
        return "Not Supported"


class NVMLError_DriverNotLoaded(NVMLError):
    def __str__(self) -> str:
        return "Driver Not Loaded"


@dataclass
class FakeGpu:
    name: str = "NVIDIA RTX 4090"
    total_bytes: int = 24 * GIB
    used_bytes: int = 0
    # None: that reading raises NVMLError_NotSupported, as on a board without the sensor.
    utilization: int | None = 0
    temperature: int | None = 40
    power_mw: int | None = 30_000
    power_limit_mw: int = 450_000
    reserved_bytes: int = 0  # the driver's and firmware's own (NVML memory info v2 `reserved`)
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)


def _supported(value: int | None) -> int:
    if value is None:
        raise NVMLError_NotSupported
    return value


class NvmlDouble:
    """Behaves as the pynvml module. `gpus` configures the devices; `driver_loaded=False`
    makes `nvmlInit` fail as it does on a machine without the NVIDIA driver."""

    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVMLError = NVMLError
    nvmlMemory_v2 = 0x02000028  # pynvml's constant: struct size | (2 << 24)

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        driver_loaded: bool = True,
        driver_version: str = "550.54.15",
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.driver_loaded = driver_loaded
        self.driver_version = driver_version
        self.initialised = 0
        self.init_calls = 0

    def _need_init(self) -> None:
        if self.initialised <= 0:
            raise NVMLError_Uninitialized("Uninitialized")

    def _gpu(self, handle: object) -> FakeGpu:
        self._need_init()
        assert isinstance(handle, FakeGpu), "not a handle from nvmlDeviceGetHandleByIndex"
        return handle

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if not self.driver_loaded:
            raise NVMLError_DriverNotLoaded()
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._need_init()
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._need_init()
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._need_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._need_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument("Invalid Argument")
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: object) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        gpu = self._gpu(handle)
        return f"GPU-{self.gpus.index(gpu):08d}-0000-0000-0000-000000000000"

    def nvmlDeviceGetMemoryInfo(
        self, handle: object, version: int | None = None
    ) -> SimpleNamespace:
        gpu = self._gpu(handle)
        used = gpu.used_bytes or sum(b or 0 for _, b in gpu.processes)
        free = gpu.total_bytes - used - gpu.reserved_bytes
        if not version:
            return SimpleNamespace(total=gpu.total_bytes, used=used + gpu.reserved_bytes, free=free)
        if version != self.nvmlMemory_v2:
            raise NVMLError("Argument version mismatch")
        return SimpleNamespace(
            version=version,
            total=gpu.total_bytes,
            reserved=gpu.reserved_bytes,
            free=free,
            used=used,
        )

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(gpu=_supported(self._gpu(handle).utilization), memory=0)

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        assert sensor == NVML_TEMPERATURE_GPU
        return _supported(self._gpu(handle).temperature)

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        return _supported(self._gpu(handle).power_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> int:
        return self._gpu(handle).power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[SimpleNamespace]:
        gpu = self._gpu(handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu.processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: object) -> list[SimpleNamespace]:
        self._gpu(handle)
        return []
