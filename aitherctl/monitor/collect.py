"""Gathers one `MonitorSnapshot`: containers, GPUs, each server's load, host, recent events.

`MonitorCollector.collect()` is blocking (Docker, NVML, HTTP, /proc): the TUI calls it from a
thread worker, `status` calls it directly. Each source is optional and behind a small protocol,
so the monitor works with no GPU (the GPU panel says why) and with no Docker engine (the host
still shows). The collector keeps the little state a live view needs between refreshes: GPU
history for the sparklines, the previous token counters for rates, and the event log.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from aitherctl.engines.metrics import CounterReading, parse_timestamp, rate_per_s
from aitherctl.gpu.model import GpuInventory
from aitherctl.models.pull_model import DownloadState
from aitherctl.monitor.model import (
    BudgetMark,
    GpuView,
    HostStatusView,
    HostView,
    LogEntry,
    LogKind,
    MonitorSnapshot,
    SchedulerView,
    ScrapeStatus,
    ServiceView,
    StackReading,
    UnmanagedProcess,
)
from aitherctl.monitor.other_hosts import RemoteHostsSource, RemoteReading
from aitherctl.monitor.scrape import ScrapeTarget
from aitherctl.switching.readiness import probe_host


class ContainerLike(Protocol):
    """What the monitor reads of a managed container
    (`aitherctl.docker.stack.ManagedContainer`)."""

    @property
    def id(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def engine(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def bind(self) -> str: ...
    @property
    def gpus(self) -> tuple[int, ...]: ...
    @property
    def vram_bytes(self) -> int | None: ...  # the smallest of its per-GPU budgets
    @property
    def started_at(self) -> str | None: ...
    def budget_on(self, gpu: int) -> int | None: ...  # resolved against that GPU's own total


class StackSource(Protocol):
    def read(self) -> StackReading: ...


class GpuSource(Protocol):
    def read(self) -> GpuInventory: ...


class HostSource(Protocol):
    def read(self) -> HostView: ...


class LogSource(Protocol):
    """Events from elsewhere (switches, routing fallbacks), newest last."""

    def recent(self, limit: int) -> Sequence[LogEntry]: ...


class SchedulerSource(Protocol):
    """`aitherctl serve`'s queues, pools and last events (`adapters.scheduler_status`)."""

    def read(self) -> SchedulerView: ...


class RemoteSource(Protocol):
    """The other Docker hosts (`aitherctl.monitor.other_hosts.RemoteHostsSource`)."""

    def read(self) -> Sequence[RemoteReading]: ...
    def engine(self, host: str) -> Any | None: ...


class ScrapeSource(Protocol):
    def scrape_all(self, targets: Iterable[Any]) -> dict[str, Any]: ...


class PidMapper(Protocol):
    def containers_of(self, pids: Iterable[int], init_pids: Any) -> dict[int, str]: ...
    def name_of(self, pid: int) -> str | None: ...


def _key(host: str, service: str) -> str:
    return service if host == "local" else f"{service}@{host}"


@dataclass(frozen=True)
class _HostPart:
    """One Docker host's containers and GPUs at this refresh."""

    host: str
    stack: StackReading
    containers: list[Any]
    inventory: GpuInventory
    owner: dict[int, str]  # GPU process PID → container id
    endpoint: str | None = None  # another host's Docker endpoint and address (None: here)
    address: str | None = None

    def url(self, container: Any) -> str:
        """Where this machine reaches the container's published port."""
        return scrape_url(probe_host(container.bind, self.endpoint, self.address), container.port)


@dataclass
class _ServiceMemory:
    """What the collector keeps of one service between refreshes: its container and state and
    last scrape status (to log changes), and its last token counter and cgroup reading (for
    rates)."""

    container_id: str
    state: str
    scrape: ScrapeStatus = ScrapeStatus.SKIPPED
    tokens: CounterReading | None = None
    cgroup: Any = None  # the last CgroupReading, for CPU % between refreshes


