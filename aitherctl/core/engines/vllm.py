"""vLLM's OpenAI-compatible server (`vllm/vllm-openai`: the image's entrypoint is the server).

`--gpu-memory-utilization` is the share of the GPU's *total* memory this instance may use for
weights, activations and KV cache, so it is the VRAM budget divided by the GPU's total memory,
rounded down so the budget is never exceeded. vLLM measures free memory when it starts, which is
why the reconciler starts vLLM services on one GPU one after another.
Ready when `GET /health` is 200 and `GET /v1/models` lists the served model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from aitherctl.core.container import HttpCheck
from aitherctl.core.profile import Service, Volume

DEFAULT_PORT = 8000
DEFAULT_TIMEOUT_S = 900.0  # a first start may download and compile a large model


def utilization(vram_bytes: int, total_bytes: int) -> float:
    return math.floor(vram_bytes / total_bytes * 1000) / 1000


def command(
    service: Service, port: int, gpu_memory: Mapping[int, int], vram_bytes: int | None
) -> tuple[list[str], list[tuple[str, str]], bool]:
    assert service.model is not None
    args = ["--model", service.model, "--served-model-name", service.model_name]
    args += ["--port", str(port)]
    if service.gpus and vram_bytes is not None:
        total = min(gpu_memory[index] for index in service.gpus)
        args += ["--gpu-memory-utilization", f"{utilization(vram_bytes, total):.3f}"]
        if len(service.gpus) > 1 and "--tensor-parallel-size" not in service.args:
            args += ["--tensor-parallel-size", str(len(service.gpus))]
    args += list(service.args)
    # Tensor-parallel workers share memory through /dev/shm: use the host's IPC namespace.
    return args, [], True


def readiness(service: Service) -> tuple[HttpCheck, ...]:
    return (HttpCheck("/health"), HttpCheck("/v1/models", model=service.model_name))


def default_volumes(service: Service) -> list[Volume]:
    del service
    return []
