"""Any container that answers HTTP: `args` is its command, `health.path` says when it is ready.

aitherctl knows nothing about its memory, so a GPU service is assumed to allocate at start (the
switch then starts it alone on its GPUs: slower, never a race).
"""

from __future__ import annotations

from collections.abc import Sequence

from aitherctl.engines.base import (
    EngineContainer,
    GpuShare,
    HttpRequest,
    MetricsEndpoint,
    SleepMode,
)
from aitherctl.engines.container import ContainerSpec, HttpCheck
from aitherctl.engines.facts import BUILT_IN
from aitherctl.profiles.profile import Service


class GenericDriver:
    engine = "generic"
    default_port = None  # the container listens on the host port unless container_port says
    default_timeout_s = 120.0
    # What the router asks of an OpenAI-compatible server; a container names its own readiness.
    health_path, client_path, queue_metric, _ = BUILT_IN["generic"]
    metrics: tuple[MetricsEndpoint, ...] = ()
    release_needs_models = False

    def default_image(self, uses_gpu: bool) -> str | None:
        del uses_gpu
        return None  # the loader requires `image` for a generic service

    def container(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> EngineContainer:
        del port, gpus
        return EngineContainer(command=tuple(service.args))

    def readiness(self, service: Service) -> tuple[HttpCheck, ...]:
        assert service.health.path is not None  # the loader requires it for generic services
        return (HttpCheck(service.health.path),)

    def allocates_gpu_at_start(self, spec: ContainerSpec) -> bool:
        return bool(spec.gpus)

    def default_concurrency(self, service: Service) -> int | None:
        del service
        return None

    def release_memory(self, loaded_models: Sequence[str]) -> tuple[HttpRequest, ...] | None:
        del loaded_models
        return None

    def sleep_mode(self, service: Service) -> SleepMode | None:
        del service
        return None


DRIVER = GenericDriver()
