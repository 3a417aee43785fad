"""What `ps` shows: each of aitherctl's containers with its health, its real VRAM against its
budget, and its uptime. One model, rendered by the CLI as a table or as JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from aitherctl.docker.listing import ContainerSource
from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines.metrics import parse_timestamp
from aitherctl.switching.state import observe
from aitherctl.units import over_budget

if TYPE_CHECKING:
    from aitherctl.gpu.model import GpuInventory
    from aitherctl.profiles.catalog import ProfileCatalog


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """One of aitherctl's containers as `ps` lists it: its service, state and health, where it
    answers, its GPUs, its VRAM and RAM use against its budgets, and its uptime."""

    service: str
    profile: str
    engine: str
    model: str | None
    state: str
    health: str
    port: int | None
    bind: str
    gpus: tuple[int, ...]
    vram_budget_bytes: int | None  # per GPU (the smallest, for several GPUs)
    vram_used_bytes: int | None  # NVML per-process memory of its PIDs, largest on one GPU
    container: str
    container_id: str
    image: str
    uptime_s: float | None
    host: str = "local"  # the profile's name for the Docker host it runs on
    # Its cgroup, as `docker stats` reads it (local engine only): CPU in % of one core, memory
    # less inactive page cache; and its profile's `ram:` budget.
    cpu_pct: float | None = None
    ram_used_bytes: int | None = None
    ram_budget_bytes: int | None = None

    @property
    def over_ram_budget(self) -> bool:
        return over_budget(self.ram_used_bytes, self.ram_budget_bytes)

    @property
    def over_budget(self) -> bool:
        return over_budget(self.vram_used_bytes, self.vram_budget_bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "profile": self.profile,
            "engine": self.engine,
            "model": self.model,
            "state": self.state,
            "health": self.health,
            "port": self.port,
            "bind": self.bind,
            "gpus": list(self.gpus),
            "vram_budget_bytes": self.vram_budget_bytes,
            "vram_used_bytes": self.vram_used_bytes,
            "over_budget": self.over_budget,
            "container": self.container,
            "container_id": self.container_id,
            "image": self.image,
            "uptime_s": self.uptime_s,
            "host": self.host,
            "cpu_pct": None if self.cpu_pct is None else round(self.cpu_pct, 1),
            "ram_used_bytes": self.ram_used_bytes,
            "ram_budget_bytes": self.ram_budget_bytes,
            "over_ram_budget": self.over_ram_budget,
        }


@dataclass(frozen=True, slots=True)
class ServiceListing:
    """What `ps` shows: the active profile, the Docker engines asked (and those not reached),
    each container's row, and whether a switch was left unfinished."""

    active_profile: str | None
    namespace: str
    endpoint: str
    rows: tuple[ServiceRow, ...]
    pending_switch: bool
    # The other hosts looked at (name → Docker endpoint), and those that could not be reached.
    hosts: tuple[tuple[str, str], ...] = ()
    unreachable: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """`ps --json`'s document."""
        return {
            "active_profile": self.active_profile,
            "namespace": self.namespace,
            "docker": self.endpoint,
            "services": [row.to_json() for row in self.rows],
            "hosts": {"local": self.endpoint, **dict(self.hosts)},
            "unreachable": list(self.unreachable),
        }


