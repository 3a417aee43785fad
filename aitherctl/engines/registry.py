"""The registry: one driver per engine, and the one function that turns a service into its
container.

Each engine's knowledge sits in its module (`vllm.py`, `ollama.py`, `comfyui.py`, `llamacpp.py`,
`generic.py`): default image, command, environment, volumes, readiness, health path, metrics pages
and their parsers, the queue gauge the router reads, how to free memory, whether it allocates GPU
memory as it starts, its concurrency. `EngineDriver` (`base.py`) is the contract.

Adding an engine (SGLang, TGI):
1. add its health path, API root and queue gauge to `engines/facts.py` (the router reads them
   there without loading any driver);
2. write `engines/sglang.py` with a class that satisfies `EngineDriver` and `DRIVER = ...`;
3. add `sglang.DRIVER` to `_BUILT_IN` below (this is engines/registry.py);
4. add `SGLANG = "sglang"` to `Engine` (`profiles/profile.py`), the names profiles may use.
Nothing else changes: the container builder, the readiness probe, the scraper, the router's queue
check and `free VRAM` all ask the driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aitherctl.engines import comfyui, generic, llamacpp, ollama, vllm
from aitherctl.engines.base import (
    EngineContainer,
    EngineDriver,
    GpuShare,
    HttpRequest,
    MetricsEndpoint,
)
from aitherctl.engines.container import ContainerSpec, HttpCheck, Readiness
from aitherctl.errors import RefusedError
from aitherctl.profiles.profile import Engine, Service

__all__ = [
    "EngineContainer",
    "EngineDriver",
    "GpuShare",
    "HttpRequest",
    "MetricsEndpoint",
    "allocates_gpu_at_start",
    "build_container",
    "client_path",
    "driver_for",
    "drivers",
    "health_paths",
    "queue_metrics",
    "register",
    "release_requests",
    "unregister",
]

_BUILT_IN: tuple[EngineDriver, ...] = (
    vllm.DRIVER,
    ollama.DRIVER,
    comfyui.DRIVER,
    llamacpp.DRIVER,
    generic.DRIVER,
)
_REGISTRY: dict[str, EngineDriver] = {driver.engine: driver for driver in _BUILT_IN}


def register(driver: EngineDriver) -> EngineDriver | None:
    """Adds (or replaces) the driver for `driver.engine`; returns the one it replaced."""
    previous = _REGISTRY.get(driver.engine)
    _REGISTRY[driver.engine] = driver
    return previous


def unregister(engine: str, previous: EngineDriver | None = None) -> None:
    """Removes the driver for `engine`, putting `previous` back when given."""
    if previous is None:
        _REGISTRY.pop(engine, None)
    else:
        _REGISTRY[engine] = previous


def driver_for(engine: Engine | str) -> EngineDriver:
    """The driver of `engine` (an `Engine` or its value). Unknown engines raise KeyError."""
    return _REGISTRY[str(engine)]


def drivers() -> dict[str, EngineDriver]:
    """engine → driver, for every registered engine."""
    return dict(_REGISTRY)


def queue_metrics() -> dict[str, str]:
    """engine → the Prometheus gauge of requests waiting for a slot (engines that publish one)."""
    return {name: d.queue_metric for name, d in _REGISTRY.items() if d.queue_metric is not None}


def health_paths() -> dict[str, str]:
    """engine → the GET that says a running server can take requests."""
    return {name: d.health_path for name, d in _REGISTRY.items() if d.health_path is not None}


def client_path(engine: str) -> str:
    """What clients append to `http://host:port` (the driver's `client_path`; "" if unknown)."""
    driver = _REGISTRY.get(engine)
    return driver.client_path if driver is not None else ""


def allocates_gpu_at_start(spec: ContainerSpec) -> bool:
    """Whether `spec`'s server takes its GPU memory as it starts (start such services one after
    another on a GPU). Unknown engines are assumed to."""
    driver = _REGISTRY.get(str(spec.engine))
    return bool(spec.gpus) if driver is None else driver.allocates_gpu_at_start(spec)


def _gpu_shares(
    service: Service, gpu_memory: Mapping[int, int], neighbours: Iterable[Service]
) -> tuple[GpuShare, ...]:
    if not service.gpus or service.vram is None:
        return ()
    missing = [str(index) for index in service.gpus if index not in gpu_memory]
    if missing:
        raise RefusedError(
            f"service {service.name!r} needs GPU {','.join(missing)}, which is not available"
        )
    others = [svc for svc in neighbours if svc.name != service.name and svc.vram is not None]
    shares = []
    for index in service.gpus:
        total = gpu_memory[index]
        beside = sum(
            svc.vram.resolve(total) for svc in others if index in svc.gpus and svc.vram is not None
        )
        shares.append(GpuShare(index, total, service.vram.resolve(total), beside))
    return tuple(shares)


def build_container(
    service: Service, gpu_memory: Mapping[int, int], neighbours: Iterable[Service] = ()
) -> ContainerSpec:
    """The container for `service`. `gpu_memory` maps GPU index → total bytes (NVML); a GPU
    service whose GPU is not there is refused. `neighbours` are the profile's other resident
    services (ComfyUI's reserve depends on their budgets; other engines ignore them).

    The budget is resolved against each GPU's own total: `gpu_vram` holds it per GPU, and
    `vram_bytes` is the smallest of them (what the labels and older readers show).
    """
    driver = driver_for(service.engine)
    shares = _gpu_shares(service, gpu_memory, neighbours)
    container_port = service.container_port or driver.default_port or service.port
    built = driver.container(service, container_port, shares)
    checks: tuple[HttpCheck, ...] = (
        (HttpCheck(service.health.path),) if service.health.path else driver.readiness(service)
    )
    key_env = None
    if service.api_key_env:
        key_env = (KEY_VARIABLES.get(service.engine, service.api_key_env), service.api_key_env)
        # With a key, vLLM checks it on every /v1 path (llama.cpp on most): the readiness
        # probe keeps to the engine's open health path, so no key is needed to probe.
        checks = tuple(check for check in checks if not check.path.startswith("/v1/")) or (
            HttpCheck("/health"),
        )
    return ContainerSpec(
        service=service.name,
        engine=service.engine,
        image=service.image,
        command=built.command,
        env=(*built.env, *service.env),
        container_port=container_port,
        host_port=service.port,
        bind=service.bind,
        volumes=(*service.volumes, *built.volumes),
        gpus=service.gpus,
        vram_bytes=min(share.budget_bytes for share in shares) if shares else None,
        ipc_host=built.ipc_host,
        readiness=Readiness(checks, service.health.timeout_s or driver.default_timeout_s),
        model=service.model,
        served_model=service.model_name,
        role=service.role,
        pinned=service.pinned,
        on_demand=service.on_demand,
        gpu_vram=tuple((share.index, share.budget_bytes) for share in shares),
        key_env=key_env,
    )


# The variable each engine reads its API key from: vLLM's `--api-key` default is VLLM_API_KEY
# (vllm/entrypoints/openai/cli_args.py); llama-server's `--api-key` says `(env: LLAMA_API_KEY)`
# in its --help. A generic image gets the variable under the name the profile gives.
KEY_VARIABLES = {Engine.VLLM: "VLLM_API_KEY", Engine.LLAMACPP: "LLAMA_API_KEY"}


def release_requests(engine: str, loaded_models: Iterable[str]) -> tuple[HttpRequest, ...] | None:
    """What to send so that `engine` gives its memory back (None: it cannot; stop it)."""
    driver = _REGISTRY.get(engine)
    return None if driver is None else driver.release_memory(tuple(loaded_models))
