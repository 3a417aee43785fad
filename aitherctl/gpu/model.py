"""What the machine's GPUs look like at one moment: immutable snapshots read through NVML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process holding GPU memory. `pid` is a host PID (NVML reports host PIDs)."""

    pid: int
    used_bytes: int | None  # None when the driver does not report it (e.g. some vGPU setups)
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    """One GPU at one moment, as NVML reads it: its memory, load, temperature, power, and the
    processes that hold its memory."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_used_bytes: int  # as nvidia-smi's memory.used: what contexts allocated
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()
    # Held by the NVIDIA driver and firmware (NVML's memory info v2, nvidia-smi memory.reserved):
    # in no process, never allocatable. 0 where the reading lumps it into `memory_used_bytes`.
    memory_reserved_bytes: int = 0

    @property
    def memory_held_bytes(self) -> int:
        """What no new allocation can have: used plus what the driver reserves."""
        return self.memory_used_bytes + self.memory_reserved_bytes

    @property
    def memory_free_bytes(self) -> int:
        return self.memory_total_bytes - self.memory_held_bytes


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """Every GPU NVML sees. With no driver or no GPU, `gpus` is empty and `error` says why."""

    gpus: tuple[GpuSnapshot, ...] = ()
    driver_version: str | None = None
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None

    def by_index(self, index: int) -> GpuSnapshot | None:
        return next((gpu for gpu in self.gpus if gpu.index == index), None)


def assumed_inventory(totals: Mapping[int, int]) -> GpuInventory:
    """GPUs that are not there: each index with its total memory, empty (nothing used, nothing
    reserved by a driver), for `profile plan --gpu-memory` on a machine without them."""
    return GpuInventory(
        tuple(
            GpuSnapshot(index, "assumed", f"assumed-{index}", total, 0)
            for index, total in sorted(totals.items())
        )
    )