def scrape_url(bind: str | None, port: int) -> str:
    """Where to reach a published port from this host (a wildcard bind is reached on loopback)."""
    host = bind or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class MonitorCollector:
    """Builds snapshots. Every source may be None: that panel then says it is unavailable."""

    def __init__(
        self,
        *,
        stack: StackSource | None,
        gpus: GpuSource | None,
        scraper: ScrapeSource | None,
        procs: PidMapper,
        host: HostSource,
        log_sources: Sequence[LogSource] = (),
        scheduler: SchedulerSource | None = None,
        remote: RemoteSource | None = None,
        history_len: int = 120,
        log_len: int = 200,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        cgroups: Any = None,
        ram_budget: Callable[[str, str], int | None] | None = None,
        downloads: Callable[[], Mapping[tuple[str, str], DownloadState]] | None = None,
    ) -> None:
        # `cgroups` (adapters.cgroup_stats.CgroupStats) reads this machine's containers' CPU and
        # memory; `ram_budget(profile, service)` gives a service's `ram:` budget in bytes.
        self._cgroups = cgroups
        self._ram_budget = ram_budget
        # (host, service) → its model download in progress (models/downloads.py).
        self._downloads = downloads
        self._stack = stack
        self._gpus = gpus
        self._scraper = scraper
        self._procs = procs
        self._host = host
        self._log_sources = tuple(log_sources)
        self._scheduler = scheduler
        self._remote = remote
        self._history_len = history_len
        self._now = wall_clock
        self._monotonic = monotonic
        self._memory_history: dict[tuple[str, int], deque[int]] = {}
        self._util_history: dict[tuple[str, int], deque[float | None]] = {}
        self._services: dict[str, _ServiceMemory] = {}
        self._log: deque[LogEntry] = deque(maxlen=log_len)

    @property
    def gpu_source(self) -> GpuSource | None:
        return self._gpus

    @property
    def remote_source(self) -> RemoteSource | None:
        return self._remote

    def close(self) -> None:
        """Lets go of the other hosts' connections (this machine's sources hold none open)."""
        close = getattr(self._remote, "close", None)
        if close is not None:
            close()

    def note(self, kind: LogKind, message: str) -> None:
        """Adds a line to the log pane (actions taken from the monitor)."""
        self._log.append(LogEntry(self._now(), kind, message))

    def collect(self) -> MonitorSnapshot:
        started = self._monotonic()
        now = self._now()
        stack = (
            self._stack.read()
            if self._stack is not None
            else StackReading(error="Docker is not used")
        )
        inventory = (
            self._gpus.read()
            if self._gpus is not None
            else GpuInventory(error="GPU readings are off")
        )
        host = self._host.read()
        scheduler = self._scheduler.read() if self._scheduler is not None else None
        remote = self._remote.read() if self._remote is not None else ()
        self._log.extend(stack.events)
        for reading in remote:
            self._log.extend(reading.stack.events)

        containers = [c for c in stack.containers if c.id]
        # NVML's host PIDs → containers (through /proc here), then memory per container id.
        gpu_pids = {proc.pid for gpu in inventory.gpus for proc in gpu.processes}
        init_pids = {c.id: stack.init_pids.get(c.id) for c in containers}
        owner = self._procs.containers_of(sorted(gpu_pids), init_pids) if gpu_pids else {}
        parts = [_HostPart("local", stack, containers, inventory, owner)]
        views: list[HostStatusView] = []
        for reading in remote:
            remote_containers = [c for c in reading.stack.containers if c.id]
            remote_owner = {pid: cid for cid, pids in reading.pids.items() for pid in pids}
            gpus = reading.gpus if reading.gpus is not None else GpuInventory()
            parts.append(
                _HostPart(
                    reading.name,
                    reading.stack,
                    remote_containers,
                    gpus,
                    remote_owner,
                    reading.endpoint,
                    reading.address,
                )
            )
            views.append(
                HostStatusView(
                    name=reading.name,
                    endpoint=reading.endpoint,
                    engine=reading.stack.engine,
                    error=reading.stack.error,
                    gpu_error=reading.gpus.error if reading.gpus is not None else None,
                    gpu_age_s=reading.gpu_age_s,
                    services=len(remote_containers),
                )
            )

        targets = [
            ScrapeTarget(_key(part.host, c.service), c.engine, part.url(c))
            for part in parts
            for c in part.containers
            if c.state == "running" and c.port
        ]
        scrapes = self._scraper.scrape_all(targets) if self._scraper and targets else {}

        usage = self._cgroup_usage(containers)
        downloads = self._downloads() if self._downloads is not None else {}
        services: list[ServiceView] = []
        gpus_views: list[GpuView] = []
        unmanaged: list[UnmanagedProcess] = []
        for part in parts:
            used_by_container = self._attribute(part, unmanaged)
            part_views = [
                self._service_view(
                    c,
                    stack=part.stack,
                    scrape=scrapes.get(_key(part.host, c.service)),
                    used_by_container=used_by_container,
                    gpus_readable=part.inventory.available and bool(part.inventory.gpus),
                    now=now,
                    host=part.host,
                    url=part.url(c) if c.port else None,
                    download=downloads.get((part.host, c.service)),
                )
                for c in sorted(part.containers, key=lambda item: item.service)
            ]
            if part.host == "local":
                part_views = [self._with_usage(view, usage, part.containers) for view in part_views]
            # A service downloading its model before its container exists (a switch, `up`,
            # serve's start, `pull`): a row of its own, so the download shows.
            present = {view.name for view in part_views}
            part_views += [
                _download_view(download)
                for (host, service), download in sorted(downloads.items())
                if host == part.host and service not in present
            ]
            services += part_views
            gpus_views += [
                self._gpu_view(gpu, part.containers, host=part.host) for gpu in part.inventory.gpus
            ]
        self._forget_gone({_key(part.host, c.service) for part in parts for c in part.containers})
        log = self._merged_log()
        return MonitorSnapshot(
            taken_at=now,
            active_profile=stack.active_profile or self._remote_profile(remote),
            docker_engine=stack.engine,
            docker_error=stack.error,
            driver_version=inventory.driver_version,
            gpu_error=inventory.error,
            gpus=tuple(gpus_views),
            services=tuple(services),
            unmanaged=tuple(unmanaged),
            host=host,
            log=log,
            refresh_s=self._monotonic() - started,
            scheduler=scheduler,
            hosts=tuple(views),
        )

    def _attribute(self, part: _HostPart, unmanaged: list[UnmanagedProcess]) -> dict[str, int]:
        """Memory per managed container id on that host; other processes go to `unmanaged`."""
        used_by_container: dict[str, int] = {}
        managed_ids = {c.id for c in part.containers}
        for gpu in part.inventory.gpus:
            for proc in gpu.processes:
                cid = part.owner.get(proc.pid)
                if cid in managed_ids:
                    assert cid is not None
                    used_by_container[cid] = used_by_container.get(cid, 0) + (proc.used_bytes or 0)
                else:
                    name = proc.name or (
                        self._procs.name_of(proc.pid) if part.host == "local" else None
                    )
                    unmanaged.append(
                        UnmanagedProcess(
                            proc.pid, name, gpu.index, proc.used_bytes, cid, host=part.host
                        )
                    )
        return used_by_container

    @staticmethod
    def _remote_profile(remote: Sequence[RemoteReading]) -> str | None:
        """With nothing here, the profile the other hosts' containers say (one, else None)."""
        names = {r.stack.active_profile for r in remote if r.stack.active_profile}
        return names.pop() if len(names) == 1 else None

    def _service_view(
        self,
        container: Any,
        *,
        stack: StackReading,
        scrape: Any,
        used_by_container: dict[str, int],
        gpus_readable: bool,
        now: datetime,
        host: str = "local",
        url: str | None = None,
        download: DownloadState | None = None,
    ) -> ServiceView:
        name = container.service
        key = _key(host, name)
        memory = self._services.get(key)
        if memory is None:
            memory = self._services[key] = _ServiceMemory(container.id, container.state)
        elif memory.container_id != container.id:
            self.note(LogKind.RESTART, f"{key}: new container {container.id[:12]}")
            memory.container_id, memory.tokens = container.id, None
        elif memory.state != container.state:
            self.note(LogKind.RESTART, f"{key}: {memory.state} → {container.state}")
        memory.state = container.state

        metrics = scrape.metrics if scrape is not None else None
        status = scrape.status if scrape is not None else ScrapeStatus.SKIPPED
        if status != memory.scrape and status in (
            ScrapeStatus.DOWN,
            ScrapeStatus.TIMEOUT,
            ScrapeStatus.ERROR,
        ):
            self.note(LogKind.PROBE, f"{key}: {status} ({scrape.error})")
        elif memory.scrape in (ScrapeStatus.DOWN, ScrapeStatus.TIMEOUT, ScrapeStatus.ERROR) and (
            status == ScrapeStatus.OK
        ):
            self.note(LogKind.PROBE, f"{key}: answering again")
        memory.scrape = status

        tokens_per_s = None
        if metrics is not None and metrics.generation_tokens_total is not None:
            reading = CounterReading(metrics.generation_tokens_total, scrape.read_at_s or 0.0)
            tokens_per_s = rate_per_s(memory.tokens, reading)
            memory.tokens = reading

        started = parse_timestamp(container.started_at)
        running = container.state == "running"
        uptime = (now - started).total_seconds() if started and running else None
        # Each GPU's own budget (35% of a 24 GB card beside 35% of a 48 GB one), summed.
        budgets = [container.budget_on(gpu) for gpu in container.gpus]
        budget = sum(value for value in budgets if value) or None
        gpu_used = used_by_container.get(container.id)
        if gpu_used is None and gpus_readable and container.gpus:
            gpu_used = 0 if container.state == "running" else None
        return ServiceView(
            name=name,
            engine=str(container.engine),
            model=getattr(container, "served_model", None) or container.model,
            state=container.state,
            health=stack.health.get(container.id),
            port=container.port,
            bind=container.bind,
            gpus=tuple(container.gpus),
            container_id=container.id,
            vram_used_bytes=gpu_used,
            vram_budget_bytes=budget,
            requests_running=metrics.requests_running if metrics else None,
            requests_waiting=metrics.requests_waiting if metrics else None,
            kv_cache_usage_ratio=metrics.kv_cache_usage_ratio if metrics else None,
            tokens_per_s=tokens_per_s,
            engine_vram_bytes=metrics.engine_vram_bytes if metrics else None,
            loaded_models=tuple(m.name for m in metrics.loaded_models) if metrics else (),
            uptime_s=max(0.0, uptime) if uptime is not None else None,
            scrape=status,
            scrape_error=scrape.error if scrape is not None else None,
            scrape_latency_s=scrape.latency_s if scrape is not None else None,
            host=host,
            url=url,
            download=download,
        )

    def _cgroup_usage(self, containers: Sequence[Any]) -> dict[str, tuple[float | None, int]]:
        """CPU % and memory of this machine's running containers, by id. CPU % is between
        this refresh and the last; on the first, between two readings 0.2 s apart (as
        `docker stats --no-stream` takes two)."""
        if self._cgroups is None:
            return {}
        from aitherctl.monitor.cgroup_stats import cpu_pct

        running = [c for c in containers if c.state == "running"]
        now = {c.id: self._cgroups.read(c.id) for c in running}
        before = {
            c.id: memory.cgroup
            for c in running
            if (memory := self._services.get(_key("local", c.service))) is not None
            and memory.container_id == c.id
            and memory.cgroup is not None
        }
        fresh = [cid for cid, reading in now.items() if reading is not None and cid not in before]
        if fresh:
            time.sleep(0.2)
            for cid in fresh:
                before[cid], now[cid] = now[cid], self._cgroups.read(cid)
        found: dict[str, tuple[float | None, int]] = {}
        for c in running:
            reading = now.get(c.id)
            if reading is None or reading.memory_bytes is None:
                continue
            memory = self._services.get(_key("local", c.service))
            if memory is not None:
                memory.cgroup = reading
            previous = before.get(c.id)
            found[c.id] = (
                cpu_pct(previous, reading) if previous is not None else None,
                reading.memory_bytes,
            )
        return found

    def _with_usage(
        self,
        view: ServiceView,
        usage: dict[str, tuple[float | None, int]],
        containers: Sequence[Any],
    ) -> ServiceView:
        from dataclasses import replace

        container = next((c for c in containers if c.id == view.container_id), None)
        budget = (
            self._ram_budget(container.profile, container.service)
            if self._ram_budget is not None and container is not None
            else None
        )
        cpu, memory = usage.get(view.container_id or "", (None, None))
        return replace(view, cpu_pct=cpu, ram_used_bytes=memory, ram_budget_bytes=budget)

    def _gpu_view(self, gpu: Any, containers: Sequence[Any], host: str = "local") -> GpuView:
        memory = self._memory_history.setdefault((host, gpu.index), deque(maxlen=self._history_len))
        util = self._util_history.setdefault((host, gpu.index), deque(maxlen=self._history_len))
        memory.append(gpu.memory_used_bytes)
        util.append(gpu.utilization_pct)
        marks = tuple(
            BudgetMark(c.service, budget)
            for c in sorted(containers, key=lambda item: item.service)
            if gpu.index in c.gpus and c.state == "running" and (budget := c.budget_on(gpu.index))
        )
        return GpuView(
            index=gpu.index,
            name=gpu.name,
            memory_total_bytes=gpu.memory_total_bytes,
            memory_used_bytes=gpu.memory_used_bytes,
            utilization_pct=gpu.utilization_pct,
            temperature_c=gpu.temperature_c,
            power_w=gpu.power_w,
            power_limit_w=getattr(gpu, "power_limit_w", None),
            budgets=marks,
            memory_used_history_bytes=tuple(memory),
            utilization_history_pct=tuple(util),
            host=host,
        )

    def _forget_gone(self, present: set[str]) -> None:
        for name in set(self._services) - present:
            self.note(LogKind.RESTART, f"{name}: container gone")
            del self._services[name]

    def _merged_log(self) -> tuple[LogEntry, ...]:
        entries = list(self._log)
        for source in self._log_sources:
            try:
                entries.extend(source.recent(50))
            except Exception as exc:  # a broken ledger must not take the monitor down
                entries.append(LogEntry(self._now(), LogKind.INFO, f"log source failed: {exc}"))
        entries.sort(key=lambda entry: entry.at)
        return tuple(entries[-100:])


