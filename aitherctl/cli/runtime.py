"""What commands need from the outside world, built on first use (tests replace the factories)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.docker.listing import ContainerSource
    from aitherctl.gpu.model import GpuInventory
    from aitherctl.profiles.catalog import ProfileCatalog


def catalog() -> ProfileCatalog:
    """The user's profiles, with the memo of those loaded before (profiles/memo.py): a load
    whose files did not change imports neither YAML nor the checks."""
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.profiles.memo import default_memo

    return ProfileCatalog(memo=default_memo())


def docker() -> DockerEngine:
    from aitherctl.docker.engine import DockerEngine

    return DockerEngine.connect()


def docker_reader() -> ContainerSource:
    """What runs on the engine, for commands that only read it (`ps`, `run`): over the local
    socket without the Docker SDK where the engine is one, else through `docker()`'s SDK."""
    from aitherctl.docker.listing import open_socket_reader

    return open_socket_reader() or docker()


def gpu_inventory() -> GpuInventory:
    """NVML's view of the GPUs (an empty inventory with `error` set when there is none)."""
    from aitherctl.gpu.nvml import NvmlReader

    reader = NvmlReader(nvml_module)
    try:
        return reader.read()
    finally:
        reader.close()


# Tests put a contract double of pynvml here; None means the real `pynvml`.
nvml_module: object | None = None


def monitor_collector(*, use_gpu: bool, scrape_timeout_s: float, wait_for_remote_gpus: bool) -> Any:
    """What `status` reads each time: this machine's collector (`ops.monitor.build_collector`);
    tests put one on fixed readings here."""
    from aitherctl.monitor.collect import build_collector

    collector, _ = build_collector(
        use_gpu=use_gpu,
        scrape_timeout_s=scrape_timeout_s,
        wait_for_remote_gpus=wait_for_remote_gpus,
    )
    return collector
