"""The monitor's view of the workstation at one moment: what `monitor` draws and `status` prints.

One immutable `MonitorSnapshot` per refresh, built by `aitherctl.monitor.collect`. The TUI renders
it, `status` renders it with Rich, and `status --json` writes `snapshot_to_dict(snapshot)`.
`None` means unknown; "N/A" appears only when rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from aitherctl.models.pull_model import DownloadState
from aitherctl.units import over_budget


@dataclass(frozen=True, slots=True)
class BudgetMark:
    """A service's VRAM budget on one GPU (the profile's `vram`, resolved against the GPU)."""

    service: str
    budget_bytes: int


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU: NVML's readings plus the budgets marked on its bar and its recent history."""

    index: int
    name: str
    memory_total_bytes: int
    memory_used_bytes: int
    utilization_pct: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    budgets: tuple[BudgetMark, ...] = ()
    # Oldest first, one entry per refresh; the TUI draws these as sparklines. None: NVML gave
    # no utilisation that time (not supported on the board), drawn as a gap, not as 0%.
    memory_used_history_bytes: tuple[int, ...] = ()
    utilization_history_pct: tuple[float | None, ...] = ()
    host: str = "local"  # the profile's name for the machine it is in (`hosts:`)

    @property
    def label(self) -> str:
        """`GPU 0` here, `node-a GPU 0` on another host."""
        return f"GPU {self.index}" if self.host == "local" else f"{self.host} GPU {self.index}"

    @property
    def memory_used_ratio(self) -> float:
        return self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


class ScrapeStatus(StrEnum):
    OK = "ok"
    SLOW = "slow"  # answered, but slower than the refresh can wait for
    TIMEOUT = "timeout"  # no answer before the deadline
    DOWN = "down"  # connection refused or reset
    ERROR = "error"  # answered with an error status or a payload we cannot read
    SKIPPED = "skipped"  # not scraped: the container is not running, or no endpoint


@dataclass(frozen=True, slots=True)
class ServiceView:
    """One managed service: its container, the memory NVML sees it hold, and its load."""

    name: str
    engine: str
    model: str | None
    state: str  # container state: running, restarting, exited, ...; `downloading`: no container yet
    health: str | None  # starting, healthy, unhealthy; None without a health check
    port: int | None
    bind: str | None
    gpus: tuple[int, ...]
    container_id: str | None
    vram_used_bytes: int | None  # NVML per-process memory of the container's processes
    vram_budget_bytes: int | None  # the profile's budget, summed over its GPUs
    requests_running: int | None = None
    requests_waiting: int | None = None
    kv_cache_usage_ratio: float | None = None
    tokens_per_s: float | None = None  # generation tokens per second, from counter deltas
    engine_vram_bytes: int | None = None  # what the engine reports (Ollama size_vram, ComfyUI)
    loaded_models: tuple[str, ...] = ()  # Ollama
    uptime_s: float | None = None
    scrape: ScrapeStatus = ScrapeStatus.SKIPPED
    scrape_error: str | None = None
    scrape_latency_s: float | None = None
    host: str = "local"  # the profile's name for the Docker host it runs on
    url: str | None = None  # where this machine reaches it (http://address:port)
    # Its cgroup, as `docker stats` reads it (this machine's engine only): CPU in % of one core
    # between two readings, memory less inactive page cache; and its profile's `ram:` budget.
    cpu_pct: float | None = None
    ram_used_bytes: int | None = None
    ram_budget_bytes: int | None = None
    # Its model downloading now (a switch, `up`, `pull` or serve's start: models/downloads.py).
    download: DownloadState | None = None

    @property
    def over_budget(self) -> bool:
        return over_budget(self.vram_used_bytes, self.vram_budget_bytes)

    @property
    def over_ram_budget(self) -> bool:
        return over_budget(self.ram_used_bytes, self.ram_budget_bytes)

    @property
    def key(self) -> str:
        """Unique in a snapshot: the name here, `name@host` on another host."""
        return self.name if self.host == "local" else f"{self.name}@{self.host}"


@dataclass(frozen=True, slots=True)
class UnmanagedProcess:
    """GPU memory held by a process aitherctl does not manage (a desktop, a notebook...)."""

    pid: int
    name: str | None
    gpu_index: int
    used_bytes: int | None
    container_id: str | None = None  # a container of someone else's, when it is one
    host: str = "local"


@dataclass(frozen=True, slots=True)
class HostView:
    """Host CPU and memory (psutil: `cpu_percent`, `virtual_memory`, `swap_memory`)."""

    cpu_pct: float | None
    cpu_count: int | None
    ram_used_bytes: int | None
    ram_total_bytes: int | None
    swap_used_bytes: int | None
    swap_total_bytes: int | None
    load_1m: float | None = None


class LogKind(StrEnum):
    SWITCH = "switch"
    PROBE = "probe"  # a scrape or health probe failed
    RESTART = "restart"
    FALLBACK = "fallback"  # routing fell back to another backend, and was answered (the ledger)
    REFUSED = "refused"  # routing refused a request: the daily budget (the ledger)
    FAILED = "failed"  # routing found no backend that answered (the ledger)
    ACTION = "action"  # something the user did from the monitor
    INFO = "info"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the monitor's event log: when, what kind of event, and what happened."""

    at: datetime
    kind: LogKind
    message: str


