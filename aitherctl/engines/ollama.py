"""Ollama (image `ollama/ollama`: `ENTRYPOINT ["/bin/ollama"]`, `CMD ["serve"]`, no VOLUME): one
server that loads models on request.

Its settings are environment variables (docs/faq.md): `OLLAMA_HOST` (where it listens),
`OLLAMA_KEEP_ALIVE` (how long an idle model stays in memory), `OLLAMA_MAX_LOADED_MODELS`,
`OLLAMA_NUM_PARALLEL`. The command stays the image's `serve`. Models live in `/root/.ollama`,
kept in a named volume so a recreated container does not download them again.

It does not allocate at start: `ollama serve` only looks the GPUs up; a model is loaded when the
first request names it, sized from the GPU's free memory at that moment (layers that do not fit
stay on the CPU). No flag caps its memory: the budget is checked against what it really holds.
Ready when `GET /api/version` answers. Load: `GET /api/ps` (it has no `/metrics`): `models[]`
with `name`, `size`, `size_vram`, `expires_at`. Memory is given back per model with
`POST /api/generate {"model": NAME, "keep_alive": 0}` (docs/api.md: "keep_alive: 0 unloads").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aitherctl.engines.base import (
    EngineContainer,
    GpuShare,
    HttpRequest,
    MetricsEndpoint,
    SleepMode,
    unless_mounted,
)
from aitherctl.engines.container import ContainerSpec, HttpCheck
from aitherctl.engines.facts import BUILT_IN
from aitherctl.profiles.profile import Service, Volume

if TYPE_CHECKING:
    from aitherctl.engines.metrics import EngineMetrics

# Pinned the same day as `latest` by public projects (2026-10-10).
IMAGE = "ollama/ollama:0.40.2"
MODEL_DIR = "/root/.ollama"
MODEL_VOLUME = "aither-ollama-models"


def parse_ollama_ps(payload: Any) -> EngineMetrics:
    from aitherctl.engines.metrics import (
        EngineMetrics,
        LoadedModel,
        MetricsFormatError,
        opt_int,
        parse_timestamp,
    )

    """Ollama `GET /api/ps`: the loaded models and the VRAM each holds (`size_vram`)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models", []), list):
        raise MetricsFormatError("Ollama /api/ps has no `models` list")
    models = tuple(
        LoadedModel(
            name=str(entry.get("name") or entry.get("model") or "?"),
            size_bytes=opt_int(entry.get("size")),
            vram_bytes=opt_int(entry.get("size_vram")),
            expires_at=parse_timestamp(entry.get("expires_at")),
        )
        for entry in payload.get("models") or []
        if isinstance(entry, dict)
    )
    vram = [model.vram_bytes for model in models if model.vram_bytes is not None]
    return EngineMetrics(loaded_models=models, engine_vram_bytes=sum(vram) if models else 0)


class OllamaDriver:
    engine = "ollama"
    default_port = 11434
    default_timeout_s = 120.0
    health_path, client_path, queue_metric, _ = BUILT_IN["ollama"]
    metrics = (MetricsEndpoint("/api/ps", "json", parse_ollama_ps),)
    release_needs_models = True

    def default_image(self, uses_gpu: bool) -> str | None:
        del uses_gpu
        return IMAGE

    def container(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> EngineContainer:
        del gpus
        env = [("OLLAMA_HOST", f"0.0.0.0:{port}")]
        if service.keep_alive is not None:
            env.append(("OLLAMA_KEEP_ALIVE", service.keep_alive))
        if service.max_loaded_models is not None:
            env.append(("OLLAMA_MAX_LOADED_MODELS", str(service.max_loaded_models)))
        if service.num_parallel is not None:
            env.append(("OLLAMA_NUM_PARALLEL", str(service.num_parallel)))
        # Arguments follow the entrypoint `/bin/ollama`: keep `serve` in front of any.
        command = ("serve", *service.args) if service.args else ()
        volumes = unless_mounted(service, [Volume(MODEL_VOLUME, MODEL_DIR)])
        return EngineContainer(command=command, env=tuple(env), volumes=volumes)

    def readiness(self, service: Service) -> tuple[HttpCheck, ...]:
        del service
        return (HttpCheck("/api/version"),)

    def allocates_gpu_at_start(self, spec: ContainerSpec) -> bool:
        del spec
        return False

    def default_concurrency(self, service: Service) -> int | None:
        return service.num_parallel  # unset: Ollama decides per model

    def release_memory(self, loaded_models: Sequence[str]) -> tuple[HttpRequest, ...] | None:
        return tuple(
            HttpRequest("POST", "/api/generate", {"model": name, "keep_alive": 0})
            for name in loaded_models
        )

    def sleep_mode(self, service: Service) -> SleepMode | None:
        del service
        return None


DRIVER = OllamaDriver()