def with_other_hosts(listing: ServiceListing) -> ServiceListing:
    """Add the services on the other hosts the last multi-host switch used (read in parallel;
    a host that cannot be reached is named in `unreachable`). VRAM use on another host is read
    there (nvidia-smi in the image of one of its running GPU services)."""
    from dataclasses import replace

    from aitherctl.switching.remembered_hosts import remembered_hosts, remembered_profile

    hosts = remembered_hosts()
    if not hosts:
        return listing
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.errors import AitherError

    def read(name: str) -> tuple[str, ServiceListing | None, str | None]:
        host = hosts[name]
        try:
            engine = DockerEngine.connect_host(name, host.docker, host.address)
        except AitherError as exc:
            return name, None, exc.message

        def read_gpus(image: str) -> GpuInventory:
            from aitherctl.gpu.remote import read_inventory

            return read_inventory(engine.client, image)

        try:
            return name, list_services(engine, None, None, read_in_image=read_gpus), None
        except AitherError as exc:
            return name, None, f"host {name!r}: {exc.message}"
        finally:
            engine.close()

    rows = list(listing.rows)
    unreachable = []
    pending = listing.pending_switch
    from concurrent.futures import ThreadPoolExecutor  # (brings logging: only with other hosts)

    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        for name, other, problem in pool.map(read, sorted(hosts)):
            if other is None:
                unreachable.append(problem or name)
                continue
            rows.extend(replace(row, host=name) for row in other.rows)
            pending = pending or other.pending_switch
    return replace(
        listing,
        active_profile=listing.active_profile or remembered_profile(),
        rows=tuple(rows),
        pending_switch=pending,
        hosts=tuple((name, hosts[name].docker) for name in sorted(hosts)),
        unreachable=tuple(unreachable),
    )


def list_services(
    engine: ContainerSource,
    catalog: ProfileCatalog | Callable[[], ProfileCatalog] | None,
    inventory: Callable[[], GpuInventory] | None = None,
    *,
    read_in_image: Callable[[str], GpuInventory] | None = None,
) -> ServiceListing:
    """Every container of aitherctl's in this namespace. GPUs are read (and container PIDs
    listed) only when a GPU service runs, so a CPU-only machine pays nothing for NVML. On
    another host, `read_in_image` reads its GPUs in the image of one of its running GPU
    services (nvidia-smi in a short-lived container there: nothing is pulled for `ps`).
    `engine` only needs to read: the CLI passes the light socket reader where it can
    (`aitherctl.docker.listing`)."""
    state = observe(engine, catalog)
    visible = sorted(
        (item for item in state.containers if not item.aside), key=lambda item: item.service
    )
    # CPU use is two cgroup readings 0.2 s apart: the GPUs, the health probes and the profiles'
    # RAM budgets are read meanwhile.
    usage = _in_background(
        lambda: container_usage(engine, [item for item in visible if item.running])
    )
    gpu_running = any(item.gpus for item in state.running)
    use: dict[str, dict[int, int]] = {}
    images = sorted(item.image for item in state.running if item.gpus and item.image)
    if images and read_in_image is not None:
        inventory = partial(read_in_image, images[0])
    if gpu_running and inventory is not None:
        gpus = inventory()
        if gpus.available:
            with_pids = [
                item if not item.running else _with_pids(engine, item) for item in state.containers
            ]
            from aitherctl.gpu.vram import actual_use_by_service

            use = actual_use_by_service(with_pids, gpus)
    health = probe_health(engine, visible)
    budgets = ram_budgets(catalog, visible)
    cpu_and_ram = usage()
    rows = []
    for item in visible:
        per_gpu = use.get(item.service)
        worst = None
        if per_gpu:
            # Over budget on any of its GPUs: compare each GPU's use with that GPU's budget.
            worst = max(per_gpu.values())
            over = [g for g, used in per_gpu.items() if used > (item.budget_on(g) or used)]
            if over:
                worst = per_gpu[over[0]]
        rows.append(
            ServiceRow(
                service=item.service,
                profile=item.profile,
                engine=item.engine,
                model=item.served_model or item.model,
                state=item.state,
                health=health.get(item.id, "-" if not item.running else "unknown"),
                port=item.port,
                bind=item.bind,
                gpus=item.gpus,
                vram_budget_bytes=item.vram_bytes,
                vram_used_bytes=worst,
                container=item.name,
                container_id=item.id[:12],
                image=item.image,
                uptime_s=uptime_s(item),
                cpu_pct=cpu_and_ram.get(item.id, (None, None))[0],
                ram_used_bytes=cpu_and_ram.get(item.id, (None, None))[1],
                ram_budget_bytes=budgets.get(item.id),
            )
        )
    pending = any(item.aside for item in state.containers)
    return ServiceListing(
        state.active_profile, state.namespace, state.endpoint, tuple(rows), pending
    )


