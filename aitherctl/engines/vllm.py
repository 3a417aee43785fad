"""vLLM's OpenAI-compatible server (image `vllm/vllm-openai`: its entrypoint is the server, so the
command is the server's arguments).

Memory: `--gpu-memory-utilization` is the share of the GPU's *total* memory this instance may
take for weights, activations and KV cache. A percentage budget is passed exactly (`35%` →
`0.35`: the share is a `Fraction`, never a float product). A byte budget becomes
budget ÷ total rounded *down* to 4 decimals, so the budget is never exceeded.

Tensor parallel across unequal cards (24 GB + 48 GB): vLLM applies one utilisation to every rank,
each against its own card's total. A percentage is therefore exact on every card (35% is 8.4 GB
on the first and 16.8 GB on the second, the budgets `gpu_vram` records). A byte budget is the
same number of bytes on each card, so the utilisation is budget ÷ the *largest* total: the
smallest share that fits every card (on the larger card a larger share would exceed the budget).

vLLM measures free memory when it starts and takes its whole share at once: it allocates at start.
The image (docker/Dockerfile, target `vllm-openai`) declares no VOLUME; models it downloads go to
`/root/.cache/huggingface`, kept in the named volume `aither-hf-cache` so a recreated container
does not download them again (the mount vLLM's Docker guide gives).
Ready when `GET /health` is 200 and `GET /v1/models` lists the served model.
Load: `GET /metrics` (Prometheus): `vllm:num_requests_running`, `vllm:num_requests_waiting`,
`vllm:kv_cache_usage_perc` (0..1; `vllm:gpu_cache_usage_perc` before v0.10),
`vllm:generation_tokens_total`, `vllm:prompt_tokens_total`, labelled `model_name` (and `engine`
on newer versions); values are summed over labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aitherctl.engines.base import (
    EngineContainer,
    GpuShare,
    HttpRequest,
    MetricsEndpoint,
    SleepMode,
    flag_value,
    has_flag,
    unless_mounted,
)
from aitherctl.engines.container import ContainerSpec, HttpCheck
from aitherctl.engines.facts import BUILT_IN
from aitherctl.profiles.profile import Service, Volume
from aitherctl.units import decimal_text, floor_to

if TYPE_CHECKING:
    from aitherctl.engines.metrics import EngineMetrics

# Checked on Docker Hub's tag list as used by public projects (v0.30.0, CUDA 13 build; a
# `-cu129` variant exists for CUDA 12 drivers).
IMAGE = "vllm/vllm-openai:v0.30.0"
SLEEP_FLAG = "--enable-sleep-mode"
DEV_MODE = "VLLM_SERVER_DEV_MODE"
HF_CACHE = Volume("aither-hf-cache", "/root/.cache/huggingface")

_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
)


def parse_vllm_metrics(text: str) -> EngineMetrics:
    from aitherctl.engines.metrics import EngineMetrics, PrometheusSamples, as_int

    """vLLM `GET /metrics`. Older servers call the KV gauge `vllm:gpu_cache_usage_perc`."""
    samples = PrometheusSamples(text, _METRICS)
    return EngineMetrics(
        requests_running=as_int(samples.total("vllm:num_requests_running")),
        requests_waiting=as_int(samples.total("vllm:num_requests_waiting")),
        kv_cache_usage_ratio=samples.highest(
            "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"
        ),
        generation_tokens_total=samples.total("vllm:generation_tokens_total"),
        prompt_tokens_total=samples.total("vllm:prompt_tokens_total"),
    )


def utilization(service: Service, gpus: Sequence[GpuShare]) -> str:
    """`--gpu-memory-utilization` for `service` on `gpus` (see the module docstring)."""
    assert service.vram is not None
    assert gpus
    if service.vram.share is not None:
        return decimal_text(service.vram.share)
    largest = max(gpu.total_bytes for gpu in gpus)
    budget = min(gpu.budget_bytes for gpu in gpus)
    from fractions import Fraction

    return decimal_text(floor_to(Fraction(budget, largest), 4))


class VllmDriver:
    engine = "vllm"
    default_port = 8000
    default_timeout_s = 900.0  # a first start may download and compile a large model
    health_path, client_path, queue_metric, _ = BUILT_IN["vllm"]
    metrics = (MetricsEndpoint("/metrics", "prometheus", parse_vllm_metrics),)
    release_needs_models = False

    def default_image(self, uses_gpu: bool) -> str | None:
        del uses_gpu
        return IMAGE

    def container(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> EngineContainer:
        assert service.model is not None
        args = ["--model", service.model, "--served-model-name", service.model_name]
        args += ["--port", str(port)]
        if gpus and service.vram is not None:
            args += ["--gpu-memory-utilization", utilization(service, gpus)]
        if len(service.gpus) > 1 and not has_flag(service.args, "--tensor-parallel-size", "-tp"):
            args += ["--tensor-parallel-size", str(len(service.gpus))]
        args += list(service.args)
        # Tensor-parallel workers share memory through /dev/shm: use the host's IPC namespace.
        volumes = unless_mounted(service, [HF_CACHE])
        env: tuple[tuple[str, str], ...] = ()
        if has_flag(service.args, SLEEP_FLAG) and DEV_MODE not in dict(service.env):
            # The sleep routes are development endpoints: the server binds to the service's
            # `bind` (loopback by default), so only this machine can reach them.
            env = ((DEV_MODE, "1"),)
        return EngineContainer(command=tuple(args), env=env, ipc_host=True, volumes=volumes)

    def readiness(self, service: Service) -> tuple[HttpCheck, ...]:
        return (HttpCheck("/health"), HttpCheck("/v1/models", model=service.model_name))

    def allocates_gpu_at_start(self, spec: ContainerSpec) -> bool:
        return bool(spec.gpus)

    def default_concurrency(self, service: Service) -> int | None:
        # `--max-num-seqs`; without it vLLM picks a default from the hardware and usage context.
        value = flag_value(service.args, "--max-num-seqs")
        return int(value) if value is not None and value.isdigit() else None

    def release_memory(self, loaded_models: Sequence[str]) -> tuple[HttpRequest, ...] | None:
        # vLLM keeps weights and KV cache until the process ends, unless it sleeps (below).
        del loaded_models
        return None

    def sleep_mode(self, service: Service) -> SleepMode | None:
        """With `--enable-sleep-mode` (CUDA only), `POST /sleep?level=1` offloads the weights to
        host RAM and drops the KV cache, `POST /wake_up` brings them back (both answer once the
        work is done), `GET /is_sleeping` says which. While asleep, /health and /v1/models
        still answer 200 and a generation request is accepted and held until the wake: only
        the scheduler's own state keeps requests away from a sleeping server. `mode=wait` lets
        a request already running (one sent around the gateway) finish rather than be aborted
        (the default). The routes exist only with VLLM_SERVER_DEV_MODE=1, which `container`
        sets (vLLM docs features/sleep_mode.md; entrypoints/openai/api_server.py,
        v1/engine/core.py)."""
        if not has_flag(service.args, SLEEP_FLAG):
            return None
        return SleepMode(
            sleep=HttpRequest("POST", "/sleep?level=1&mode=wait"),
            wake=HttpRequest("POST", "/wake_up"),
            status_path="/is_sleeping",
        )


DRIVER = VllmDriver()
