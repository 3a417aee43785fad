"""ComfyUI in its default image, `yanwk/comfyui-boot:cu130-slim-v2`.

Read from github.com/YanWenKun/ComfyUI-Docker, `cu130-slim-v2/Dockerfile` and
`cu130-slim-v2/runner-scripts/entrypoint.sh` (last changed in commit 3992aee).

How that image starts: no ENTRYPOINT, `CMD ["bash","/runner-scripts/entrypoint.sh"]`, which
copies the bundled ComfyUI to `/root/ComfyUI` when it is missing, runs
`/root/user-scripts/pre-start.sh`, then
`python3.13 ./ComfyUI/main.py --listen --port 8188 --enable-manager
--enable-manager-legacy-ui ${CLI_ARGS}`.
So aitherctl passes no command (a command would replace that script and ComfyUI would not start)
and puts its flags in `CLI_ARGS`. The script expands `${CLI_ARGS}` unquoted: bash splits it on
spaces and expands `*`, `?` and `[`, and it does not read quotes, so an argument holding any of
those cannot be passed and is refused. `--listen` and `--port 8188` come from the script;
`--port` is added only when the service listens elsewhere (argparse keeps the last one).

User data, as the image's README lays it out, lives in named volumes that survive a recreate:
custom nodes (`/root/ComfyUI/custom_nodes`) and the Python packages they install
(`/root/.local`: the script sets PIP_USER=true), models, the user folder (settings and
workflows, `/root/ComfyUI/user`), input, output, `/root/user-scripts`, the download caches
(`/root/.cache`: Hugging Face and torch hubs) and `/root/.config`. `/root/ComfyUI` itself stays
in the container, so a new image tag brings its own ComfyUI. The Dockerfile declares no VOLUME
(commit ff7a0ce removed it): nothing anonymous is created.

Memory (comfy/model_management.py): ComfyUI has no "use at most N GB" flag. Before loading a model
it frees its own models until the GPU's free memory (CUDA `mem_get_info`, which already leaves out
what every other process holds) exceeds what it needs plus `--reserve-vram` GB, and it loads
weights only into free memory beyond that reserve. So ComfyUI holds at most
`total - (what others hold) - reserve`. With `reserve = total - budget` the others are counted
twice (once as memory that is not free, once in the reserve) and ComfyUI gets `budget - others`.
aitherctl passes

    reserve = total - budget - (budgets of the profile's other resident services on that GPU)

so ComfyUI's ceiling is `budget + (neighbours' budgets - what they hold) - memory held outside
aitherctl`: exactly its budget when its neighbours hold their budgets and nothing outside
aitherctl holds memory; less when something outside does (the profile's `gpu.reserve` stays
headroom, ComfyUI does not get it); more only while a neighbour holds less than its budget, and
then never more than that neighbour's unused budget. On-demand services are left out: counting
them would let ComfyUI grow into their room while they are stopped. The reserve is rounded up to
whole MiB and written in GB as ComfyUI reads it (x1024³). A neighbour's budget is part of
ComfyUI's command, so changing it recreates ComfyUI. ComfyUI uses the first of its GPUs.

It does not allocate at start: it creates a CUDA context and reads the GPU's total; models load when
a prompt runs, sized from free memory at that moment. One prompt runs at a time. Ready when
`GET /system_stats` answers. Load: `GET /queue` (`queue_running`, `queue_pending`) and
`GET /system_stats` (`devices[].torch_vram_total`: what PyTorch reserved). `POST /free`
`{"unload_models": true, "free_memory": true}` (server.py) gives memory back a moment later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
from aitherctl.errors import RefusedError
from aitherctl.profiles.profile import Service, Volume
from aitherctl.units import MIB, decimal_text

if TYPE_CHECKING:
    from aitherctl.engines.metrics import EngineMetrics

# `cu130-slim-v2-YYYYMMDD` is the dated tag the image's workflow pushes beside `cu130-slim-v2`.
IMAGE = "yanwk/comfyui-boot:cu130-slim-v2-20260814"
IMAGE_PORT = 8188  # the entrypoint script's `--port 8188`
CLI_ARGS = "CLI_ARGS"
# Characters bash acts on in the script's unquoted `${CLI_ARGS}` (splitting and globbing).
_UNSAFE = frozenset(" \t\n*?[")

USER_DATA: tuple[Volume, ...] = (
    Volume("aither-comfyui-custom-nodes", "/root/ComfyUI/custom_nodes"),
    Volume("aither-comfyui-models", "/root/ComfyUI/models"),
    Volume("aither-comfyui-user", "/root/ComfyUI/user"),
    Volume("aither-comfyui-input", "/root/ComfyUI/input"),
    Volume("aither-comfyui-output", "/root/ComfyUI/output"),
    Volume("aither-comfyui-local", "/root/.local"),
    Volume("aither-comfyui-user-scripts", "/root/user-scripts"),
    Volume("aither-comfyui-cache", "/root/.cache"),
    Volume("aither-comfyui-config", "/root/.config"),
)


def reserve_bytes(gpu: GpuShare) -> int:
    """What ComfyUI must leave free on `gpu` so that it keeps to its budget (module docstring)."""
    return max(gpu.total_bytes - gpu.budget_bytes - gpu.neighbours_bytes, 0)


def reserve_gb_text(reserve: int) -> str:
    """`--reserve-vram`'s value: `reserve` bytes rounded up to whole MiB, in GB of 1024³ bytes,
    written exactly (a MiB is 1/1024 GB, a finite decimal)."""
    from fractions import Fraction

    return decimal_text(Fraction(math.ceil(reserve / MIB), 1024))


def parse_comfyui_queue(payload: Any) -> EngineMetrics:
    from aitherctl.engines.metrics import EngineMetrics, MetricsFormatError

    """ComfyUI `GET /queue`: `queue_running` and `queue_pending` are lists of prompts."""
    if not isinstance(payload, dict):
        raise MetricsFormatError("ComfyUI /queue is not an object")
    running, pending = payload.get("queue_running"), payload.get("queue_pending")
    if not isinstance(running, list) or not isinstance(pending, list):
        raise MetricsFormatError("ComfyUI /queue lacks queue_running/queue_pending lists")
    return EngineMetrics(requests_running=len(running), requests_waiting=len(pending))


def parse_comfyui_system_stats(payload: Any) -> EngineMetrics:
    from aitherctl.engines.metrics import EngineMetrics, MetricsFormatError, opt_int

    """ComfyUI `GET /system_stats`: memory PyTorch reserved (`torch_vram_total`) on its devices.

    `vram_total - vram_free` would be the whole GPU's use, other processes included; the
    torch figure is what ComfyUI itself holds.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("devices"), list):
        raise MetricsFormatError("ComfyUI /system_stats has no `devices` list")
    held = [
        opt_int(device.get("torch_vram_total"))
        for device in payload["devices"]
        if isinstance(device, Mapping) and device.get("type") == "cuda"
    ]
    known = [value for value in held if value is not None]
    return EngineMetrics(engine_vram_bytes=sum(known) if known else None)


