"""llama.cpp's `llama-server` (images `ghcr.io/ggml-org/llama.cpp:server-cuda-bNNNN` and
`:server-bNNNN` for the CPU; `.devops/cuda.Dockerfile`: `ENTRYPOINT ["/app/llama-server"]`, no
VOLUME, so the command is the server's arguments).

`-ngl 999` offloads every layer for a GPU service: the model is loaded onto the GPU as the server
starts, so it allocates at start (unless the profile sets `-ngl 0`). No flag caps its memory: the
budget is checked against what it really holds. `--metrics` enables `GET /metrics`
(`llamacpp:requests_processing`, `llamacpp:requests_deferred`, `llamacpp:kv_cache_usage_ratio`
on older builds, `llamacpp:tokens_predicted_total`, `llamacpp:prompt_tokens_total`); `GET /slots`
(one object per slot, `is_processing`) tells the busy slots when `/metrics` is off. `--alias` sets
the name `/v1/models` reports. Ready when `GET /health` is 200 (503 while the model loads).
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
    flag_value,
    has_flag,
)
from aitherctl.engines.container import ContainerSpec, HttpCheck
from aitherctl.engines.facts import BUILT_IN
from aitherctl.profiles.profile import Service

if TYPE_CHECKING:
    from aitherctl.engines.metrics import EngineMetrics

# Build b11206 of llama.cpp's own images (their tag format: `server[-cuda]-b<build number>`).
IMAGE_CUDA = "ghcr.io/ggml-org/llama.cpp:server-cuda-b11206"
IMAGE_CPU = "ghcr.io/ggml-org/llama.cpp:server-b11206"
GPU_LAYER_FLAGS = ("-ngl", "--n-gpu-layers", "--gpu-layers")
PARALLEL_FLAGS = ("-np", "--parallel")
DEFAULT_SLOTS = 4  # llama-server's `--parallel` default (auto) gives 4 slots

_METRICS = (
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "llamacpp:kv_cache_usage_ratio",
    "llamacpp:tokens_predicted_total",
    "llamacpp:prompt_tokens_total",
)


def parse_llamacpp_metrics(text: str) -> EngineMetrics:
    from aitherctl.engines.metrics import EngineMetrics, PrometheusSamples, as_int

    """llama.cpp `GET /metrics` (the server runs with `--metrics`)."""
    samples = PrometheusSamples(text, _METRICS)
    return EngineMetrics(
        requests_running=as_int(samples.total("llamacpp:requests_processing")),
        requests_waiting=as_int(samples.total("llamacpp:requests_deferred")),
        kv_cache_usage_ratio=samples.highest("llamacpp:kv_cache_usage_ratio"),
        generation_tokens_total=samples.total("llamacpp:tokens_predicted_total"),
        prompt_tokens_total=samples.total("llamacpp:prompt_tokens_total"),
    )


def parse_llamacpp_slots(payload: Any) -> EngineMetrics:
    from aitherctl.engines.metrics import EngineMetrics, MetricsFormatError

    """llama.cpp `GET /slots`: a list with one object per slot; `is_processing` marks busy ones."""
    if not isinstance(payload, list) or not all(isinstance(slot, dict) for slot in payload):
        raise MetricsFormatError("llama.cpp /slots is not a list of slot objects")
    busy = sum(1 for slot in payload if slot.get("is_processing"))
    return EngineMetrics(slots_busy=busy, slots_total=len(payload))


class LlamaCppDriver:
    engine = "llamacpp"
    default_port = 8080
    default_timeout_s = 300.0
    health_path, client_path, queue_metric, _ = BUILT_IN["llamacpp"]
    metrics = (
        MetricsEndpoint("/metrics", "prometheus", parse_llamacpp_metrics),
        # /slots tells the same busy count: asked only when /metrics is off.
        MetricsEndpoint("/slots", "json", parse_llamacpp_slots, fallback=True),
    )
    release_needs_models = False

    def default_image(self, uses_gpu: bool) -> str | None:
        return IMAGE_CUDA if uses_gpu else IMAGE_CPU

    def container(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> EngineContainer:
        assert service.model is not None
        args = ["-m", service.model, "--host", "0.0.0.0", "--port", str(port), "--metrics"]
        args += ["--alias", service.model_name]
        del gpus
        if service.gpus and not has_flag(service.args, *GPU_LAYER_FLAGS):
            args += ["-ngl", "999"]
        args += list(service.args)
        return EngineContainer(command=tuple(args))

    def readiness(self, service: Service) -> tuple[HttpCheck, ...]:
        del service
        return (HttpCheck("/health"),)

    def allocates_gpu_at_start(self, spec: ContainerSpec) -> bool:
        return bool(spec.gpus) and flag_value(spec.command, *GPU_LAYER_FLAGS) not in ("0", None)

    def default_concurrency(self, service: Service) -> int | None:
        value = flag_value(service.args, *PARALLEL_FLAGS)
        if value is None:
            return DEFAULT_SLOTS
        return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_SLOTS

    def release_memory(self, loaded_models: Sequence[str]) -> tuple[HttpRequest, ...] | None:
        # The model stays loaded until the process ends: stop the service instead.
        del loaded_models
        return None

    def sleep_mode(self, service: Service) -> SleepMode | None:
        del service
        return None


DRIVER = LlamaCppDriver()
