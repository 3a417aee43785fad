"""The MicroScheduler: the one owner of which model is loaded, who waits for it and who is evicted.

All of its state lives in `Scheduler` and is changed only by coroutines on one asyncio event loop
(llama-swap's issue #946: a decision taken from state read earlier, after another task changed
it, wedged a swap group). Every decision is taken from the state as it is at that moment; the
slow work (a Docker transaction, a sleep request) runs in a worker thread or as an HTTP call, and
its result is applied back on the loop.

Per backend (a service of the profile, or an endpoint): a concurrency limit (`max_concurrency`,
else the engine's: llama.cpp `--parallel`, vLLM `--max-num-seqs`), a bounded priority queue with
ageing (`aitherctl.serve.model`), and a state:

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
from typing import TYPE_CHECKING, Any

from aitherctl.errors import AitherError, RefusedError
from aitherctl.profiles.scheduling_terms import Rank, parse_rank
from aitherctl.serve.effects import MEMORY_FREE_TIMEOUT_S
from aitherctl.serve.errors import ExternallyBusy, LoadFailed, QueueFull, SchedulerError
from aitherctl.serve.model import (
    DEFAULT_MAX_QUEUE,
    EvictionChoice,
    Holder,
    Pool,
    Priority,
    Waiter,
    WaitQueue,
    choose_victims,
    describe_missing,
    gpu_aware,
)
from aitherctl.serve.states import (
    AWAY,
    HOLDING,
    BackendState,
    InvalidTransition,
    is_valid_transition,
)

if TYPE_CHECKING:
    from aitherctl.profiles.profile import Node, Profile, Service
    from aitherctl.routing.table import Candidate, RoutingTable
    from aitherctl.serve.effects import Effects, GpuReading, NodeAddress, NodeEffects, Spend

DEFAULT_ENDPOINT_CONCURRENCY = 32
DEFAULT_SERVICE_CONCURRENCY = 8  # an engine that decides at run time (vLLM without max-num-seqs)
TICK_S = 1.0  # idle checks and restores
REFRESH_S = 5.0  # re-read what Docker runs (someone ran `aitherctl up` or `down`)
LOAD_WAIT_FOR_ROOM_S = 120.0  # a load that must wait for busy services to become idle
EVENTS_KEPT = 200
DEFAULT_NODE_CONCURRENCY = 8  # requests sent at once to one rented node's engine
NODE_RETRY_S = 30.0  # after a failed create, how long before a node is created again


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
    last_used: float = 0.0  # set to the scheduler's clock when it first knows the backend
    # Counts every change of state: an observation read before an `await` is applied only if
    # the epoch it was read at is still the backend's (nothing changed it meanwhile).
    epoch: int = 0
    retired: bool = False  # no longer in the profile served: finishes its requests, takes none
    displaced: bool = False  # a resident service put away to make room: brought back when idle
    load_task: asyncio.Task[None] | None = None
    last_error: str | None = None
    busy_until: float = 0.0  # working on requests sent around the gateway (seen then)
    cancel: threading.Event = field(default_factory=threading.Event)
    loaded: tuple[float, float] | None = None  # the last load's start and end (clock)
    # A rented node (`nodes:`): loading creates an instance, evicting destroys it.
    node: Node | None = None
    address: NodeAddress | None = None  # its instance's engine, once it answers
    spent_today_usd: float | None = None  # a node's cost today (all its instances)
    next_try: float = 0.0  # after a failed create: not created again before this (clock)

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and not self.queue

    @property
    def pinned(self) -> bool:
        return bool(self.service and self.service.pinned)

    @property
    def rank(self) -> Rank:
        return parse_rank(self.service.priority) if self.service else Rank.NORMAL

    def snapshot(self, to_wall: Callable[[float], float], now: float = 0.0) -> dict[str, Any]:
        return {
            "backend": self.name,
            "kind": "service" if self.service else ("node" if self.node else "endpoint"),
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
            **(self._node_snapshot(now) if self.node is not None else {}),
        }

    def _node_snapshot(self, now: float) -> dict[str, Any]:
        """A node's money and time: its instance's whole hourly price, what it cost today,
        and how long it may stay idle before it is destroyed (None: busy, not running, or
        never idle-destroyed)."""
        from aitherctl.profiles.profile import NodeMode

        assert self.node is not None
        idle_left = None
        if (
            self.node.mode is NodeMode.ON_DEMAND
            and self.node.idle_after_s is not None
            and self.state is BackendState.READY
            and self.idle
        ):
            idle_left = round(max(0.0, self.node.idle_after_s - (now - self.last_used)), 1)
        return {
            "mode": self.node.mode.value,
            "price_per_hour_usd": self.address.price_per_hour_usd if self.address else None,
            "spent_today_usd": self.spent_today_usd,
            "idle_left_s": idle_left,
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
    """One scheduler decision as `GET /status` and `/events` report it: when, what happened
    (queued, loading, evicted, served...), to which backend and for which request."""

    ts: float
    kind: str  # queued, loading, downloading, loaded, evicted, slept, woke, unloaded, served, ...
    backend: str | None
    detail: str = ""
    request: str | None = None
    # `downloading`: the file's bytes so far and its size (None: unknown).
    done_bytes: int | None = None
    total_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ts": round(self.ts, 3),
            "event": self.kind,
            "backend": self.backend,
            "detail": self.detail,
            "request": self.request,
        }
        if self.kind == "downloading":
            body["done_bytes"] = self.done_bytes
            body["total_bytes"] = self.total_bytes
        return body


class EventLog:
    """The last EVENTS_KEPT decisions, and live subscribers (`GET /events`, the monitor)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.recent: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self.subscribers: set[asyncio.Queue[Event]] = set()
        self.clock = clock
        # The download a backend's start is waiting for, as last reported (its keep-alive
        # comments say so); gone when the start is over.
        self.downloads: dict[str, Event] = {}

    def emit(
        self,
        kind: str,
        backend: str | None,
        detail: str = "",
        request: str | None = None,
        *,
        done_bytes: int | None = None,
        total_bytes: int | None = None,
    ) -> Event:
        event = Event(self.clock(), kind, backend, detail, request, done_bytes, total_bytes)
        self.recent.append(event)
        for queue in self.subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)  # a slow reader loses events, never slows the loop
        return event

    def downloading(self, backend: str, detail: str, done_bytes: int, total: int | None) -> None:
        """A start of `backend` is downloading its model (one `downloading` event per report)."""
        event = self.emit("downloading", backend, detail, done_bytes=done_bytes, total_bytes=total)
        self.downloads[backend] = event

    def download_over(self, backend: str) -> None:
        self.downloads.pop(backend, None)

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


