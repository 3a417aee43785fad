"""llama.cpp's `llama-server` (image `ghcr.io/ggml-org/llama.cpp:server[-cuda]`; the entrypoint is
the server). `-ngl 999` offloads every layer for a GPU service; `--metrics` enables `/metrics`
(`llamacpp:requests_processing`, `llamacpp:requests_deferred`, ...); `--alias` sets the model name
that `/v1/models` reports. Ready when `GET /health` is 200 (it is 503 while the model loads).
"""

from __future__ import annotations

from collections.abc import Mapping

from aitherctl.core.container import HttpCheck
from aitherctl.core.profile import Service, Volume

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 300.0


def command(
    service: Service, port: int, gpu_memory: Mapping[int, int], vram_bytes: int | None
) -> tuple[list[str], list[tuple[str, str]], bool]:
    del gpu_memory, vram_bytes
    assert service.model is not None
    args = ["-m", service.model, "--host", "0.0.0.0", "--port", str(port), "--metrics"]
    args += ["--alias", service.model_name]
    if service.gpus and "-ngl" not in service.args and "--n-gpu-layers" not in service.args:
        args += ["-ngl", "999"]
    args += list(service.args)
    return args, [], False


def readiness(service: Service) -> tuple[HttpCheck, ...]:
    del service
    return (HttpCheck("/health"),)


def default_volumes(service: Service) -> list[Volume]:
    del service
    return []
