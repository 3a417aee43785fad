"""ComfyUI (default image `yanwk/comfyui-boot`, which reads its flags from `CLI_ARGS`).

ComfyUI has no "use at most N GB" flag; `--reserve-vram X` keeps X GB of the GPU for others,
so X is the GPU's total memory minus the service's budget. The flags go both into `CLI_ARGS`
(for images that read it) and onto the command (for images whose entrypoint is `main.py`).
Ready when `GET /system_stats` answers.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping

from aitherctl.core.container import HttpCheck
from aitherctl.core.profile import Service, Volume
from aitherctl.core.units import GIB

DEFAULT_PORT = 8188
DEFAULT_TIMEOUT_S = 300.0


def reserve_gb(vram_bytes: int, total_bytes: int) -> float:
    """GB (ComfyUI counts 1024**3 bytes) to reserve, rounded up so the budget is never exceeded."""
    return math.ceil(max(total_bytes - vram_bytes, 0) / GIB * 10) / 10


def command(
    service: Service, port: int, gpu_memory: Mapping[int, int], vram_bytes: int | None
) -> tuple[list[str], list[tuple[str, str]], bool]:
    args = ["--listen", "0.0.0.0", "--port", str(port)]
    if service.gpus and vram_bytes is not None:
        total = min(gpu_memory[index] for index in service.gpus)
        args += ["--reserve-vram", f"{reserve_gb(vram_bytes, total):g}"]
    elif not service.gpus:
        args.append("--cpu")
    args += list(service.args)
    return args, [("CLI_ARGS", shlex.join(args))], False


def readiness(service: Service) -> tuple[HttpCheck, ...]:
    del service
    return (HttpCheck("/system_stats"),)


def default_volumes(service: Service) -> list[Volume]:
    del service
    return []