class Scheduler:
    """Owns every backend's state. Call its coroutines from the loop it runs on.

    `control` performs the effects (`aitherctl.serve.effects.Effects`; None: nothing can be
    started or stopped, every service is taken as running)."""

    def __init__(
        self,
        profile: Profile,
        table: RoutingTable,
        control: Effects | None,
        pools: dict[str, Pool],
        *,
        events: EventLog | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        running: set[str] | None = None,
        nodes: NodeEffects | None = None,
        nodes_running: dict[str, NodeAddress] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.profile = profile
        self.table = table
        self.control = control
        self.pools = pools
        self.events = events or EventLog()
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.backends: dict[str, Backend] = {}
        # Backends of a profile served before a followed switch that still have requests in
        # flight: they finish there; nothing else is done to them.
        self.retired: dict[str, Backend] = {}
        self._seq = 0
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        # The reading of what Docker runs that a refused connection asked for, and when it began
        # (requests refused together share one reading that began after their refusal).
        self._recheck: tuple[float, asyncio.Task[None]] | None = None
        # Rented nodes: who creates and destroys them, and what today's spend is.
        self.nodes = nodes
        self.log = log or (lambda _line: None)
        self.spent_today_usd: float | None = None
        self.cap_reached = False  # today's spend reached `cloud.daily_cap`: nothing is created
        self._warned = False  # the warning share's event was given (until the spend falls)
        self._node_addresses = dict(nodes_running or {})
        self.backends = self._build(profile, table, running)

    # -- set-up ----------------------------------------------------------------------------------

    def _build(
        self, profile: Profile, table: RoutingTable, running: set[str] | None
    ) -> dict[str, Backend]:
        from aitherctl.engines.registry import driver_for
        from aitherctl.routing.table import service_candidate

        now = self.clock()
        backends: dict[str, Backend] = {}
        for name, candidate in table.backends.items():
            service = profile.services.get(name) if candidate.origin == "service" else None
            node = profile.nodes.get(name) if candidate.origin == "node" else None
            if node is not None:
                backends[name] = self._node_backend(node, candidate, now)
                continue
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
                limit, capacity, state = (
                    DEFAULT_ENDPOINT_CONCURRENCY,
                    DEFAULT_MAX_QUEUE,
                    (BackendState.READY),
                )
            backend = Backend(
                name=name,
                candidate=candidate,
                service=service,
                limit=limit,
                queue=WaitQueue(capacity),
                state=state,
                last_used=now,
            )
            if service is not None:
                backend.claims = self._claims(service)
                # A resident service found stopped at start is brought back like a displaced one.
                backend.displaced = state is BackendState.STOPPED and not service.on_demand
            backends[name] = backend
        # Services that hold memory but take no chat requests (ComfyUI) still count in pools.
        for name, service in profile.services.items():
            if name in backends:
                continue
            state = (
                BackendState.READY if running is None or name in running else (BackendState.STOPPED)
            )
            backend = Backend(
                name=name,
                candidate=service_candidate(service),
                service=service,
                limit=0,
                queue=WaitQueue(0),
                state=state,
                claims=self._claims(service),
                last_used=now,
            )
            backend.displaced = state is BackendState.STOPPED and not service.on_demand
            backends[name] = backend
        return backends

    def adopt(
        self,
        profile: Profile,
        table: RoutingTable,
        pools: dict[str, Pool],
        running: set[str] | None,
    ) -> None:
        """Serve `profile` from now on (a followed switch, or the served profile edited), in
        this one schedule: a backend of both profiles keeps its state, its requests in flight,
        its queue and its `last_used` (so no second scheduler ever acts on its container);
        one that left the profile finishes what it has in flight and takes nothing new; one
        that joined is known from now on."""
        old = self.backends
        self.profile, self.table, self.pools = profile, table, pools
        fresh = self._build(profile, table, running)
        for name, backend in fresh.items():
            kept = old.pop(name, None) or self.retired.pop(name, None)
            if kept is None:
                continue
            kept.candidate, kept.service, kept.limit = (
                backend.candidate,
                backend.service,
                backend.limit,
            )
            kept.claims = backend.claims
            kept.retired = False
            if backend.node is not None:
                kept.node = backend.node
                self._address(kept, kept.address)  # the new profile's candidate, same instance
            if kept.service is not None and kept.load_task is None and kept.idle:
                # What the switch left running is the truth for a service nobody uses now.
                if kept.state is BackendState.READY and backend.state is BackendState.STOPPED:
                    self.set_state(kept, BackendState.READY, BackendState.STOPPED)
                elif kept.state is BackendState.STOPPED and backend.state is BackendState.READY:
                    self.set_state(kept, BackendState.STOPPED, BackendState.READY)
                    kept.last_used = self.clock()
                kept.displaced = backend.displaced
            fresh[name] = kept
        for name, backend in old.items():
            backend.retired = True
            backend.cancel.set()
            self._fail_waiters(
                backend, SchedulerError(f"{name} is not in profile {profile.name} any more")
            )
            if backend.in_flight:
                self.retired[name] = backend
            else:
                self._end_left_node(backend)
        self.backends = fresh
        if self.control is not None:
            self.control.adopt(profile)
        if self.nodes is not None and not _same(self.nodes, self.control):
            self.nodes.adopt(profile)
        self._changed.set()

    def _node_backend(self, node: Node, candidate: Candidate, now: float) -> Backend:
        """A rented node: ready when an instance of it runs (serve found it at start, or
        created it), stopped when none does. It holds none of this machine's memory."""
        backend = Backend(
            name=node.name,
            candidate=candidate,
            service=None,
            limit=DEFAULT_NODE_CONCURRENCY,
            queue=WaitQueue(DEFAULT_MAX_QUEUE),
            state=BackendState.STOPPED,
            last_used=now,  # idle time counts from when serve knew it
            node=node,
        )
        address = self._node_addresses.get(node.name)
        if address is not None:
            backend.state = BackendState.READY
            self._address(backend, address)
        return backend

    def _address(self, backend: Backend, address: NodeAddress | None) -> None:
        """Route `backend` to its instance's engine (None: to nowhere, it has no instance)."""
        from aitherctl.routing.table import node_at

        backend.address = address
        if address is None:
            backend.candidate = node_at(backend.candidate, None, None)
        else:
            backend.candidate = node_at(backend.candidate, address.url, address.api_key)

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

    # -- the one way a state changes -------------------------------------------------------

    def set_state(self, backend: Backend, expected: BackendState, new: BackendState) -> None:
        """Move `backend` from `expected` to `new`, or raise InvalidTransition (the state is
        not the one the caller decided from, or the table does not allow the change)."""
        if backend.state is not expected:
            raise InvalidTransition(
                f"{backend.name}: expected {expected.value}, found {backend.state.value} "
                f"(asked for {new.value})"
            )
        if not is_valid_transition(expected, new):
            raise InvalidTransition(
                f"{backend.name}: {expected.value} → {new.value} is not allowed"
            )
        backend.state = new
        backend.epoch += 1

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
        bound = (
            backend.queue.capacity if threshold is None else min(threshold, backend.queue.capacity)
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

    async def acquire(self, name: str, priority: Priority, request_id: str | None = None) -> Lease:
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
        self.events.emit(
            "queued", name, f"{priority.label}, {len(backend.queue)} waiting", request_id
        )
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
        if backend.retired and not backend.in_flight:
            self.retired.pop(backend.name, None)
            self._end_left_node(backend)
        self._changed.set()
        self._pump(backend)

    def _retry_after(self, backend: Backend) -> int:
        return max(1, min(60, len(backend.queue) // max(1, backend.limit)))

    def _pump(self, backend: Backend) -> None:
        """Hand free places to the best waiters, or start the load they wait for."""
        if backend.retired:
            return
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
        elif backend.queue and backend.state in AWAY and backend.load_task is None:
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
                evictable=self._evictable(b),
                rank=b.rank,
                last_used=b.last_used,
            )
            for b in self.backends.values()
            if b is not exclude and b.service is not None and b.claims and b.state in HOLDING
        ]

    def _evictable(self, backend: Backend) -> bool:
        return (
            backend.state is BackendState.READY
            and backend.idle
            and not backend.pinned
            and backend.load_task is None
            and backend.busy_until <= self.clock()
        )

    def plan_room(
        self, backend: Backend, gpus: dict[int, GpuReading] | None = None
    ) -> EvictionChoice:
        """Which idle services to free so that `backend` fits, counted as the switch counts:
        with `gpus` read, each GPU pool is its total less the reserve less what aitherctl does
        not control, and each service on it holds the larger of its budget and its real use."""
        holders = self.holders(exclude=backend)
        pools = self.pools
        if gpus:
            outside = {f"gpu:{index}": r.outside_bytes for index, r in gpus.items()}
            real = {f"gpu:{index}": dict(r.real_use_bytes) for index, r in gpus.items()}
            pools, holders = gpu_aware(pools, holders, outside, real)
        return choose_victims(backend.claims, holders, pools)

    async def _read_gpus(self, backend: Backend) -> dict[int, GpuReading] | None:
        if self.control is None or not any(p.startswith("gpu:") for p in backend.claims):
            return None
        return await self.control.read_gpus()

    async def _load(self, backend: Backend, reason: str) -> None:
        before = backend.state
        started = self.clock()
        self.set_state(backend, before, BackendState.LOADING)
        backend.cancel = threading.Event()
        self.events.emit("loading", backend.name, f"{reason}; was {before.value}")
        loaded = False
        try:
            if before in (BackendState.ASLEEP, BackendState.UNLOADED) and not await self._alive(
                backend
            ):
                # Its container died behind our back (OOM, `down`, a daemon restart): a wake
                # would fail, a start is what it needs.
                self.events.emit("gone", backend.name, "its container is no longer running")
                before = BackendState.STOPPED
            await self._make_room(backend)
            await self._bring_up(backend, before)
            loaded = True
        except asyncio.CancelledError:
            self._fail_waiters(backend, SchedulerError("the scheduler is shutting down"))
            raise
        except Exception as exc:  # any failure ends the load: never "loading" for ever
            message = exc.message if isinstance(exc, AitherError) else f"{exc!r}"
            backend.last_error = message
            if backend.node is not None:
                backend.next_try = self.clock() + NODE_RETRY_S
            self.metrics.count("load_failures", backend.name)
            self.events.emit("load_failed", backend.name, message)
            self._fail_waiters(
                backend, LoadFailed(f"{backend.name} could not be loaded: {message}")
            )
        finally:
            backend.load_task = None
            if not loaded and backend.state is BackendState.LOADING:
                self.set_state(backend, BackendState.LOADING, before)
            self._changed.set()
        if not loaded:
            return
        seconds = self.clock() - started
        self.set_state(backend, BackendState.LOADING, BackendState.READY)
        backend.displaced = False
        backend.last_error = None
        backend.last_used = self.clock()
        self.metrics.count("loads", backend.name)
        self.metrics.observe("load_seconds", backend.name, seconds)
        backend.loaded = (started, self.clock())
        self.events.emit("loaded", backend.name, f"ready after {seconds:.2f}s")
        self._pump(backend)

    async def _make_room(self, backend: Backend) -> None:
        deadline = self.clock() + LOAD_WAIT_FOR_ROOM_S
        while True:
            choice = self.plan_room(backend, await self._read_gpus(backend))
            if choice.fits_now:
                return
            if choice.victims:
                try:
                    for victim in choice.victims:
                        await self._evict(self.backends[victim], f"to make room for {backend.name}")
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
        deadline = self.clock() + MEMORY_FREE_TIMEOUT_S
        while True:
            gpus = await self._read_gpus(backend)
            if gpus is None:
                return
            free = {index: reading.free_bytes for index, reading in gpus.items()}
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

    async def _alive(self, backend: Backend) -> bool:
        return self.control is None or backend.name in await self.control.observe()

    async def _bring_up(self, backend: Backend, before: BackendState) -> None:
        """Wake, reload or start `backend` (create a node's instance)."""
        if backend.node is not None:
            await self._create_node(backend, backend.node)
            return
        if self.control is None:
            raise LoadFailed("no Docker engine to start it with")
        service = backend.service
        assert service is not None
        if before is BackendState.ASLEEP:
            await self.control.wake(service, backend.candidate.base_url)
            self.metrics.count("wakes", backend.name)
            self.events.emit("woke", backend.name)
            return
        if before is BackendState.UNLOADED:
            return  # the engine loads the model with the request itself
        await self._start(backend, service)

    # -- rented nodes ----------------------------------------------------------------------------

    async def _create_node(self, backend: Backend, node: Node) -> None:
        if self.nodes is None:
            raise LoadFailed("no provider to create cloud nodes with")
        if self.cap_reached:
            raise LoadFailed("today's cloud spend reached the daily cap: no node is created")
        address = await self.nodes.create_node(node, backend.cancel)
        if self.cap_reached or backend.cancel.is_set():
            # The cap was reached (or serve began to stop) while it booted: not kept.
            await self.nodes.destroy_node(node, address.record_id)
            raise LoadFailed("the daily cloud cap was reached while it booted: destroyed")
        self._address(backend, address)
        price = address.price_per_hour_usd
        detail = f"instance {address.record_id}" + (f", ${price:.3f}/h" if price else "")
        self.events.emit("node_created", backend.name, detail)
        self.log(f"node {backend.name}: created ({detail})")

    def wake_node(self, name: str, why: str, request_id: str | None = None) -> bool:
        """Create an instance of node `name` in the background (a request's effort or the
        local queue reached its `wake_on`); requests meanwhile go elsewhere. True when it is
        (now) on its way or running."""
        backend = self.backends.get(name)
        if backend is None or backend.node is None or self._closing or backend.retired:
            return False
        if backend.state is not BackendState.STOPPED or backend.load_task is not None:
            return backend.state in (BackendState.LOADING, BackendState.READY)
        if self.cap_reached or self.nodes is None or self.clock() < backend.next_try:
            return False
        self.events.emit("node_waking", name, why, request_id)
        self._spawn_load(backend, reason=why)
        return True

    def note_request(self, effort: int | None, request_id: str | None = None) -> None:
        """A request arrived with `effort` (None: not graded): wake each on-demand node whose
        `wake_on` it reaches, by effort or by the requests waiting for local services now."""
        from aitherctl.profiles.profile import NodeMode

        depth = self.local_queue_depth()
        for backend in self.backends.values():
            node = backend.node
            if node is None or node.mode is not NodeMode.ON_DEMAND:
                continue
            if backend.state is not BackendState.STOPPED or backend.load_task is not None:
                continue
            wake = node.wake_on
            if wake.effort is not None and effort is not None and effort >= wake.effort:
                self.wake_node(backend.name, f"effort {effort} ≥ {wake.effort}", request_id)
            elif wake.queue_depth is not None and depth >= wake.queue_depth:
                self.wake_node(
                    backend.name, f"{depth} waiting locally ≥ {wake.queue_depth}", request_id
                )

    def local_queue_depth(self) -> int:
        """Requests waiting for this machine's services (queued, not yet sent)."""
        return sum(len(b.queue) for b in self.backends.values() if b.service is not None)

    async def _destroy_node(self, backend: Backend, why: str) -> None:
        """Destroy a ready node's instance ("sleep" is destroy: a stopped instance keeps
        paying for its storage)."""
        assert backend.node is not None
        if backend.state is not BackendState.READY or self.nodes is None:
            return
        self.set_state(backend, BackendState.READY, BackendState.EVICTING)
        self.events.emit("destroying", backend.name, why)
        address = backend.address
        try:
            if address is not None:
                await self.nodes.destroy_node(backend.node, address.record_id)
        except AitherError as exc:
            self.set_state(backend, BackendState.EVICTING, BackendState.READY)
            self.events.emit("destroy_failed", backend.name, exc.message)
            self.log(f"node {backend.name}: destroy failed: {exc.message}")
            return
        self.set_state(backend, BackendState.EVICTING, BackendState.STOPPED)
        self._address(backend, None)
        self.events.emit("destroyed", backend.name, why)
        self.log(f"node {backend.name}: destroyed ({why})")
        self._changed.set()
        if backend.queue:  # a request arrived while it was being destroyed
            self._pump(backend)

    async def _tend_nodes(self) -> None:
        """Each tick: today's spend against the cap (warning, hard stop), idle on-demand
        nodes destroyed, always-on nodes created (again, when theirs died)."""
        from aitherctl.profiles.profile import NodeMode

        nodes = [b for b in self.backends.values() if b.node is not None]
        if not nodes or self.nodes is None:
            return
        if self.profile.cloud is not None:
            spend = await self.nodes.spend_today()
            for backend in nodes:
                backend.spent_today_usd = spend.by_node_usd.get(backend.name, 0.0)
            await self._apply_spend(spend, nodes)
        now = self.clock()
        for backend in nodes:
            node = backend.node
            assert node is not None
            if (
                node.mode is NodeMode.ON_DEMAND
                and node.idle_after_s is not None
                and backend.state is BackendState.READY
                and backend.idle
                and backend.load_task is None
                and now - backend.last_used >= node.idle_after_s
            ):
                await self._destroy_node(backend, f"idle for {node.idle_after_s:g}s")
            elif (
                node.mode is NodeMode.ALWAYS_ON
                and backend.state is BackendState.STOPPED
                and backend.load_task is None
                and not self.cap_reached
                and now >= backend.next_try
                and not self._closing
            ):
                self._spawn_load(backend, reason="always on")

    async def _apply_spend(self, spend: Spend, nodes: list[Backend]) -> None:
        cloud = self.profile.cloud
        assert cloud is not None
        spent = spend.today_usd
        self.spent_today_usd = spent
        share = spent / cloud.daily_cap_usd if cloud.daily_cap_usd else 1.0
        cap = cloud.daily_cap_usd
        line = f"cloud spend today ${spent:.4f} is {share:.0%} of the ${cap:.2f} cap"
        if spent >= cloud.warn_at_usd and not self._warned:
            self._warned = True
            self.events.emit("budget_warning", None, line)
            self.log(f"warning: {line}")
        elif spent < cloud.warn_at_usd:
            self._warned = False  # a new day
        reached = spent >= cloud.daily_cap_usd
        if reached and not self.cap_reached:
            stop = ": every node is destroyed" if cloud.hard_stop else ""
            self.events.emit("budget_cap", None, f"{line}: no node is created{stop}")
            self.log(f"cap reached: {line}: no node is created{stop}")
        self.cap_reached = reached
        if not (reached and cloud.hard_stop):
            return
        for backend in nodes:
            if backend.load_task is not None:
                backend.cancel.set()  # its create destroys what it made
            await self._destroy_node(backend, "the daily cloud cap was reached (hard stop)")

    async def _start(self, backend: Backend, service: Service) -> None:
        """Start through the switch's transaction. When the switch refuses (its VRAM check
        counts real use, memory outside aitherctl and the driver's reservation, which the pools
        may not have seen), evict every idle service that shares a GPU with it and try once
        more before failing."""
        assert self.control is not None
        try:
            await self.control.start(service, backend.cancel)
            return
        except RefusedError as refusal:
            pools = {p for p in backend.claims if p.startswith("gpu:")}
            victims = sorted(
                (
                    b
                    for b in self.backends.values()
                    if b is not backend
                    and b.service is not None
                    and self._evictable(b)
                    and pools & set(b.claims)
                ),
                key=lambda b: (b.rank, b.last_used, b.name),
            )
            if not victims:
                raise
            self.events.emit("refused", backend.name, f"{refusal.message}; evicting idle ones")
            for victim in victims:
                with contextlib.suppress(ExternallyBusy):
                    await self._evict(victim, f"the switch refused {backend.name}")
            await self._wait_gpu_free(backend)
        await self.control.start(service, backend.cancel)

    async def _evict(self, backend: Backend, why: str) -> None:
        """Free `backend`'s memory the engine's cheapest way. It must be idle (checked again
        here, on the loop, at the moment of deciding)."""
        if not (backend.state is BackendState.READY and backend.idle and not backend.pinned):
            raise ExternallyBusy(f"{backend.name} became busy; not evicted")
        from aitherctl.engines.registry import driver_for

        assert backend.service is not None
        assert self.control is not None
        service = backend.service
        driver = driver_for(service.engine.value)
        self.set_state(backend, BackendState.READY, BackendState.EVICTING)
        self.events.emit("evicting", backend.name, why)
        try:
            if driver.sleep_mode(service) is not None:
                await self.control.sleep(service, backend.candidate.base_url)
                after, verb = BackendState.ASLEEP, "slept"
                self.metrics.count("sleeps", backend.name)
            elif driver.release_memory(()) is not None or driver.release_needs_models:
                await self.control.release(service, backend.candidate.base_url)
                after, verb = BackendState.UNLOADED, "unloaded"
            else:
                await self.control.stop(service)
                after, verb = BackendState.STOPPED, "stopped"
        except ExternallyBusy as exc:
            self.set_state(backend, BackendState.EVICTING, BackendState.READY)
            backend.busy_until = self.clock() + TICK_S
            self.events.emit("evict_deferred", backend.name, exc.message)
            raise
        except BaseException as exc:
            self.set_state(backend, BackendState.EVICTING, BackendState.READY)
            if not isinstance(exc, (AitherError, OSError)):
                raise
            message = exc.message if isinstance(exc, AitherError) else str(exc)
            self.events.emit("evict_failed", backend.name, message)
            raise LoadFailed(f"could not free {backend.name}: {message}") from None
        self.set_state(backend, BackendState.EVICTING, after)
        backend.displaced = not service.on_demand
        self.metrics.count("evictions", backend.name)
        self.events.emit("evicted", backend.name, f"{verb} ({why})")
        self._changed.set()
        if backend.queue:  # a request arrived while it was being put away
            self._pump(backend)

    # -- the idle loop -------------------------------------------------------------------------

    async def run_housekeeping(self) -> None:
        """Every TICK_S: put idle services away (`idle_after`), bring displaced resident ones
        back; every REFRESH_S: re-read what runs."""
        last_refresh = self.clock()
        while not self._closing:
            await asyncio.sleep(TICK_S)
            try:
                await self._tick()
                if self.clock() - last_refresh >= REFRESH_S and (
                    self.control is not None or self.nodes is not None
                ):
                    last_refresh = self.clock()
                    await self.reconcile()
            except AitherError as exc:
                self.events.emit("housekeeping_failed", None, exc.message)

    async def _tick(self) -> None:
        now = self.clock()
        for backend in list(self.backends.values()):
            service = backend.service
            if (
                service is None
                or service.idle_after_s is None
                or service.pinned
                or backend.state is not BackendState.READY
                or not backend.idle
                or backend.load_task is not None
            ):
                continue
            if now - backend.last_used >= service.idle_after_s:
                with contextlib.suppress(LoadFailed):
                    await self._evict(backend, f"idle for {service.idle_after_s:g}s")
                backend.displaced = False  # put away by choice, not displaced
        await self._tend_nodes()
        await self._restore_residents()

    async def _restore_residents(self) -> None:
        """Bring back displaced resident services that fit without evicting anything (counted
        as the load will count them: with the GPUs read once for all of them)."""
        waiting = [
            b
            for b in self.backends.values()
            if b.displaced and b.load_task is None and b.state in AWAY
        ]
        gpus = None
        on_gpus = any(pool.startswith("gpu:") for b in waiting for pool in b.claims)
        if self.control is not None and on_gpus:
            gpus = await self.control.read_gpus()
        for backend in waiting:
            if (
                backend.displaced
                and backend.load_task is None
                and backend.state in AWAY
                and self.plan_room(backend, gpus).fits_now
            ):
                self._spawn_load(backend, reason="restoring the profile's resident set")

    async def reconcile(self) -> None:
        """Align with what Docker runs (someone ran `up` or `down`, a container died). The
        list is read across an `await`: it is applied only to backends whose state did not
        change since the read began. Rented nodes likewise, from their records and the
        provider's list."""
        if self.control is not None:
            await self._observe_containers()
        if self.nodes is not None and any(b.node for b in self.backends.values()):
            epochs = {name: backend.epoch for name, backend in self.backends.items()}
            found = await self.nodes.observe_nodes()
            self.apply_node_observation(found, epochs)

    async def _observe_containers(self) -> None:
        assert self.control is not None
        epochs = {name: backend.epoch for name, backend in self.backends.items()}
        running = await self.control.observe()
        self.apply_observation(running, epochs)

    async def recheck(self, name: str, refused_at: float) -> bool:
        """A request found `name`'s server refusing connections at `refused_at`: read what
        Docker runs now rather than at the next reading (every REFRESH_S), so that a container
        that died (killed, OOM, a crash) is started by this request. True when `name` is now
        known stopped, or is being loaded (another request refused with this one got there
        first): a new attempt loads it, or waits for that load. Requests refused together share
        one reading, begun after they were refused."""
        if self.control is None or self._closing or name not in self.backends:
            return False
        if self._recheck is None or self._recheck[0] < refused_at:
            self._recheck = (self.clock(), self._spawn(self._observe_containers()))
        reading = self._recheck[1]
        try:
            await asyncio.shield(reading)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if reading.cancelled() and not (current is not None and current.cancelling()):
                return False  # the reading, not this request, was cancelled: serve is closing
            raise
        except Exception:  # Docker did not answer: the request fails as it would have
            return False
        if self._closing:
            return False  # no new attempt once serve stops taking requests
        return self.backends[name].state in (BackendState.STOPPED, BackendState.LOADING)

    def apply_node_observation(self, found: dict[str, NodeAddress], epochs: dict[str, int]) -> None:
        """`found`: the nodes whose instance runs now. A ready node whose instance is gone (it
        died, or `aitherctl nodes destroy`) stops (an always-on one is created again); a
        stopped one found running (`aitherctl nodes create`) is used from now on."""
        for name, backend in self.backends.items():
            if (
                backend.node is None
                or backend.load_task is not None
                or epochs.get(name) != backend.epoch
            ):
                continue
            address = found.get(name)
            if backend.state is BackendState.READY and (
                address is None
                or backend.address is None
                or address.record_id != backend.address.record_id
            ):
                self.set_state(backend, BackendState.READY, BackendState.STOPPED)
                self._address(backend, None)
                self.events.emit("gone", name, "its instance is no longer running")
                self.log(f"node {name}: its instance is no longer running")
            elif backend.state is BackendState.STOPPED and address is not None:
                self.set_state(backend, BackendState.STOPPED, BackendState.READY)
                self._address(backend, address)
                backend.last_used = self.clock()  # its idle time counts from now
                self.events.emit("found", name, f"instance {address.record_id} runs")
                self._pump(backend)

    def apply_observation(self, running: set[str], epochs: dict[str, int]) -> None:
        for name, backend in self.backends.items():
            if (
                backend.service is None
                or backend.load_task is not None
                or epochs.get(name) != backend.epoch
            ):
                continue  # changed meanwhile (or new): the reading says nothing about it now
            alive = name in running
            if backend.state is BackendState.READY and not alive:
                # Not brought back on its own (that would undo a hand-run `down`): the next
                # request starts it.
                self.set_state(backend, BackendState.READY, BackendState.STOPPED)
                self.events.emit("gone", name, "its container is no longer running")
            elif backend.state in (BackendState.ASLEEP, BackendState.UNLOADED) and not alive:
                self.set_state(backend, backend.state, BackendState.STOPPED)
                self.events.emit("gone", name, "its container is no longer running")
            elif backend.state is BackendState.STOPPED and alive:
                self.set_state(backend, BackendState.STOPPED, BackendState.READY)
                backend.displaced = False
                backend.last_used = self.clock()  # `idle_after` counts from now
                self.events.emit("found", name, "its container runs again")
                self._pump(backend)

    # -- status and shutdown ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        used: dict[str, int] = {}
        for holder in self.holders():
            for pool, amount in holder.claims.items():
                used[pool] = used.get(pool, 0) + amount
        now = self.clock()
        cloud = self.profile.cloud
        return {
            "profile": self.profile.name,
            "backends": [b.snapshot(self._to_wall, now) for b in self.backends.values()],
            **(
                {
                    "cloud": {
                        "spent_today_usd": self.spent_today_usd,
                        "daily_cap_usd": cloud.daily_cap_usd,
                        "cap_reached": self.cap_reached,
                    }
                }
                if cloud is not None and self.profile.nodes
                else {}
            ),
            "pools": [
                {"pool": name, "capacity_bytes": p.capacity_bytes, "used_bytes": used.get(name, 0)}
                for name, p in self.pools.items()
            ],
        }

    def _end_left_node(self, backend: Backend) -> None:
        """A node that left the profile served, its last request done: destroyed if serve
        would have destroyed it once idle (nothing looks after it from now on)."""
        if _ends_when_idle(backend) and not self._closing:
            self._spawn(self._destroy_node(backend, "not in the profile any more"))

    async def _destroy_idle_kind_of_nodes(self) -> None:
        """At shutdown: destroy the ready on-demand nodes that have an idle time."""
        for backend in list(self.backends.values()):
            if _ends_when_idle(backend):
                await self._destroy_node(backend, "serve stopped")

    def _to_wall(self, moment: float) -> float:
        """A reading of the scheduler's clock as Unix time."""
        return time.time() - (self.clock() - moment)

    def in_flight(self) -> int:
        return sum(b.in_flight for b in [*self.backends.values(), *self.retired.values()])

    async def close(self, drain_s: float) -> None:
        """Stop taking requests, wait up to `drain_s` for those in flight, cancel loads (their
        transactions roll back), leave every container as it is. A rented node that `serve`
        would destroy once idle (on demand, with `idle_after`) is destroyed: nothing would end
        it once `serve` is gone, and it would pay by the second, outside the daily cap's watch.
        `always_on` nodes and nodes without `idle_after` keep running, as they would here."""
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
        await self._destroy_idle_kind_of_nodes()
        if self.control is not None:
            await self.control.close()
        if self.nodes is not None and not _same(self.nodes, self.control):
            await self.nodes.close()


def _ends_when_idle(backend: Backend) -> bool:
    """A ready rented node that serve destroys once idle (on demand, with an idle time)."""
    from aitherctl.profiles.profile import NodeMode

    node = backend.node
    return (
        node is not None
        and node.mode is NodeMode.ON_DEMAND
        and node.idle_after_s is not None
        and backend.state is BackendState.READY
    )


def _same(one: object, other: object) -> bool:
    """One object serving as both effects (the tests' fake does)."""
    return one is other


def pool_total(pool: Pool | None) -> int:
    """The memory a share (`35%`) is taken of: the pool's total before any reserve."""
    return 0 if pool is None else pool.total_bytes