def _download_view(download: DownloadState) -> ServiceView:
    """A service that has no container yet, downloading its model."""
    return ServiceView(
        name=download.service,
        engine=download.engine or "?",
        model=download.model,
        state="downloading",
        health=None,
        port=None,
        bind=None,
        gpus=(),
        container_id=None,
        vram_used_bytes=None,
        vram_budget_bytes=None,
        host=download.host,
        download=download,
    )


def build_collector(
    *,
    use_docker: bool = True,
    use_gpu: bool = True,
    nvml_module: Any | None = None,
    scrape_timeout_s: float = 0.5,
    log_sources: Sequence[LogSource] = (),
    use_scheduler: bool = True,
    wait_for_remote_gpus: bool = False,
) -> tuple[MonitorCollector, Any | None]:
    """The collector wired to this machine and the other hosts the last multi-host switch
    used, and this machine's Docker source (for actions) if any. `wait_for_remote_gpus`: the
    first reading waits for the other hosts' GPUs (one-shot `status`); the monitor shows them
    from the next refresh instead of holding the first one up."""
    from aitherctl.gpu.nvml import NvmlReader
    from aitherctl.models.downloads import downloads_in_progress
    from aitherctl.monitor.procs import HostReader, ProcessTable
    from aitherctl.monitor.scrape import Scraper
    from aitherctl.monitor.stack_reader import DockerStackSource

    stack = DockerStackSource() if use_docker else None
    cgroups = None
    if stack is not None and _local_endpoint():
        from aitherctl.monitor.cgroup_stats import CgroupStats

        cgroups = CgroupStats()
    collector = MonitorCollector(
        stack=stack,
        gpus=NvmlReader(nvml_module) if use_gpu else None,
        scraper=Scraper(timeout_s=scrape_timeout_s),
        procs=ProcessTable(),
        host=HostReader(),
        log_sources=log_sources,
        scheduler=scheduler_source(timeout_s=scrape_timeout_s) if use_scheduler else None,
        remote=(
            RemoteHostsSource(wait_for_gpus=wait_for_remote_gpus, read_gpus=use_gpu)
            if use_docker
            else None
        ),
        cgroups=cgroups,
        ram_budget=_profile_ram_budgets(),
        downloads=downloads_in_progress,
    )
    return collector, stack


