"""The MicroScheduler: the one owner of which model is loaded, who waits for it and who is evicted.

All of its state lives in `Scheduler` and is changed only by coroutines on one asyncio event loop
(llama-swap's issue #946: a decision taken from state read earlier, after another task changed
it, wedged a swap group). Every decision is taken from the state as it is at that moment; the
slow work (a Docker transaction, a sleep request) runs in a worker thread or as an HTTP call, and
its result is applied back on the loop.

Per backend (a service of the profile, or an endpoint): a concurrency limit (`max_concurrency`,
else the engine's: llama.cpp `--parallel`, vLLM `--max-num-seqs`), a bounded priority queue with
ageing (`aitherctl.core.scheduling`), and a state:

    ready ── evict ──▶ stopped | asleep | unloaded ── load ──▶ ready
               (stop the container; vLLM sleep mode; Ollama keep_alive 0 / ComfyUI /free)

A request for a backend that is not ready starts its load. A load that does not fit its memory
pools (each GPU, and the host's RAM for CPU services with a `ram:` budget) first evicts idle
services (nothing in flight or queued, never `pinned`), lowest `priority` first, then least
recently used, waits until the GPU memory is really free (NVML), then starts the service through
the same transaction and readiness checks as `aitherctl up`. Idle services with `idle_after` are
put away, and resident services displaced to make room come back when they fit again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aitherctl.core.metrics import MetricsFormatError
from aitherctl.core.scheduling import (
    DEFAULT_MAX_QUEUE,
    EvictionChoice,
    Holder,
    Pool,
    Priority,
    Rank,
    Waiter,
    WaitQueue,
    choose_victims,
    describe_missing,
    parse_rank,
)
from aitherctl.errors import AitherError

if TYPE_CHECKING:
    from aitherctl.adapters.docker_engine import DockerEngine
    from aitherctl.adapters.upstream import Upstream
    from aitherctl.core.engines import EngineDriver
    from aitherctl.core.gpu import GpuInventory
    from aitherctl.core.metrics import EngineMetrics
    from aitherctl.core.profile import Profile, Service
    from aitherctl.core.routing import Candidate, RoutingTable

DEFAULT_ENDPOINT_CONCURRENCY = 32
DEFAULT_SERVICE_CONCURRENCY = 8  # an engine that decides at run time (vLLM without max-num-seqs)
TICK_S = 1.0  # idle checks and restores
REFRESH_S = 5.0  # re-read what Docker runs (someone ran `aitherctl up` or `down`)
MEMORY_FREE_TIMEOUT_S = 60.0  # after an eviction, how long the GPU may take to show it free
LOAD_WAIT_FOR_ROOM_S = 120.0  # a load that must wait for busy services to become idle
EVENTS_KEPT = 200
# An engine that reports what it holds (ComfyUI's torch_vram_total) counts as released below
# this: PyTorch keeps a few buffers and its CUDA context.
RELEASED_BYTES = 512 * 1024**2


class BackendState(StrEnum):
    READY = "ready"
    LOADING = "loading"
    EVICTING = "evicting"
    STOPPED = "stopped"  # no running container
    ASLEEP = "asleep"  # vLLM sleep mode: the container runs, its GPU memory is free
    UNLOADED = "unloaded"  # Ollama / ComfyUI released their models; the next request loads


HOLDING = (BackendState.READY, BackendState.LOADING, BackendState.EVICTING)


class SchedulerError(AitherError):
    """A request the scheduler cannot place. `status` is the HTTP status the gateway answers."""

    status = 503
    kind = "unavailable"


class QueueFull(SchedulerError):
    status = 429
    kind = "queue_full"

    def __init__(self, backend: str, retry_after_s: int) -> None:
        super().__init__(
            f"{backend}: queue full ({retry_after_s}s suggested before retrying)"
        )
        self.retry_after_s = retry_after_s


class LoadFailed(SchedulerError):
    kind = "load_failed"


class ExternallyBusy(LoadFailed):
    """A service the gateway sees idle is working on requests sent to it directly."""


@dataclass(eq=False)
class Backend:
    """One place requests can go, and what the scheduler knows about it now."""

    name: str
    candidate: Candidate
    service: Service | None  # None: an endpoint (always ready, nothing to load)
    limit: int
    queue: WaitQueue
    claims: dict[str, int] = field(default_factory=dict)
    state: BackendState = BackendState.READY
    in_flight: int = 0
    last_used: float = 0.0
    displaced: bool = False  # a resident service put away to make room: brought back when idle
    load_task: asyncio.Task[None] | None = None
    last_error: str | None = None
    busy_until: float = 0.0  # working on requests sent around the gateway (seen then)
    cancel: threading.Event = field(default_factory=threading.Event)
    loaded: tuple[float, float] | None = None  # the last load's start and end (clock)

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and not self.queue

    @property
    def pinned(self) -> bool:
        return bool(self.service and self.service.pinned)

    @property
    def rank(self) -> Rank:
        return parse_rank(self.service.priority) if self.service else Rank.NORMAL

    def snapshot(self, to_wall: Callable[[float], float]) -> dict[str, Any]:
        return {
            "backend": self.name,
            "kind": "service" if self.service else "endpoint",
            "state": self.state.value,
            "in_flight": self.in_flight,
            "limit": self.limit,
            "queued": len(self.queue),
            "queued_by_priority": self.queue.by_priority(),
            "max_queue": self.queue.capacity,
            "pinned": self.pinned,
            "on_demand": bool(self.service and self.service.on_demand),
            "displaced": self.displaced,
            "last_used_ts": round(to_wall(self.last_used), 3) if self.last_used else None,
            "claims_bytes": dict(self.claims),
            "last_error": self.last_error,
        }


@dataclass(eq=False)
class Lease:
    """A place in a backend: release it exactly once when the request is over."""

    backend: Backend
    queue_wait_s: float
    load_wait_s: float
    released: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    kind: str  # queued, loading, loaded, evicted, slept, woke, unloaded, served, fell_back, ...
    backend: str | None
    detail: str = ""
    request: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": round(self.ts, 3),
            "event": self.kind,
            "backend": self.backend,
            "detail": self.detail,
            "request": self.request,
        }


class EventLog:
    """The last EVENTS_KEPT decisions, and live subscribers (`GET /events`, the monitor)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.recent: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self.subscribers: set[asyncio.Queue[Event]] = set()
        self.clock = clock

    def emit(
        self, kind: str, backend: str | None, detail: str = "", request: str | None = None
    ) -> Event:
        event = Event(self.clock(), kind, backend, detail, request)
        self.recent.append(event)
        for queue in self.subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)  # a slow reader loses events, never slows the loop
        return event

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1000)
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)