@dataclass(frozen=True, slots=True)
class StackReading:
    """The managed containers as the Docker engine lists them, or why it could not."""

    containers: tuple[Any, ...] = ()  # aitherctl.docker.stack.ManagedContainer or alike
    active_profile: str | None = None
    engine: str | None = None  # "Docker 28.2.2"
    error: str | None = None
    health: dict[str, str] = field(default_factory=dict)  # container id → Docker health status
    init_pids: dict[str, int | None] = field(default_factory=dict)  # container id → host PID
    events: tuple[LogEntry, ...] = ()  # what happened since the previous reading


@dataclass(frozen=True, slots=True)
class SchedulerBackendView:
    """One backend of `aitherctl serve` as its `GET /status` lists it (`backends[]`)."""

    name: str  # `backend`
    kind: str  # service, endpoint or node (a rented GPU)
    state: str  # ready, loading, evicting, stopped, asleep, unloaded
    in_flight: int
    limit: int  # concurrency limit: llama.cpp slots, vLLM max_num_seqs, max_concurrency
    queued: int
    queued_interactive: int  # `queued_by_priority`
    queued_normal: int
    queued_batch: int
    max_queue: int | None
    pinned: bool = False
    on_demand: bool = False
    displaced: bool = False  # a resident service put away to make room
    claims_bytes: tuple[tuple[str, int], ...] = ()  # (pool, bytes) it holds while loaded
    last_error: str | None = None
    # `last_used_ts`: the scheduler's own monotonic clock, not wall time; only comparable
    # between backends of the same gateway.
    last_used_clock_s: float | None = None
    # A rented node: its instance's whole hourly price (None: no instance), what it cost
    # today, and how long it may stay idle before serve destroys it (None: busy, not running,
    # or never idle-destroyed).
    price_per_hour_usd: float | None = None
    spent_today_usd: float | None = None
    idle_left_s: float | None = None


@dataclass(frozen=True, slots=True)
class SchedulerPoolView:
    """A memory pool of the scheduler (`pools[]`): a GPU (`gpu:N`) or the host's RAM (`ram`)."""

    name: str
    capacity_bytes: int | None
    used_bytes: int  # what the scheduler's loaded backends claim, not a measurement


@dataclass(frozen=True, slots=True)
class SchedulerEvent:
    """One scheduler decision (`events[]`, the last 20): queued, loading, evicted, served..."""

    at: datetime
    event: str
    backend: str | None
    detail: str = ""
    request: str | None = None


@dataclass(frozen=True, slots=True)
class SchedulerView:
    """`aitherctl serve` as the monitor last read it. `url` None: none is serving; `error`
    set: one is serving but its `/status` could not be read (down, timeout, needs a key)."""

    url: str | None
    profile: str | None = None
    backends: tuple[SchedulerBackendView, ...] = ()
    pools: tuple[SchedulerPoolView, ...] = ()
    events: tuple[SchedulerEvent, ...] = ()  # oldest first
    error: str | None = None
    latency_s: float | None = None

    @property
    def serving(self) -> bool:
        return self.url is not None


@dataclass(frozen=True, slots=True)
class HostStatusView:
    """Another Docker host of the profile: reached or not, and its GPUs read or why not."""

    name: str
    endpoint: str  # ssh://user@box, tcp://box:2376, a context name
    engine: str | None  # "Docker 28.2.2"; None when unreachable
    error: str | None  # why its engine could not be read
    gpu_error: str | None = None  # why its GPUs could not be read (None: read, or no GPU use)
    gpu_age_s: float | None = None  # how old the GPU reading is (taken every few seconds)
    services: int = 0


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """The whole workstation at one refresh: Docker and the GPUs (or why not), the managed
    services, other GPU processes, the host, the event log, the scheduler and the other hosts."""

    taken_at: datetime
    active_profile: str | None
    docker_engine: str | None  # e.g. "Docker 28.2.2"; None when unreachable
    docker_error: str | None
    driver_version: str | None
    gpu_error: str | None  # why there is no GPU panel (no driver, no GPU)
    gpus: tuple[GpuView, ...]
    services: tuple[ServiceView, ...]
    unmanaged: tuple[UnmanagedProcess, ...]
    host: HostView
    log: tuple[LogEntry, ...] = ()
    refresh_s: float | None = None  # how long gathering this snapshot took
    scheduler: SchedulerView | None = None  # None: not read (no scheduler source)
    # The other Docker hosts the last multi-host switch used; their GPUs and services are in
    # `gpus` and `services` with `host` set.
    hosts: tuple[HostStatusView, ...] = ()

    def service(self, key: str) -> ServiceView | None:
        """By `ServiceView.key`: the name here, `name@host` on another host."""
        return next((svc for svc in self.services if svc.key == key), None)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def snapshot_to_dict(snapshot: MonitorSnapshot) -> dict[str, Any]:
    """JSON-ready form for `status --json`: field names as above, times in ISO 8601."""
    result: dict[str, Any] = _plain(snapshot)
    result["schema"] = 1
    return result
