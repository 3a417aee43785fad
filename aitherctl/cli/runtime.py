"""What commands need from the outside world, built on first use (tests replace the factories)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitherctl.adapters.profile_store import ProfileCatalog

if TYPE_CHECKING:
    from aitherctl.adapters.docker_engine import DockerEngine
    from aitherctl.core.gpu import GpuInventory


def catalog() -> ProfileCatalog:
    return ProfileCatalog()


def docker() -> DockerEngine:
    from aitherctl.adapters.docker_engine import DockerEngine

    return DockerEngine.connect()


def gpu_inventory() -> GpuInventory:
    """NVML's view of the GPUs (an empty inventory with `error` set when there is none)."""
    from aitherctl.adapters.nvml import NvmlReader

    reader = NvmlReader(nvml_module)
    try:
        return reader.read()
    finally:
        reader.close()


# Tests put a contract double of pynvml here; None means the real `pynvml`.
nvml_module: object | None = None