class Metrics:
    """What the scheduler reports (counts and durations per backend); the gateway's subclass
    feeds prometheus_client. This one drops them."""

    def count(self, name: str, backend: str, **labels: str) -> None:
        del name, backend, labels

    def observe(self, name: str, backend: str, seconds: float) -> None:
        del name, backend, seconds


class ServiceControl:
    """The I/O that loads and evicts services: Docker transactions (in worker threads) and the
    engines' own sleep and release requests (over the shared upstream HTTP client)."""

    def __init__(
        self,
        connect: Callable[[], DockerEngine],
        inventory: Callable[[], GpuInventory],
        profile_name: str,
        upstream: Upstream,
    ) -> None:
        self.connect = connect
        self.inventory = inventory
        self.profile_name = profile_name
        self.upstream = upstream
        self._profile: Profile | None = None
        # Engines of the profile's other hosts, kept open between refreshes (over SSH a new
        # connection costs a second or two); one that fails is dropped and reached again later.
        self._remote: dict[str, DockerEngine] = {}

    def _catalog(self) -> Any:
        from aitherctl.adapters.profile_store import ProfileCatalog

        return ProfileCatalog()

    def _loaded(self) -> Profile:
        if self._profile is None:
            self._profile = self._catalog().load(self.profile_name)
        return self._profile

    def close_blocking(self) -> None:
        for engine in self._remote.values():
            engine.close()
        self._remote.clear()

    def _engine_for(
        self, service: str
    ) -> tuple[DockerEngine, Callable[[], GpuInventory]]:
        """The engine `service` runs on (its profile `host:`), and that host's GPU readings."""
        from aitherctl.core.profile import LOCAL_HOST

        profile = self._loaded()
        svc = profile.services.get(service)
        if svc is None or svc.host == LOCAL_HOST:
            return self.connect(), self.inventory
        from aitherctl.adapters.docker_engine import DockerEngine
        from aitherctl.switching.hosts import host_inventory

        host = profile.hosts[svc.host]
        engine = DockerEngine.connect_host(host.name, host.docker, host.address)
        share = profile.on_host(host.name)
        return engine, lambda: host_inventory(host.name, engine, share, self.inventory)

    def start_blocking(self, service: str, cancel: threading.Event) -> None:
        """`aitherctl up SERVICE`: the same plan, lock, transaction and readiness wait, on the
        host the service runs on."""
        from aitherctl.switching.switch import switch

        engine, inventory = self._engine_for(service)
        try:
            switch(
                engine, self._catalog(), self.profile_name, inventory, _QuietProgress(),
                only=[service], cancel=cancel,
            )
        finally:
            engine.close()

    def stop_blocking(self, service: str) -> None:
        """`aitherctl down SERVICE`, through the same transaction."""
        from aitherctl.switching.switch import down

        engine, _inventory = self._engine_for(service)
        try:
            down(engine, [service], _QuietProgress())
        finally:
            engine.close()

    def running_blocking(self) -> set[str]:
        """The services with a running (not set-aside) container now, on every host of the
        profile (a host that cannot be reached shows its services as not running)."""
        from aitherctl.core.profile import LOCAL_HOST
        from aitherctl.switching.state import observe

        profile = self._loaded()
        running: set[str] = set()
        for host in profile.host_names or [LOCAL_HOST]:
            ours = {n for n, svc in profile.services.items() if svc.host == host}
            if host == LOCAL_HOST:
                engine = self.connect()
                try:
                    running |= {i.service for i in observe(engine).running} & ours
                finally:
                    engine.close()
                continue
            try:
                engine = self._remote.get(host) or self._open_remote(profile, host)
                running |= {i.service for i in observe(engine).running} & ours
            except AitherError:
                dropped = self._remote.pop(host, None)
                if dropped is not None:
                    dropped.close()
        return running

    def _open_remote(self, profile: Profile, host: str) -> DockerEngine:
        from aitherctl.adapters.docker_engine import DockerEngine

        spec = profile.hosts[host]
        engine = DockerEngine.connect_host(spec.name, spec.docker, spec.address)
        self._remote[host] = engine
        return engine

    def gpu_free_bytes(self) -> dict[int, int] | None:
        inventory = self.inventory()
        if not inventory.available:
            return None
        return {gpu.index: gpu.memory_free_bytes for gpu in inventory.gpus}

    async def http(self, backend: Backend, method: str, path: str, body: Any = None) -> Any:
        root = backend.candidate.base_url.removesuffix("/v1")
        return await self.upstream.call(method, root + path, body, timeout_s=120.0)


