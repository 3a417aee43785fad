"""Ollama (`ollama/ollama`): one server that loads models on request.

Its settings are environment variables (docs/faq.md): `OLLAMA_KEEP_ALIVE` (how long an idle model
stays in memory), `OLLAMA_MAX_LOADED_MODELS`, `OLLAMA_NUM_PARALLEL`; `OLLAMA_HOST` makes it listen
on the container's port. Models live in `/root/.ollama`, kept in a named volume so a recreated
container does not download them again. Ready when `GET /api/version` answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from aitherctl.core.container import HttpCheck
from aitherctl.core.profile import Service, Volume

DEFAULT_PORT = 11434
DEFAULT_TIMEOUT_S = 120.0
MODEL_DIR = "/root/.ollama"


def command(
    service: Service, port: int, gpu_memory: Mapping[int, int], vram_bytes: int | None
) -> tuple[list[str], list[tuple[str, str]], bool]:
    del gpu_memory, vram_bytes
    env = [("OLLAMA_HOST", f"0.0.0.0:{port}")]
    if service.keep_alive is not None:
        env.append(("OLLAMA_KEEP_ALIVE", service.keep_alive))
    if service.max_loaded_models is not None:
        env.append(("OLLAMA_MAX_LOADED_MODELS", str(service.max_loaded_models)))
    if service.num_parallel is not None:
        env.append(("OLLAMA_NUM_PARALLEL", str(service.num_parallel)))
    return list(service.args), env, False


def readiness(service: Service) -> tuple[HttpCheck, ...]:
    del service
    return (HttpCheck("/api/version"),)


def default_volumes(service: Service) -> list[Volume]:
    if any(volume.container == MODEL_DIR for volume in service.volumes):
        return []
    return [Volume("aither-ollama-models", MODEL_DIR)]