def _local_endpoint() -> bool:
    """Whether the engine (DOCKER_HOST, else the context) runs on this machine."""
    from aitherctl.docker.listing import describe_endpoint

    endpoint = describe_endpoint()
    return endpoint.startswith(("unix://", "npipe://")) or "socket" in endpoint


def _profile_ram_budgets() -> Callable[[str, str], int | None]:
    """`ram:` budgets from the profiles, each profile read once (a broken one gives none)."""
    from aitherctl.errors import AitherError
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.profiles.machine_ram import machine_ram_bytes

    loaded: dict[str, Any] = {}

    def budget(profile: str, service: str) -> int | None:
        if profile not in loaded:
            try:
                loaded[profile] = ProfileCatalog().load(profile, expand=False)
            except AitherError:
                loaded[profile] = None
        svc = loaded[profile].services.get(service) if loaded[profile] else None
        if svc is None or svc.ram is None:
            return None
        amount: int | None = svc.ram.of(machine_ram_bytes() if svc.ram.is_share else None)
        return amount

    return budget


def scheduler_source(*, timeout_s: float = 0.5) -> SchedulerSource:
    """The `aitherctl serve` of this user (its state file), read with `$AITHER_API_KEY`."""
    import os

    from aitherctl.monitor.serve_status import SchedulerStatusReader
    from aitherctl.serve.discovery import find_gateway

    return SchedulerStatusReader(
        find_gateway, api_key=os.environ.get("AITHER_API_KEY"), timeout_s=timeout_s
    )