def _in_background(call: Callable[[], _T]) -> Callable[[], _T]:
    """Start `call` in a thread; the returned function waits for its result (or raises its
    error) in the caller's thread."""
    import threading

    box: list[_T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # raised in the caller's thread by result()
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> _T:
        thread.join()
        if errors:
            raise errors[0]
        return box[0]

    return result


def is_local_engine(engine: ContainerSource) -> bool:
    """Whether the engine runs on this machine (its containers' cgroups are here to read)."""
    endpoint = engine.endpoint
    return endpoint.startswith(("unix://", "npipe://")) or "socket" in endpoint


def container_usage(
    engine: ContainerSource, running: list[ManagedContainer]
) -> dict[str, tuple[float | None, int | None]]:
    """CPU % and memory of each running container, by id, from its cgroup over a 0.2 s window
    (`docker stats --no-stream` takes two readings too), or since the previous command's
    readings when those are 0.2-10 s old; empty for an engine elsewhere."""
    if not running or not is_local_engine(engine):
        return {}
    import os

    from aitherctl.monitor.cgroup_stats import CgroupStats, ReadingsFile
    from aitherctl.paths import state_dir_text

    kept = ReadingsFile(os.path.join(state_dir_text(), "cache", "cgroup-readings.json"))
    stats = CgroupStats()
    usage = stats.sample([item.id for item in running], earlier=kept.load())
    kept.save(stats.latest)
    return usage


def ram_budgets(
    catalog: ProfileCatalog | Callable[[], ProfileCatalog] | None,
    containers: list[ManagedContainer],
) -> dict[str, int]:
    """Each container's `ram:` budget in bytes, from its profile (a share of this machine's
    memory resolves against it); none where the profile cannot be read."""
    if catalog is None or not containers:
        return {}
    from aitherctl.errors import AitherError

    if callable(catalog):
        catalog = catalog()
    profiles: dict[str, Any] = {}
    budgets: dict[str, int] = {}
    machine: int | None = None
    for item in containers:
        if item.profile not in profiles:
            try:
                profiles[item.profile] = catalog.load(item.profile, expand=False)
            except AitherError:
                profiles[item.profile] = None
        profile = profiles[item.profile]
        svc = profile.services.get(item.service) if profile else None
        if svc is None or svc.ram is None:
            continue
        if svc.ram.is_share and machine is None:
            from aitherctl.profiles.machine_ram import machine_ram_bytes

            machine = machine_ram_bytes() or 0
        amount = svc.ram.of(machine)
        if amount is not None:
            budgets[item.id] = amount
    return budgets


def _with_pids(engine: ContainerSource, item: ManagedContainer) -> ManagedContainer:
    from dataclasses import replace

    return replace(item, pids=engine.pids(item.id))


def probe_health(
    engine: ContainerSource, containers: list[ManagedContainer], timeout_s: float = 1.0
) -> dict[str, str]:
    """Probe every running service at once, `timeout_s` each (the standard library's
    http.client: `ps` starts faster without importing httpx)."""
    from aitherctl.switching.readiness import probe_host, probe_plain

    running = [item for item in containers if item.running and item.port]
    if not running:
        return {}
    # One plain thread per service (a few; concurrent.futures would bring logging, ~8 ms of
    # every `ps`).
    waits = [
        _in_background(
            partial(
                probe_plain,
                probe_host(item.bind, engine.endpoint, getattr(engine, "address", None)),
                item.port or 0,  # (those without a port are not in `running`)
                item.health_checks,
                timeout_s=timeout_s,
            )
        )
        for item in running
    ]
    return {
        item.id: "healthy" if result.ok else f"unhealthy ({result.detail})"
        for item, result in zip(running, (wait() for wait in waits), strict=True)
    }


def uptime_s(item: ManagedContainer, now: datetime | None = None) -> float | None:
    """Since Docker's `State.StartedAt`, which Go writes with nanoseconds, trailing zeros
    dropped ("2026-11-23T20:12:30.2385304Z"): `parse_timestamp` reads every such form."""
    started = parse_timestamp(item.started_at)
    if started is None:
        return None
    return max(0.0, ((now or datetime.now(UTC)) - started).total_seconds())
