"""Any container that answers HTTP: `args` is its command, `health.path` says when it is ready."""

from __future__ import annotations

from collections.abc import Mapping

from aitherctl.core.container import HttpCheck
from aitherctl.core.profile import Service, Volume

DEFAULT_PORT = None  # the container listens on the host port unless container_port says
DEFAULT_TIMEOUT_S = 120.0


def command(
    service: Service, port: int, gpu_memory: Mapping[int, int], vram_bytes: int | None
) -> tuple[list[str], list[tuple[str, str]], bool]:
    del port, gpu_memory, vram_bytes
    return list(service.args), [], False


def readiness(service: Service) -> tuple[HttpCheck, ...]:
    assert service.health.path is not None  # the loader requires it for generic services
    return (HttpCheck(service.health.path),)


def default_volumes(service: Service) -> list[Volume]:
    del service
    return []