class LedgerLog:
    """Routing fallbacks, refusals and failures from the usage ledger
    (`aitherctl.routing.ledger`).

    A request answered after more than one attempt fell back to another backend; one whose
    outcome is `budget` was refused by the daily budget; any other outcome failed. Read at
    most every `every_s` seconds.
    """

    def __init__(
        self,
        ledger: Any,
        *,
        window_s: float = 3600.0,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._window_s = window_s
        self._every_s = every_s
        self._clock = clock
        self._next_read = 0.0
        self._cached: list[LogEntry] = []

    def recent(self, limit: int) -> Sequence[LogEntry]:
        now = self._clock()
        if now >= self._next_read:
            self._next_read = now + self._every_s
            entries = []
            for row in self._ledger.rows_since(now - self._window_s):
                if row.attempts <= 1 and row.outcome == "ok":
                    continue
                # A refusal is a refusal and a failure a failure: only an answer that came
                # from another backend than the first is a fallback.
                where = " ".join(filter(None, (row.backend, row.model)))
                tried = f"{row.attempts} attempt{'' if row.attempts == 1 else 's'}"
                if row.outcome == "ok":
                    kind, message = LogKind.FALLBACK, f"answered by {where} after {tried}"
                elif row.outcome == "budget":
                    kind = LogKind.REFUSED
                    message = "the daily budget forbids the request" + (
                        f" ({where})" if where else ""
                    )
                else:
                    kind = LogKind.FAILED
                    message = f"no backend answered after {tried} ({row.outcome})" + (
                        f", last {where}" if where else ""
                    )
                entries.append(LogEntry(datetime.fromtimestamp(row.ts, UTC), kind, message))
            self._cached = entries
        return self._cached[-limit:]


class SwitchJournalLog:
    """Switches, rollbacks and `down`s from the switch journal (`aitherctl.switching.journal`)."""

    KINDS: ClassVar[dict[str, LogKind]] = {
        "switch": LogKind.SWITCH,
        "rollback": LogKind.SWITCH,
        "down": LogKind.ACTION,
    }

    def recent(self, limit: int) -> Sequence[LogEntry]:
        from aitherctl.switching import journal

        return [
            LogEntry(
                datetime.fromtimestamp(entry.ts, UTC),
                self.KINDS.get(entry.kind, LogKind.INFO),
                entry.message,
            )
            for entry in journal.recent(limit)
        ]


def ledger_log_sources() -> list[LogSource]:
    """The ledger as a log source when the routing layer is installed; none otherwise."""
    sources: list[LogSource] = [SwitchJournalLog()]
    try:
        from aitherctl.routing.ledger import Ledger
    except ImportError:
        return sources
    return [*sources, LedgerLog(Ledger())]
