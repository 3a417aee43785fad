"""The scheduler's real effects (`aitherctl.serve.effects.Effects`): Docker transactions in their
own worker threads, the engines' own sleep, wake and release requests over the shared upstream
HTTP client, and the GPU readings (NVML) the scheduler's memory pools are checked against."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from aitherctl.engines.metrics import MetricsFormatError
from aitherctl.errors import AitherError
from aitherctl.serve.effects import MEMORY_FREE_TIMEOUT_S
from aitherctl.serve.errors import ExternallyBusy, LoadFailed

if TYPE_CHECKING:
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.engines.metrics import EngineMetrics
    from aitherctl.engines.registry import EngineDriver
    from aitherctl.gpu.model import GpuInventory
    from aitherctl.models.pull_model import PullEvent
    from aitherctl.profiles.profile import Profile, Service
    from aitherctl.serve.effects import Cancel, GpuReading
    from aitherctl.serve.scheduler import EventLog
    from aitherctl.serve.upstream import Upstream

T = TypeVar("T")

# An engine that reports what it holds (ComfyUI's torch_vram_total) counts as released below
# this: PyTorch keeps a few buffers and its CUDA context.
RELEASED_BYTES = 512 * 1024**2
# Docker transactions (a load waits for the engine lock, pulls, waits for readiness: minutes)
# run in their own threads, so the ledger and quick reads never queue behind them.
DOCKER_THREADS = 8


class ServiceControl:
    """The real `Effects`: Docker transactions (in their own worker threads) and the engines'
    own sleep and release requests (over the shared upstream HTTP client).

    It holds the profile being served: a load starts exactly the spec the gateway routes to,
    even when the profile's file was edited meanwhile (`adopt` moves it to a new one)."""

    def __init__(
        self,
        connect: Callable[[], DockerEngine],
        inventory: Callable[[], GpuInventory],
        profile_name: str,
        upstream: Upstream,
        profile: Profile | None = None,
        *,
        events: EventLog | None = None,
    ) -> None:
        """`events`: where a start that must download its model first reports it
        (`EventLog.downloading`, on the loop that called `start`)."""
        self.events = events
        self.connect = connect
        self.inventory = inventory
        self.profile_name = profile_name
        self.upstream = upstream
        self._profile: Profile | None = profile
        # Engines of the profile's other hosts, kept open between refreshes (over SSH a new
        # connection costs a second or two); one that fails is dropped and reached again later.
        self._remote: dict[str, DockerEngine] = {}
        self._docker = ThreadPoolExecutor(DOCKER_THREADS, thread_name_prefix="aither-docker")

    def adopt(self, profile: Profile) -> None:
        """Serve `profile` from now on (a followed switch, or the same profile edited)."""
        self.profile_name = profile.name
        self._profile = profile

    def _catalog(self) -> Any:
        from aitherctl.profiles.catalog import ProfileCatalog

        return _PinnedCatalog(ProfileCatalog(), self._loaded())

    def _loaded(self) -> Profile:
        if self._profile is None:
            from aitherctl.profiles.catalog import ProfileCatalog

            self._profile = ProfileCatalog().load(self.profile_name)
        return self._profile

    async def _in_docker_threads(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._docker, work)

    # -- Effects ---------------------------------------------------------------------------

    async def start(self, service: Service, cancel: Cancel) -> None:
        event = cancel if isinstance(cancel, threading.Event) else threading.Event()
        loop = asyncio.get_running_loop()
        name = service.name

        def report(pulled: PullEvent | None) -> None:  # in a Docker thread
            if self.events is not None:
                loop.call_soon_threadsafe(self._report, name, pulled)

        await self._in_docker_threads(lambda: self.start_blocking(name, event, report))

    def _report(self, service: str, pulled: PullEvent | None) -> None:
        """On the loop: a download's step as an `/events` event and the keep-alives' text."""
        from aitherctl.models.pull_model import PullPhase, download_detail

        assert self.events is not None
        if pulled is None:
            self.events.download_over(service)
        elif pulled.phase not in (PullPhase.PRESENT, PullPhase.RETRY):
            self.events.downloading(
                service, download_detail(pulled), pulled.done_bytes, pulled.total_bytes
            )

    async def stop(self, service: Service) -> None:
        await self._in_docker_threads(lambda: self.stop_blocking(service.name))

    async def sleep(self, service: Service, base_url: str) -> None:
        mode = _sleep_mode(service)
        await self._call(base_url, mode.sleep.method, mode.sleep.path)

    async def wake(self, service: Service, base_url: str) -> None:
        mode = _sleep_mode(service)
        await self._call(base_url, mode.wake.method, mode.wake.path)

    async def release(self, service: Service, base_url: str) -> None:
        from aitherctl.engines.registry import driver_for

        driver = driver_for(service.engine.value)
        before = await self._reading(service, base_url, driver)
        if before.requests_running or before.requests_waiting:
            # Work that did not come through the gateway (a ComfyUI prompt): its memory is in
            # use; the engine would free it only after that work.
            raise ExternallyBusy(f"{service.name} is working on requests sent around the gateway")
        models = [model.name for model in before.loaded_models]
        for request in driver.release_memory(models) or ():
            await self._call(base_url, request.method, request.path, request.json_body)
        # Ollama answers `keep_alive: 0` and ComfyUI `/free` at once and release later: wait
        # until the engine says so (its models gone, its memory given back).
        held_models = set(models)
        deadline = time.monotonic() + MEMORY_FREE_TIMEOUT_S
        while True:
            reading = await self._reading(service, base_url, driver)
            held = held_models & {model.name for model in reading.loaded_models}
            engine_bytes = reading.engine_vram_bytes or 0
            if not held and engine_bytes <= RELEASED_BYTES:
                return
            if time.monotonic() >= deadline:
                what = ", ".join(sorted(held)) or f"{engine_bytes / 1024**3:.2f} GiB"
                raise LoadFailed(f"{service.name} still holds {what}")
            await asyncio.sleep(0.2)

    async def observe(self) -> set[str]:
        return await self._in_docker_threads(self.running_blocking)

    async def read_gpus(self) -> dict[int, GpuReading] | None:
        return await self._in_docker_threads(self.gpu_readings_blocking)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_blocking)

    # -- the blocking work -------------------------------------------------------------------

    async def _call(self, base_url: str, method: str, path: str, body: Any = None) -> Any:
        root = base_url.removesuffix("/v1")
        return await self.upstream.call(method, root + path, body, timeout_s=120.0)

    async def _reading(
        self, service: Service, base_url: str, driver: EngineDriver
    ) -> EngineMetrics:
        """The engine's own account of itself, from the driver's JSON pages (Ollama `/api/ps`,
        ComfyUI `/queue` and `/system_stats`), merged."""
        from aitherctl.engines.metrics import EngineMetrics

        reading = EngineMetrics()
        for page in driver.metrics:
            if page.format != "json":
                continue
            try:
                reading = reading.merged(page.parse(await self._call(base_url, "GET", page.path)))
            except MetricsFormatError as exc:
                raise LoadFailed(f"{service.name}{page.path}: {exc}") from None
        return reading

    def close_blocking(self) -> None:
        for engine in self._remote.values():
            engine.close()
        self._remote.clear()
        self._docker.shutdown(wait=False, cancel_futures=True)

    def _engine_for(self, service: str) -> tuple[DockerEngine, Callable[[], GpuInventory]]:
        """The engine `service` runs on (its profile `host:`), and that host's GPU readings."""
        from aitherctl.profiles.profile import LOCAL_HOST

        profile = self._loaded()
        svc = profile.services.get(service)
        if svc is None or svc.host == LOCAL_HOST:
            return self.connect(), self.inventory
        from aitherctl.docker.engine import DockerEngine
        from aitherctl.switching.hosts import host_inventory

        host = profile.hosts[svc.host]
        engine = DockerEngine.connect_host(host.name, host.docker, host.address)
        share = profile.on_host(host.name)
        return engine, lambda: host_inventory(host.name, engine, share, self.inventory)

    def start_blocking(
        self,
        service: str,
        cancel: threading.Event,
        report: Callable[[PullEvent | None], None] | None = None,
    ) -> None:
        """`aitherctl up SERVICE`: the same plan, lock, transaction, model download and
        readiness wait, on the host the service runs on. `report` gets each step of a download
        (Hugging Face or GGUF files first, an Ollama model through its server once it answers),
        then None when the start is over."""
        from aitherctl.switching.switch import ModelPolicy, switch

        engine, inventory = self._engine_for(service)
        try:
            switch(
                engine,
                self._catalog(),
                self.profile_name,
                inventory,
                _QuietProgress(),
                only=[service],
                cancel=cancel,
                models=ModelPolicy(pull=True, emit=report),
            )
        finally:
            engine.close()
            if report is not None:
                report(None)

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
        from aitherctl.profiles.profile import LOCAL_HOST
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
        from aitherctl.docker.engine import DockerEngine

        spec = profile.hosts[host]
        engine = DockerEngine.connect_host(spec.name, spec.docker, spec.address)
        self._remote[host] = engine
        return engine

    def gpu_readings_blocking(self) -> dict[int, GpuReading] | None:
        """This machine's GPUs counted as the switch's VRAM check counts them (core.vram):
        memory outside aitherctl (the larger of NVML's foreign processes and used memory less
        what aitherctl's running services really use) plus the driver's reservation, and each
        running service's real use (NVML per-process memory of its container's PIDs)."""
        from aitherctl.gpu.vram import GpuBudget, actual_use_by_service
        from aitherctl.serve.effects import GpuReading

        inventory = self.inventory()
        if not inventory.available:
            return None
        containers: tuple[Any, ...] = ()
        try:
            engine = self.connect()
            try:
                containers = tuple(engine.list_managed(with_pids=True))
            finally:
                engine.close()
        except AitherError:
            pass  # no engine: every used byte counts as outside aitherctl (the safe side)
        running = [item for item in containers if item.running and not item.aside]
        actual = actual_use_by_service(containers, inventory)
        managed = {pid for item in containers for pid in item.pids}
        readings = {}
        for gpu in inventory.gpus:
            ours = 0
            use: dict[str, int] = {}
            for item in running:
                if gpu.index not in item.gpus:
                    continue
                real = actual.get(item.service, {}).get(gpu.index)
                ours += real if real is not None else (item.budget_on(gpu.index) or 0)
                if real is not None:
                    use[item.service] = real
            budget = GpuBudget(
                index=gpu.index,
                name=gpu.name,
                total_bytes=gpu.memory_total_bytes,
                reserve_bytes=0,
                services=(),
                others=tuple(p for p in gpu.processes if p.pid not in managed),
                unattributed_bytes=max(0, gpu.memory_used_bytes - ours),
                driver_reserved_bytes=gpu.memory_reserved_bytes,
            )
            readings[gpu.index] = GpuReading(
                gpu.index, gpu.memory_total_bytes, gpu.memory_free_bytes, budget.others_bytes, use
            )
        return readings


def _sleep_mode(service: Service) -> Any:
    from aitherctl.engines.registry import driver_for

    mode = driver_for(service.engine.value).sleep_mode(service)
    if mode is None:
        raise LoadFailed(f"{service.name}: its engine has no sleep mode")
    return mode


class _PinnedCatalog:
    """The profile catalog, except that the profile being served is the one `serve` holds (not
    the file as it is now): a load starts the spec the gateway routes to."""

    def __init__(self, catalog: Any, profile: Profile) -> None:
        self._catalog = catalog
        self._profile = profile

    def load(self, name: str) -> Profile:
        if name == self._profile.name:
            return self._profile
        loaded: Profile = self._catalog.load(name)
        return loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog, name)


class _QuietProgress:
    def note(self, message: str) -> None:
        del message

    def service(self, service: str, status: str, detail: str = "") -> None:
        del service, status, detail