class _QuietProgress:
    def note(self, message: str) -> None:
        del message

    def service(self, service: str, status: str, detail: str = "") -> None:
        del service, status, detail


class Scheduler:
    """Owns every backend's state. Call its coroutines from the loop it runs on."""

    def __init__(
        self,
        profile: Profile,
        table: RoutingTable,
        control: ServiceControl | None,
        pools: dict[str, Pool],
        *,
        events: EventLog | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        running: set[str] | None = None,
    ) -> None:
        self.profile = profile
        self.table = table
        self.control = control
        self.pools = pools
        self.events = events or EventLog()
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.backends: dict[str, Backend] = {}
        self._seq = 0
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._build(running)

    # -- set-up ----------------------------------------------------------------------------------

    def _build(self, running: set[str] | None) -> None:
        from aitherctl.core.engines import driver_for
        from aitherctl.core.routing import service_candidate

        for name, candidate in self.table.backends.items():
            service = self.profile.services.get(name) if candidate.origin == "service" else None
            if service is not None:
                limit = service.max_concurrency or (
                    driver_for(service.engine.value).default_concurrency(service)
                    or DEFAULT_SERVICE_CONCURRENCY
                )
                capacity = service.max_queue or DEFAULT_MAX_QUEUE
                state = (
                    BackendState.READY
                    if running is None or name in running
                    else BackendState.STOPPED
                )
            else:
                limit, capacity, state = DEFAULT_ENDPOINT_CONCURRENCY, DEFAULT_MAX_QUEUE, (
                    BackendState.READY
                )
            backend = Backend(
                name=name, candidate=candidate, service=service, limit=limit,
                queue=WaitQueue(capacity), state=state,
            )
            if service is not None:
                backend.claims = self._claims(service)
                # A resident service found stopped at start is brought back like a displaced one.
                backend.displaced = state is BackendState.STOPPED and not service.on_demand
            self.backends[name] = backend
        # Services that hold memory but take no chat requests (ComfyUI) still count in pools.
        for name, service in self.profile.services.items():
            if name in self.backends:
                continue
            state = BackendState.READY if running is None or name in running else (
                BackendState.STOPPED
            )
            backend = Backend(
                name=name, candidate=service_candidate(service), service=service, limit=0,
                queue=WaitQueue(0), state=state, claims=self._claims(service),
            )
            backend.displaced = state is BackendState.STOPPED and not service.on_demand
            self.backends[name] = backend

    def _claims(self, service: Service) -> dict[str, int]:
        claims: dict[str, int] = {}
        if service.host != "local":
            return claims  # the pools are this machine's; its own host checks a remote load
        for gpu in service.gpus:
            pool = self.pools.get(f"gpu:{gpu}")
            total = pool_total(pool)
            if service.vram is not None and total:
                claims[f"gpu:{gpu}"] = service.vram.resolve(total)
        if service.ram is not None and "ram" in self.pools:
            claims["ram"] = service.ram.resolve(pool_total(self.pools["ram"]) or 0)
        return claims

    # -- requests ------------------------------------------------------------------------------

    def routable(self, name: str) -> bool:
        backend = self.backends.get(name)
        return backend is not None and backend.limit > 0

    @staticmethod
    def _free_now(backend: Backend) -> bool:
        """Ready, a slot free and nobody waiting: a request goes straight in."""
        return (
            backend.state is BackendState.READY
            and backend.in_flight < backend.limit
            and not backend.queue
        )

    def queue_has_room(self, name: str, threshold: int | None = None) -> bool:
        backend = self.backends[name]
        if self._free_now(backend):
            return True
        bound = backend.queue.capacity if threshold is None else min(
            threshold, backend.queue.capacity
        )
        return len(backend.queue) < bound

    def try_acquire(self, name: str) -> Lease | None:
        """A place in `name` at once (ready, a slot free, nobody waiting), or None."""
        backend = self.backends[name]
        if not self._closing and self._free_now(backend):
            backend.in_flight += 1
            backend.last_used = self.clock()
            return Lease(backend, 0.0, 0.0)
        return None

    async def acquire(
        self, name: str, priority: Priority, request_id: str | None = None
    ) -> Lease:
        """Wait for a place in `name` (loading it first when it is not ready). Raises QueueFull
        at once when its queue is full, LoadFailed when it could not be loaded. Cancelling the
        caller (the client went away) gives its place up."""
        backend = self.backends[name]
        if self._closing:
            raise SchedulerError("the scheduler is shutting down")
        lease = self.try_acquire(name)
        if lease is not None:
            return lease
        started = self.clock()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self._seq += 1
        waiter = Waiter(self._seq, priority, started, future)
        if not backend.queue.push(waiter):
            self.metrics.count("rejected", name)
            raise QueueFull(name, self._retry_after(backend))
        self.events.emit("queued", name, f"{priority.label}, {len(backend.queue)} waiting",
                         request_id)
        self.metrics.count("queued", name)
        self._pump(backend)
        try:
            load_wait = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(backend)  # granted just as the client left
            else:
                backend.queue.remove(waiter)
                self.events.emit("abandoned", name, "client went away while waiting", request_id)
            self._changed.set()
            raise
        waited = self.clock() - started
        return Lease(backend, max(0.0, waited - load_wait), load_wait)

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        self._release(lease.backend)

    def _release(self, backend: Backend) -> None:
        backend.in_flight -= 1
        backend.last_used = self.clock()
        self._changed.set()
        self._pump(backend)

    def _retry_after(self, backend: Backend) -> int:
        return max(1, min(60, len(backend.queue) // max(1, backend.limit)))

    def _pump(self, backend: Backend) -> None:
        """Hand free places to the best waiters, or start the load they wait for."""
        if backend.state is BackendState.READY:
            now = self.clock()
            while backend.in_flight < backend.limit and backend.queue:
                waiter = backend.queue.pop(now)
                assert waiter is not None
                future: asyncio.Future[float] = waiter.token
                if future.done():
                    continue
                backend.in_flight += 1
                backend.last_used = now
                load_wait = 0.0
                if backend.loaded is not None and waiter.enqueued_at < backend.loaded[1]:
                    load_wait = backend.loaded[1] - max(waiter.enqueued_at, backend.loaded[0])
                future.set_result(load_wait)
        elif backend.queue and backend.state in (
            BackendState.STOPPED, BackendState.ASLEEP, BackendState.UNLOADED
        ) and backend.load_task is None:
            self._spawn_load(backend, reason="requested")

    def _fail_waiters(self, backend: Backend, error: SchedulerError) -> None:
        while backend.queue:
            waiter = backend.queue.pop(self.clock())
            assert waiter is not None
            if not waiter.token.done():
                waiter.token.set_exception(error)

    # -- loading and evicting --------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn_load(self, backend: Backend, reason: str) -> None:
        backend.load_task = self._spawn(self._load(backend, reason))

    def holders(self, exclude: Backend | None = None) -> list[Holder]:
        return [
            Holder(
                name=b.name,
                claims=b.claims,
                evictable=(
                    b.state is BackendState.READY and b.idle and not b.pinned
                    and b.load_task is None and b.busy_until <= self.clock()
                ),
                rank=b.rank,
                last_used=b.last_used,
            )
            for b in self.backends.values()
            if b is not exclude and b.service is not None and b.claims and b.state in HOLDING
        ]

    def plan_room(self, backend: Backend) -> EvictionChoice:
        return choose_victims(backend.claims, self.holders(exclude=backend), self.pools)

    async def _load(self, backend: Backend, reason: str) -> None:
        before = backend.state
        started = self.clock()
        backend.state = BackendState.LOADING
        backend.cancel = threading.Event()
        self.events.emit("loading", backend.name, f"{reason}; was {before.value}")
        try:
            await self._make_room(backend)
            await self._bring_up(backend, before)
        except (AitherError, OSError) as exc:
            message = exc.message if isinstance(exc, AitherError) else str(exc)
            backend.state = before
            backend.last_error = message
            backend.load_task = None
            self.metrics.count("load_failures", backend.name)
            self.events.emit("load_failed", backend.name, message)
            self._fail_waiters(
                backend, LoadFailed(f"{backend.name} could not be loaded: {message}")
            )
            self._changed.set()
            return
        except asyncio.CancelledError:
            backend.state = before
            backend.load_task = None
            self._fail_waiters(backend, SchedulerError("the scheduler is shutting down"))
            raise
        seconds = self.clock() - started
        backend.state = BackendState.READY
        backend.displaced = False
        backend.last_error = None
        backend.load_task = None
        backend.last_used = self.clock()
        self.metrics.count("loads", backend.name)
        self.metrics.observe("load_seconds", backend.name, seconds)
        backend.loaded = (started, self.clock())
        self.events.emit("loaded", backend.name, f"ready after {seconds:.2f}s")
        self._changed.set()
        self._pump(backend)

    async def _make_room(self, backend: Backend) -> None:
        deadline = self.clock() + LOAD_WAIT_FOR_ROOM_S
        while True:
            choice = self.plan_room(backend)
            if choice.fits_now:
                return
            if choice.victims:
                try:
                    for victim in choice.victims:
                        await self._evict(
                            self.backends[victim], f"to make room for {backend.name}"
                        )
                except ExternallyBusy:
                    continue  # it is left out for a moment: choose again
                await self._wait_gpu_free(backend)
                continue
            # Not even evicting every idle service is enough: wait for busy ones to finish.
            if self.clock() >= deadline:
                raise LoadFailed(
                    f"no room for {backend.name}: {describe_missing(choice.missing)} "
                    "(the services holding it are busy or pinned)"
                )
            self.events.emit("waiting_for_room", backend.name, describe_missing(choice.missing))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=TICK_S)

    async def _wait_gpu_free(self, backend: Backend) -> None:
        """After an eviction, until NVML shows the memory the load needs free on each GPU."""
        if self.control is None or not any(p.startswith("gpu:") for p in backend.claims):
            return
        deadline = self.clock() + MEMORY_FREE_TIMEOUT_S
        while True:
            free = await asyncio.to_thread(self.control.gpu_free_bytes)
            if free is None:
                return
            short = {
                pool: need - free.get(int(pool.split(":", 1)[1]), 0)
                for pool, need in backend.claims.items()
                if pool.startswith("gpu:") and free.get(int(pool.split(":", 1)[1]), 0) < need
            }
            if not short:
                return
            if self.clock() >= deadline:
                raise LoadFailed(
                    f"GPU memory was not freed in {MEMORY_FREE_TIMEOUT_S:.0f}s: "
                    + describe_missing(short)
                )
            await asyncio.sleep(0.25)

    async def _bring_up(self, backend: Backend, before: BackendState) -> None:
        if self.control is None:
            raise LoadFailed("no Docker engine to start it with")
        service = backend.service
        assert service is not None
        if before is BackendState.ASLEEP:
            from aitherctl.core.engines import driver_for

            mode = driver_for(service.engine.value).sleep_mode(service)
            assert mode is not None
            await self.control.http(backend, mode.wake.method, mode.wake.path)
            self.metrics.count("wakes", backend.name)
            self.events.emit("woke", backend.name)
            return
        if before is BackendState.UNLOADED:
            return  # the engine loads the model with the request itself
        await asyncio.to_thread(self.control.start_blocking, service.name, backend.cancel)

    async def _evict(self, backend: Backend, why: str) -> None:
        """Free `backend`'s memory the engine's cheapest way. It must be idle (checked again
        here, on the loop, at the moment of deciding)."""
        if not (backend.state is BackendState.READY and backend.idle and not backend.pinned):
            raise ExternallyBusy(f"{backend.name} became busy; not evicted")
        from aitherctl.core.engines import driver_for

        assert backend.service is not None
        assert self.control is not None
        service = backend.service
        driver = driver_for(service.engine.value)
        backend.state = BackendState.EVICTING
        self.events.emit("evicting", backend.name, why)
        try:
            mode = driver.sleep_mode(service)
            if mode is not None:
                await self.control.http(backend, mode.sleep.method, mode.sleep.path)
                after, verb = BackendState.ASLEEP, "slept"
                self.metrics.count("sleeps", backend.name)
            elif driver.release_memory(()) is not None or driver.release_needs_models:
                before = await self._reading(backend, driver)
                if before.requests_running or before.requests_waiting:
                    # Work that did not come through the gateway (a ComfyUI prompt): its memory
                    # is in use; the engine would free it only after that work.
                    raise ExternallyBusy(
                        f"{backend.name} is working on requests sent around the gateway"
                    )
                models = [model.name for model in before.loaded_models]
                for request in driver.release_memory(models) or ():
                    await self.control.http(backend, request.method, request.path,
                                            request.json_body)
                # Ollama answers `keep_alive: 0` and ComfyUI `/free` at once and release later:
                # wait until the engine says so (its models gone, its memory given back).
                await self._wait_released(backend, driver, set(models))
                after, verb = BackendState.UNLOADED, "unloaded"
            else:
                await asyncio.to_thread(self.control.stop_blocking, service.name)
                after, verb = BackendState.STOPPED, "stopped"
        except ExternallyBusy as exc:
            backend.state = BackendState.READY
            backend.busy_until = self.clock() + TICK_S
            self.events.emit("evict_deferred", backend.name, exc.message)
            raise
        except (AitherError, OSError) as exc:
            backend.state = BackendState.READY
            message = exc.message if isinstance(exc, AitherError) else str(exc)
            self.events.emit("evict_failed", backend.name, message)
            raise LoadFailed(f"could not free {backend.name}: {message}") from None
        backend.state = after
        backend.displaced = not service.on_demand
        self.metrics.count("evictions", backend.name)
        self.events.emit("evicted", backend.name, f"{verb} ({why})")
        self._changed.set()
        if backend.queue:  # a request arrived while it was being put away
            self._pump(backend)

    async def _reading(self, backend: Backend, driver: EngineDriver) -> EngineMetrics:
        """The engine's own account of itself, from the driver's JSON pages (Ollama `/api/ps`,
        ComfyUI `/queue` and `/system_stats`), merged."""
        from aitherctl.core.metrics import EngineMetrics

        assert self.control is not None
        reading = EngineMetrics()
        for page in driver.metrics:
            if page.format != "json":
                continue
            try:
                reading = reading.merged(
                    page.parse(await self.control.http(backend, "GET", page.path))
                )
            except MetricsFormatError as exc:
                raise LoadFailed(f"{backend.name}{page.path}: {exc}") from None
        return reading

    async def _wait_released(
        self, backend: Backend, driver: EngineDriver, models: set[str]
    ) -> None:
        deadline = self.clock() + MEMORY_FREE_TIMEOUT_S
        while True:
            reading = await self._reading(backend, driver)
            held = models & {model.name for model in reading.loaded_models}
            engine_bytes = reading.engine_vram_bytes or 0
            if not held and engine_bytes <= RELEASED_BYTES:
                return
            if self.clock() >= deadline:
                what = ", ".join(sorted(held)) or f"{engine_bytes / 1024**3:.2f} GiB"
                raise LoadFailed(f"{backend.name} still holds {what}")
            await asyncio.sleep(0.2)

    # -- the idle loop -------------------------------------------------------------------------

    async def run_housekeeping(self) -> None:
        """Every TICK_S: put idle services away (`idle_after`), bring displaced resident ones
        back; every REFRESH_S: re-read what runs."""
        last_refresh = self.clock()
        while not self._closing:
            await asyncio.sleep(TICK_S)
            try:
                await self._tick()
                if self.clock() - last_refresh >= REFRESH_S and self.control is not None:
                    last_refresh = self.clock()
                    running = await asyncio.to_thread(self.control.running_blocking)
                    self._refresh(running)
            except AitherError as exc:
                self.events.emit("housekeeping_failed", None, exc.message)

    async def _tick(self) -> None:
        now = self.clock()
        for backend in list(self.backends.values()):
            service = backend.service
            if (
                service is None or service.idle_after_s is None or service.pinned
                or backend.state is not BackendState.READY or not backend.idle
                or backend.load_task is not None
            ):
                continue
            if now - backend.last_used >= service.idle_after_s:
                with contextlib.suppress(LoadFailed):
                    await self._evict(backend, f"idle for {service.idle_after_s:g}s")
                backend.displaced = False  # put away by choice, not displaced
        self._restore_residents()

    def _restore_residents(self) -> None:
        """Bring back displaced resident services that fit without evicting anything."""
        for backend in self.backends.values():
            if (
                backend.displaced and backend.load_task is None
                and backend.state in (BackendState.STOPPED, BackendState.ASLEEP,
                                      BackendState.UNLOADED)
                and self.plan_room(backend).fits_now
            ):
                self._spawn_load(backend, reason="restoring the profile's resident set")

    def _refresh(self, running: set[str]) -> None:
        """Align with Docker: a service someone started or stopped by hand."""
        for backend in self.backends.values():
            if backend.service is None or backend.load_task is not None:
                continue
            if backend.state is BackendState.READY and backend.name not in running:
                backend.state = BackendState.STOPPED
                self.events.emit("gone", backend.name, "its container is no longer running")
            elif backend.state is BackendState.STOPPED and backend.name in running:
                backend.state = BackendState.READY
                backend.displaced = False
                self.events.emit("found", backend.name, "its container runs again")
                self._pump(backend)

    # -- status and shutdown ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        used: dict[str, int] = {}
        for holder in self.holders():
            for pool, amount in holder.claims.items():
                used[pool] = used.get(pool, 0) + amount
        return {
            "profile": self.profile.name,
            "backends": [b.snapshot(self._to_wall) for b in self.backends.values()],
            "pools": [
                {"pool": name, "capacity_bytes": p.capacity_bytes,
                 "used_bytes": used.get(name, 0)}
                for name, p in self.pools.items()
            ],
        }

    def _to_wall(self, moment: float) -> float:
        """A reading of the scheduler's clock as Unix time."""
        return time.time() - (self.clock() - moment)

    def in_flight(self) -> int:
        return sum(b.in_flight for b in self.backends.values())

    async def close(self, drain_s: float) -> None:
        """Stop taking requests, wait up to `drain_s` for those in flight, cancel loads (their
        transactions roll back), leave every container as it is."""
        self._closing = True
        deadline = self.clock() + drain_s
        while self.in_flight() and self.clock() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.2)
        for backend in self.backends.values():
            backend.cancel.set()
            self._fail_waiters(backend, SchedulerError("the scheduler is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self.control is not None:
            await asyncio.to_thread(self.control.close_blocking)


def pool_total(pool: Pool | None) -> int:
    """The memory a share (`35%`) is taken of: the pool's total before any reserve."""
    return 0 if pool is None else pool.total_bytes
