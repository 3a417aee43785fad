"""One module per engine: how a service becomes a container and how to know it is ready."""

from __future__ import annotations

from collections.abc import Mapping

from aitherctl.core.container import ContainerSpec, HttpCheck, Readiness
from aitherctl.core.engines import comfyui, generic, llamacpp, ollama, vllm
from aitherctl.core.profile import Engine, Service
from aitherctl.errors import RefusedError

_BUILDERS = {
    Engine.VLLM: vllm,
    Engine.OLLAMA: ollama,
    Engine.COMFYUI: comfyui,
    Engine.LLAMACPP: llamacpp,
    Engine.GENERIC: generic,
}


def build_container(service: Service, gpu_memory: Mapping[int, int]) -> ContainerSpec:
    """The container for `service`. `gpu_memory` maps GPU index → total bytes (from NVML);
    a GPU service whose budget needs a total that is not there is refused."""
    module = _BUILDERS[service.engine]
    vram_bytes: int | None = None
    if service.vram is not None and service.gpus:
        totals = [gpu_memory.get(index) for index in service.gpus]
        if any(total is None for total in totals):
            missing = [str(i) for i, t in zip(service.gpus, totals, strict=True) if t is None]
            raise RefusedError(
                f"service {service.name!r} needs GPU {','.join(missing)}, which is not available"
            )
        vram_bytes = min(service.vram.resolve(total) for total in totals if total is not None)
    container_port = service.container_port or module.DEFAULT_PORT or service.port
    command, env, ipc_host = module.command(service, container_port, gpu_memory, vram_bytes)
    env = (*env, *service.env)
    checks: tuple[HttpCheck, ...]
    if service.health.path:
        checks = (HttpCheck(service.health.path),)
    else:
        checks = module.readiness(service)
    return ContainerSpec(
        service=service.name,
        engine=service.engine,
        image=service.image,
        command=tuple(command),
        env=tuple(env),
        container_port=container_port,
        host_port=service.port,
        bind=service.bind,
        volumes=tuple(service.volumes) + tuple(module.default_volumes(service)),
        gpus=service.gpus,
        vram_bytes=vram_bytes,
        ipc_host=ipc_host,
        readiness=Readiness(checks, service.health.timeout_s or module.DEFAULT_TIMEOUT_S),
        model=service.model,
        served_model=service.model_name,
        role=service.role,
        pinned=service.pinned,
        on_demand=service.on_demand,
    )
