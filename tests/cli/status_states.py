"""Every state `aitherctl status` and the monitor can show, as snapshots built field by field
(the readings a collector would have gathered), for the CLI and TUI rendering tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aitherctl.models.pull_model import DownloadState
from aitherctl.monitor.model import (
    BudgetMark,
    GpuView,
    HostStatusView,
    HostView,
    MonitorSnapshot,
    SchedulerBackendView,
    SchedulerEvent,
    SchedulerPoolView,
    SchedulerView,
    ScrapeStatus,
    ServiceView,
    UnmanagedProcess,
)

GIB = 1024**3
MIB = 1024**2
AT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
HOST = HostView(
    cpu_pct=12.5,
    cpu_count=16,
    ram_used_bytes=21 * GIB,
    ram_total_bytes=64 * GIB,
    swap_used_bytes=0,
    swap_total_bytes=8 * GIB,
    load_1m=1.25,
)
NO_DRIVER = "no NVIDIA driver (Driver Not Loaded)"
NO_DOCKER = (
    "cannot reach the Docker engine at unix:///var/run/docker.sock: connection refused "
    "(is dockerd running? set DOCKER_HOST or `docker context use`)"
)


def gpu(**changes: object) -> GpuView:
    view = GpuView(
        index=0,
        name="NVIDIA GeForce RTX 4090",
        memory_total_bytes=24 * GIB,
        memory_used_bytes=int(19.7 * GIB),
        utilization_pct=63.0,
        temperature_c=67.0,
        power_w=287.0,
        power_limit_w=450.0,
        budgets=(BudgetMark("chat", 14 * GIB), BudgetMark("embed", 2 * GIB)),
    )
    return replace(view, **changes)  # type: ignore[arg-type]


def service(name: str, **changes: object) -> ServiceView:
    view = ServiceView(
        name=name,
        engine="vllm",
        model="Qwen/Qwen2.5-14B-Instruct-AWQ",
        state="running",
        health="healthy",
        port=8001,
        bind="127.0.0.1",
        gpus=(0,),
        container_id=f"{name}-id",
        vram_used_bytes=int(13.2 * GIB),
        vram_budget_bytes=14 * GIB,
        requests_running=2,
        requests_waiting=1,
        tokens_per_s=42.0,
        uptime_s=7500.0,
        scrape=ScrapeStatus.OK,
        cpu_pct=85.3,
        ram_used_bytes=int(3.1 * GIB),
    )
    return replace(view, **changes)  # type: ignore[arg-type]


GPU_SERVICES = (
    service("chat"),
    service(
        "embed",
        engine="llamacpp",
        model="nomic-embed-text-v1.5.Q8_0.gguf",
        port=8002,
        vram_used_bytes=int(1.1 * GIB),
        vram_budget_bytes=2 * GIB,
        requests_running=0,
        requests_waiting=0,
        tokens_per_s=0.0,
        cpu_pct=1.5,
        ram_used_bytes=410 * MIB,
    ),
)
CPU_SERVICES = (
    service(
        "assistant",
        engine="llamacpp",
        model="/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        port=8091,
        gpus=(),
        health=None,
        vram_used_bytes=None,
        vram_budget_bytes=None,
        requests_running=1,
        requests_waiting=0,
        tokens_per_s=None,
        cpu_pct=181.2,
        ram_used_bytes=310 * MIB,
        ram_budget_bytes=4 * GIB,
    ),
    service(
        "big",
        engine="llamacpp",
        model="/models/big.gguf",
        port=8092,
        gpus=(),
        health=None,
        vram_used_bytes=None,
        vram_budget_bytes=None,
        requests_running=0,
        requests_waiting=0,
        tokens_per_s=None,
        cpu_pct=3.0,
        ram_used_bytes=int(4.5 * GIB),
        ram_budget_bytes=4 * GIB,
    ),
)
STARTING = service(
    "vision",
    model="Qwen/Qwen2.5-VL-3B-Instruct-AWQ",
    health="starting",
    port=8201,
    vram_used_bytes=int(2.0 * GIB),
    vram_budget_bytes=int(2.9 * GIB),
    requests_running=None,
    requests_waiting=None,
    tokens_per_s=None,
    uptime_s=12.0,
    scrape=ScrapeStatus.DOWN,
    cpu_pct=99.0,
    ram_used_bytes=int(1.2 * GIB),
)
EXITED = service(
    "coding",
    model="Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
    state="exited",
    health=None,
    port=8200,
    vram_used_bytes=None,
    vram_budget_bytes=int(4.3 * GIB),
    requests_running=None,
    requests_waiting=None,
    tokens_per_s=None,
    uptime_s=None,
    scrape=ScrapeStatus.SKIPPED,
    cpu_pct=None,
    ram_used_bytes=None,
)
SCHEDULER = SchedulerView(
    url="http://127.0.0.1:8150",
    profile="dev",
    backends=(
        SchedulerBackendView(
            name="chat",
            kind="service",
            state="ready",
            in_flight=1,
            limit=4,
            queued=2,
            queued_interactive=1,
            queued_normal=1,
            queued_batch=0,
            max_queue=64,
            claims_bytes=(("gpu:0", 14 * GIB),),
            pinned=True,
        ),
        SchedulerBackendView(
            name="reasoning",
            kind="service",
            state="stopped",
            in_flight=0,
            limit=1,
            queued=0,
            queued_interactive=0,
            queued_normal=0,
            queued_batch=0,
            max_queue=64,
            on_demand=True,
            last_error="did not answer /health within 300 s after loading",
        ),
        SchedulerBackendView(
            name="deepseek",
            kind="endpoint",
            state="ready",
            in_flight=0,
            limit=32,
            queued=0,
            queued_interactive=0,
            queued_normal=0,
            queued_batch=0,
            max_queue=None,
        ),
    ),
    pools=(SchedulerPoolView("gpu:0", 24 * GIB, 14 * GIB), SchedulerPoolView("ram", None, 0)),
    events=(
        SchedulerEvent(AT - timedelta(seconds=30), "queued", "chat", "normal, 2 waiting"),
        SchedulerEvent(
            AT - timedelta(seconds=20),
            "refused",
            "reasoning",
            "does not fit: needs 9.6 GiB of gpu:0, 8.0 GiB free after evicting nothing "
            "(chat is pinned)",
        ),
        SchedulerEvent(AT - timedelta(seconds=5), "served", "chat", "200 in 1.42s"),
    ),
)


def snapshot(**changes: object) -> MonitorSnapshot:
    view = MonitorSnapshot(
        taken_at=AT,
        active_profile="dev",
        docker_engine="Docker 28.2.2",
        docker_error=None,
        driver_version="550.54.15",
        gpu_error=None,
        gpus=(gpu(),),
        services=GPU_SERVICES,
        unmanaged=(UnmanagedProcess(900, "Xorg", 0, 410 * MIB),),
        host=HOST,
        scheduler=SchedulerView(url=None),
    )
    return replace(view, **changes)  # type: ignore[arg-type]


def no_gpu(**changes: object) -> MonitorSnapshot:
    return snapshot(gpus=(), gpu_error=NO_DRIVER, driver_version=None, unmanaged=(), **changes)


# name → snapshot: every state the services table, the GPU panel, the scheduler panel and the
# errors can be in.
STATES: dict[str, MonitorSnapshot] = {
    "gpu services, no serve": snapshot(),
    "no engine, no GPU": no_gpu(
        docker_engine=None, docker_error=NO_DOCKER, services=(), active_profile=None
    ),
    "no GPU, CPU services with ram budgets": no_gpu(
        active_profile="cpu-local", services=CPU_SERVICES
    ),
    # Served names shorter than the model column's least width (8): the columns still fit.
    "no GPU, CPU services with short model names": no_gpu(
        active_profile="duo",
        services=tuple(
            replace(
                svc,
                name=name,
                model=name,
                port=18731 + index,
                uptime_s=1082.0,
                cpu_pct=0.5,
                ram_used_bytes=49 * MIB,
                ram_budget_bytes=2 * GIB,
            )
            for index, (name, svc) in enumerate(zip(("big", "small"), CPU_SERVICES, strict=True))
        ),
    ),
    "no NVML, a CPU service and a stopped one": snapshot(
        gpus=(),
        gpu_error="nvidia-ml-py is not installed",
        driver_version=None,
        unmanaged=(),
        services=(CPU_SERVICES[0], EXITED),
    ),
    "running, starting and exited": snapshot(services=(*GPU_SERVICES, STARTING, EXITED)),
    "gpu readings missing (no temperature, power or utilisation)": snapshot(
        gpus=(
            gpu(
                temperature_c=None,
                power_w=None,
                power_limit_w=None,
                utilization_pct=None,
                budgets=(),
            ),
        ),
        services=(
            service(
                "chat",
                vram_used_bytes=None,
                cpu_pct=None,
                ram_used_bytes=None,
                requests_running=None,
                requests_waiting=None,
                tokens_per_s=None,
                scrape=ScrapeStatus.TIMEOUT,
                vram_budget_bytes=None,
            ),
        ),
    ),
    "serve running": snapshot(scheduler=SCHEDULER),
    "a model downloading (an Ollama service pulling it)": snapshot(
        services=(
            *GPU_SERVICES,
            service(
                "local",
                engine="ollama",
                model="llama3.2:1b",
                health=None,
                port=11434,
                vram_used_bytes=None,
                requests_running=None,
                requests_waiting=None,
                tokens_per_s=None,
                uptime_s=12.0,
                download=DownloadState(
                    "local", "local", "llama3.2:1b dde5aa3fc5ff", 594_494_248, 1_321_098_329, 0.0
                ),
            ),
            # No container yet: its files come first (a switch, `up`, serve's start, `pull`).
            ServiceView(
                name="coder",
                engine="vllm",
                model="Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
                state="downloading",
                health=None,
                port=None,
                bind=None,
                gpus=(),
                container_id=None,
                vram_used_bytes=None,
                vram_budget_bytes=None,
                download=DownloadState("coder", "local", "model.safetensors", 0, None, 0.0),
            ),
        )
    ),
    "serve unreachable": snapshot(
        scheduler=SchedulerView(url="http://127.0.0.1:8150", error="timed out after 1.0 s")
    ),
    "no services": snapshot(services=(), gpus=(gpu(budgets=()),), unmanaged=()),
    "another host unreachable": snapshot(
        hosts=(
            HostStatusView(
                "node-a",
                "ssh://ops@node-a",
                "Docker 28.2.2",
                None,
                services=1,
                gpu_error="on host 'node-a': no NVIDIA driver",
            ),
            HostStatusView(
                "node-b",
                "ssh://ops@node-b",
                None,
                "host 'node-b': cannot reach ssh://ops@node-b: connection refused",
            ),
        ),
        services=(
            *GPU_SERVICES,
            service("chat", host="node-a", vram_used_bytes=None, cpu_pct=None, ram_used_bytes=None),
        ),
    ),
}
