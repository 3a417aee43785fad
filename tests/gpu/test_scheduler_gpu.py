"""On a real NVIDIA GPU: an eviction frees real GPU memory before the next load is allowed.

The "model" of each service is a PyTorch process holding its budget on GPU 0 (the stand-in for
an inference server: no Docker here). The scheduler's I/O for starting and stopping is replaced
by starting and killing those processes; everything else is the real scheduler and the real
NVML reading (`aitherctl.cli.runtime.gpu_inventory`). The second service's start records how
much memory NVML showed free at that moment: it must be at least its budget, so the load was
not let in while the first one's memory was still held.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from aitherctl.cli.runtime import gpu_inventory
from aitherctl.errors import DockerUnavailableError
from aitherctl.profiles.loader import load_profile_text
from aitherctl.routing.table import build_routing
from aitherctl.serve.control import ServiceControl
from aitherctl.serve.discovery import memory_pools
from aitherctl.serve.scheduler import Scheduler

GIB = 1024**3


def _holder(gib: float) -> subprocess.Popen[str]:
    code = (
        "import time, torch\n"
        f"x = torch.empty(int({gib} * 1024**3), dtype=torch.uint8, device='cuda:0')\n"
        "x.fill_(1); torch.cuda.synchronize(); print('holding', flush=True)\n"
        "time.sleep(3600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def _no_engine() -> Any:
    raise DockerUnavailableError("no Docker engine in this test: its services are processes")


class ProcessControl(ServiceControl):
    """Start = a process holding the service's budget; stop = kill it (the memory is freed
    by the driver some time after the process ends, as with a container)."""

    def __init__(self, budgets: dict[str, float]) -> None:
        super().__init__(_no_engine, gpu_inventory, "gpuswap", None)  # type: ignore[arg-type]
        self.budgets = budgets
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.free_at_start: dict[str, int] = {}
        self.lock = threading.Lock()

    def start_blocking(self, service: str, cancel: threading.Event, report: Any = None) -> None:
        del cancel, report
        inventory = gpu_inventory()
        gpu = inventory.gpus[0]
        self.free_at_start[service] = gpu.memory_total_bytes - gpu.memory_used_bytes
        self.processes[service] = _holder(self.budgets[service])

    def stop_blocking(self, service: str) -> None:
        process = self.processes.pop(service)
        process.kill()  # returns at once: the memory is released a little later

    def running_blocking(self) -> set[str]:
        return set(self.processes)


def test_eviction_frees_real_gpu_memory_before_the_next_load() -> None:
    pytest.importorskip("torch")
    inventory = gpu_inventory()
    total = inventory.gpus[0].memory_total_bytes
    used_now = inventory.gpus[0].memory_used_bytes
    # Two services that each take 60% of what is free now: one fits, two do not.
    share = 0.6 * (total - used_now) / total
    budget_gib = share * total / GIB
    percent = f"{share * 100:.1f}%"
    text = f"""
name: gpuswap
gpu: {{reserve: {(used_now / total) * 100 + 1:.1f}%}}
services:
  first: {{engine: generic, image: x, port: 18901, gpu: 0, vram: "{percent}",
           health: {{path: /}}, on_demand: true}}
  second: {{engine: generic, image: x, port: 18902, gpu: 0, vram: "{percent}",
            health: {{path: /}}, on_demand: true}}
"""
    profile = load_profile_text(text, "gpuswap.yaml")
    control = ProcessControl({"first": budget_gib, "second": budget_gib})

    async def scenario() -> None:
        pools = memory_pools(profile, inventory, ram_total=64 * GIB)
        scheduler = Scheduler(profile, build_routing(profile), control, pools, running=set())
        scheduler.backends["first"].limit = scheduler.backends["second"].limit = 1
        from aitherctl.serve.model import Priority

        lease = await scheduler.acquire("first", Priority.NORMAL)
        scheduler.release(lease)
        started = time.monotonic()
        lease = await scheduler.acquire("second", Priority.NORMAL)
        scheduler.release(lease)
        print(f"evict + wait for free memory + load: {time.monotonic() - started:.2f}s")
        await scheduler.close(0)

    try:
        asyncio.run(scenario())
        assert "first" not in control.processes
        need = int(budget_gib * GIB)
        assert control.free_at_start["second"] >= need, (
            f"second started with {control.free_at_start['second'] / GIB:.2f} GiB free, "
            f"needs {budget_gib:.2f} GiB"
        )
    finally:
        for process in control.processes.values():
            process.kill()
