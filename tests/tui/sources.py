"""Fixed monitor sources for deterministic TUI tests: the stack, host and scrapes as recorded
values, GPUs from the NVML contract double, PIDs mapped through a laid-out /proc tree."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines.metrics import EngineMetrics
from aitherctl.gpu.nvml import NvmlReader
from aitherctl.monitor.collect import MonitorCollector, SchedulerSource
from aitherctl.monitor.model import HostView, SchedulerView, ScrapeStatus, StackReading
from aitherctl.monitor.procs import ProcessTable
from aitherctl.monitor.scrape import ScrapeResult
from tests.doubles.nvml_double import GIB, FakeGpu, NvmlDouble

FROZEN_AT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def container(
    service: str,
    number: int,
    *,
    engine: str,
    port: int,
    gpus: tuple[int, ...] = (0,),
    vram_gib: float | None = 8,
    state: str = "running",
    model: str | None = None,
) -> ManagedContainer:
    return ManagedContainer(
        id=f"{number:x}" * 64 if number < 16 else f"{number:064x}",
        name=f"aither-{service}",
        service=service,
        profile="coding",
        spec_hash="0" * 12,
        state=state,
        image=f"aither-test/{engine}:latest",
        engine=engine,
        model=model or f"{service}-model",
        served_model=None,
        port=port,
        bind="127.0.0.1",
        gpus=gpus,
        vram_bytes=int(vram_gib * GIB) if vram_gib else None,
        role=None,
        pinned=False,
        on_demand=False,
        health_checks=(),
        created_at="2025-06-01T10:00:00Z",
        started_at=(FROZEN_AT - timedelta(hours=2, minutes=5)).isoformat()
        if state == "running"
        else None,
    )


CONTAINERS = (
    container("chat", 1, engine="vllm", port=8001, vram_gib=14, model="Qwen2.5-14B-AWQ"),
    container("embed", 2, engine="llamacpp", port=8002, vram_gib=2, model="nomic-embed"),
    container("ollama", 3, engine="ollama", port=11434, vram_gib=4),
    container("image", 4, engine="comfyui", port=8188, gpus=(), vram_gib=None, state="exited"),
)
# Host PIDs: chat's GPU process (201) is a grandchild of its init (200).
PIDS = {
    200: (1, "python3"),
    201: (200, "python3"),
    202: (201, "VLLM::EngineCor"),
    300: (1, "llama-server"),
    400: (1, "ollama"),
    900: (1, "Xorg"),
}
OWNER = {200: 1, 201: 1, 202: 1, 300: 2, 400: 3}


def lay_out_proc(root: Path) -> Path:
    for pid, (ppid, comm) in PIDS.items():
        folder = root / str(pid)
        folder.mkdir(parents=True)
        (folder / "comm").write_text(comm + "\n")
        (folder / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0\n")
        number = OWNER.get(pid)
        cid = CONTAINERS[number - 1].id if number else None
        (folder / "cgroup").write_text(
            f"0::/system.slice/docker-{cid}.scope\n" if cid else "0::/user.slice/session-2\n"
        )
    return root


def gpu_double() -> NvmlDouble:
    return NvmlDouble(
        [
            FakeGpu(
                name="NVIDIA GeForce RTX 4090",
                total_bytes=24 * GIB,
                utilization=63,
                temperature=67,
                power_mw=287_000,
                processes=[
                    (202, int(13.2 * GIB)),
                    (300, int(1.1 * GIB)),
                    (400, int(5.0 * GIB)),
                    (900, int(0.4 * GIB)),
                ],
            )
        ],
        driver_version="550.54.15",
    )


@dataclass
class FixedStack:
    reading: StackReading

    def read(self) -> StackReading:
        return self.reading


@dataclass
class FixedHost:
    view: HostView = field(
        default_factory=lambda: HostView(
            cpu_pct=12.5,
            cpu_count=16,
            ram_used_bytes=21 * GIB,
            ram_total_bytes=64 * GIB,
            swap_used_bytes=0,
            swap_total_bytes=8 * GIB,
            load_1m=1.25,
        )
    )

    def read(self) -> HostView:
        return self.view


@dataclass
class FixedScraper:
    """Counters advance by `tokens_per_refresh` per call, one second apart."""

    results: dict[str, ScrapeResult]
    tokens_per_refresh: float = 42.0
    calls: int = 0

    def scrape_all(self, targets: Iterable[Any]) -> dict[str, ScrapeResult]:
        self.calls += 1
        wanted = {target.service for target in targets}
        out = {}
        for name, result in self.results.items():
            if name not in wanted:
                continue
            metrics = result.metrics
            if metrics is not None and metrics.generation_tokens_total is not None:
                total = metrics.generation_tokens_total + self.calls * self.tokens_per_refresh
                metrics = replace(metrics, generation_tokens_total=total)
            out[name] = replace(result, metrics=metrics, read_at_s=float(self.calls))
        return out


def fixed_scrapes() -> dict[str, ScrapeResult]:
    return {
        "chat": ScrapeResult(
            "chat",
            ScrapeStatus.OK,
            EngineMetrics(
                requests_running=2,
                requests_waiting=1,
                kv_cache_usage_ratio=0.41,
                generation_tokens_total=1000.0,
            ),
            latency_s=0.004,
        ),
        "embed": ScrapeResult(
            "embed", ScrapeStatus.TIMEOUT, None, error="no answer within 0.75 s", latency_s=0.75
        ),
        "ollama": ScrapeResult(
            "ollama", ScrapeStatus.OK, EngineMetrics(engine_vram_bytes=5 * GIB), latency_s=0.003
        ),
    }


def scheduler_fixture(name: str = "busy") -> dict[str, Any]:
    """A `GET /status` captured from a real `aitherctl serve` (see its `_source`)."""
    document: dict[str, Any] = json.loads((FIXTURES / f"scheduler_status_{name}.json").read_text())
    return document


@dataclass
class FixedScheduler:
    """The scheduler as one captured reading, or none serving."""

    view: SchedulerView
    reads: int = 0

    @classmethod
    def captured(cls, name: str = "busy") -> FixedScheduler:
        from aitherctl.monitor.serve_status import parse_status

        return cls(
            parse_status(scheduler_fixture(name), url="http://127.0.0.1:8150", latency_s=0.002)
        )

    def read(self) -> SchedulerView:
        self.reads += 1
        return self.view


def fixed_collector(
    tmp_path: Path,
    *,
    with_gpu: bool = True,
    with_docker: bool = True,
    scheduler: SchedulerSource | None = None,
) -> MonitorCollector:
    if with_docker:
        stack = FixedStack(
            StackReading(
                containers=CONTAINERS,
                active_profile="coding",
                engine="Docker 28.2.2",
                health={CONTAINERS[0].id: "healthy"},
                init_pids={CONTAINERS[0].id: 200, CONTAINERS[1].id: 300, CONTAINERS[2].id: 400},
            )
        )
    else:
        stack = FixedStack(
            StackReading(
                error="cannot reach the Docker engine at "
                "unix:///var/run/docker.sock: connection refused"
            )
        )
    return MonitorCollector(
        stack=stack,
        gpus=NvmlReader(gpu_double() if with_gpu else NvmlDouble(driver_loaded=False)),
        scraper=FixedScraper(fixed_scrapes()),
        procs=ProcessTable(lay_out_proc(tmp_path / "proc")),
        host=FixedHost(),
        scheduler=scheduler,
        wall_clock=lambda: FROZEN_AT,
        monotonic=iter(range(10**6)).__next__,
    )