class ComfyUiDriver:
    engine = "comfyui"
    default_port = IMAGE_PORT
    default_timeout_s = 300.0
    health_path, client_path, queue_metric, _ = BUILT_IN["comfyui"]
    metrics = (
        MetricsEndpoint("/queue", "json", parse_comfyui_queue),
        MetricsEndpoint("/system_stats", "json", parse_comfyui_system_stats),
    )
    release_needs_models = False

    def default_image(self, uses_gpu: bool) -> str | None:
        del uses_gpu  # the CUDA image runs on the CPU with --cpu (the image's own CI does so)
        return IMAGE

    def cli_args(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> list[str]:
        args: list[str] = []
        if port != IMAGE_PORT:
            args += ["--port", str(port)]
        if gpus:
            args += ["--reserve-vram", reserve_gb_text(reserve_bytes(gpus[0]))]
        elif not service.gpus:
            args.append("--cpu")
        args += list(service.args)
        for arg in args:
            if not arg or _UNSAFE & set(arg):
                raise RefusedError(
                    f"service {service.name!r}: ComfyUI's image passes arguments through "
                    f"CLI_ARGS, split on spaces; {arg!r} cannot be passed (no spaces, *, ? or [)"
                )
        return args

    def container(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> EngineContainer:
        env = ((CLI_ARGS, " ".join(self.cli_args(service, port, gpus))),)
        return EngineContainer(env=env, volumes=unless_mounted(service, USER_DATA))

    def readiness(self, service: Service) -> tuple[HttpCheck, ...]:
        del service
        return (HttpCheck("/system_stats"),)

    def allocates_gpu_at_start(self, spec: ContainerSpec) -> bool:
        del spec
        return False

    def default_concurrency(self, service: Service) -> int | None:
        del service
        return 1  # one prompt worker

    def release_memory(self, loaded_models: Sequence[str]) -> tuple[HttpRequest, ...] | None:
        del loaded_models
        return (HttpRequest("POST", "/free", {"unload_models": True, "free_memory": True}),)

    def sleep_mode(self, service: Service) -> SleepMode | None:
        del service
        return None


DRIVER = ComfyUiDriver()
