"""The other Docker hosts in the monitor and `status`: their containers, GPUs and errors.

The hosts are those the last multi-host switch remembered (`aitherctl.switching.remembered_hosts`),
read again at every refresh so a switch made meanwhile shows up. For each host:
- its managed containers, through the same `DockerStackSource` as this machine's (one listing,
  inspects only for what changed, events since the last refresh), over that host's endpoint;
- its GPUs, read where they are: `nvidia-smi` in a short-lived container on that host
  (`aitherctl.gpu.remote`), in the image of one of the GPU services running there, so
  nothing is ever pulled for a reading. The reading is taken in the background at most every
  `gpu_every_s` seconds (a container start over SSH costs about a second); the monitor shows
  the last one meanwhile. With no GPU service running there, nothing is read and the host
  says so;
- the host PIDs of its GPU containers (`docker top`), so NVML-style per-process memory from
  that nvidia-smi maps to services, as on this machine.

Hosts are read in parallel; one that cannot be reached is named with the reason and the
others still show. A host that comes back is reached again on the next refresh (the
stack source retries at most every `retry_s` seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aitherctl.gpu.model import GpuInventory
from aitherctl.monitor.model import LogEntry, StackReading
from aitherctl.profiles.profile import Host

GpuReader = Callable[[Any, str], GpuInventory]  # (DockerEngine, image) → that host's GPUs
_GpuReading = tuple[GpuInventory, dict[str, tuple[int, ...]]]  # GPUs, container id → host PIDs


@dataclass(frozen=True, slots=True)
class RemoteReading:
    """One other host at one refresh."""

    name: str
    endpoint: str
    address: str | None
    stack: StackReading
    gpus: GpuInventory | None = None  # None: not read (no GPU service runs there)
    gpu_age_s: float | None = None  # how old `gpus` is
    pids: dict[str, tuple[int, ...]] = field(default_factory=dict)  # container id → host PIDs


def _read_remote_gpus(engine: Any, image: str) -> GpuInventory:
    from aitherctl.gpu.remote import read_inventory

    return read_inventory(engine.client, image)


class _HostState:
    def __init__(self, host: Host, retry_s: float) -> None:
        from aitherctl.docker.engine import DockerEngine
        from aitherctl.monitor.stack_reader import DockerStackSource

        self.host = host
        self.stack = DockerStackSource(
            lambda: DockerEngine.connect_host(host.name, host.docker, host.address),
            retry_s=retry_s,
        )
        self.gpus: GpuInventory | None = None
        self.pids: dict[str, tuple[int, ...]] = {}
        self.read_at: float | None = None
        self.pending: Future[_GpuReading] | None = None


class RemoteHostsSource:
    """Reads every remembered host; `read()` blocks only on the container listings (and on the
    first GPU reading when `wait_for_gpus`, as the one-shot `status` wants)."""

    def __init__(
        self,
        hosts: Callable[[], Mapping[str, Host]] | None = None,
        *,
        gpu_every_s: float = 10.0,
        wait_for_gpus: bool = False,
        read_gpus: bool = True,
        gpu_reader: GpuReader = _read_remote_gpus,
        retry_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if hosts is None:
            from aitherctl.switching.remembered_hosts import remembered_hosts

            hosts = remembered_hosts
        self._hosts = hosts
        self._gpu_every_s = gpu_every_s
        self._wait = wait_for_gpus
        self._read_gpus = read_gpus
        self._gpu_reader = gpu_reader
        self._retry_s = retry_s
        self._monotonic = monotonic
        self._states: dict[str, _HostState] = {}
        # container listings, and GPU readings (a container start each) apart from them, so a
        # slow reading never holds up the next refresh's listings
        self._listings: ThreadPoolExecutor | None = None
        self._readings: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def engine(self, host: str) -> Any | None:
        """That host's connected `DockerEngine` (for the monitor's actions), or None."""
        state = self._states.get(host)
        return state.stack.engine if state is not None else None

    def read(self) -> tuple[RemoteReading, ...]:
        hosts = dict(self._hosts())
        with self._lock:
            for name in set(self._states) - set(hosts):
                self._forget(name)
            for name, host in hosts.items():
                state = self._states.get(name)
                if state is None or state.host != host:
                    if state is not None:
                        self._forget(name)
                    self._states[name] = _HostState(host, self._retry_s)
            states = [self._states[name] for name in sorted(hosts)]
            if states and self._listings is None:
                self._listings = ThreadPoolExecutor(8, thread_name_prefix="aither-hosts")
                self._readings = ThreadPoolExecutor(4, thread_name_prefix="aither-hosts-gpu")
        if not states:
            return ()
        assert self._listings is not None
        futures = [self._listings.submit(self._read_one, state) for state in states]
        return tuple(future.result() for future in futures)

    def close(self) -> None:
        with self._lock:
            for name in list(self._states):
                self._forget(name)
            for pool in (self._listings, self._readings):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
            self._listings = self._readings = None

    # ---- one host -------------------------------------------------------------------------

    def _read_one(self, state: _HostState) -> RemoteReading:
        host = state.host
        stack = _tagged(state.stack.read(), host.name)
        engine = state.stack.engine
        gpu_containers = [c for c in stack.containers if c.gpus and c.state == "running"]
        images = sorted({c.image for c in gpu_containers if c.image})
        if engine is None or not images or not self._read_gpus:
            state.gpus, state.pids, state.read_at, state.pending = None, {}, None, None
        else:
            self._refresh_gpus(state, engine, images[0], [c.id for c in gpu_containers])
        age = self._monotonic() - state.read_at if state.read_at is not None else None
        return RemoteReading(
            name=host.name,
            endpoint=host.docker,
            address=host.address,
            stack=stack,
            gpus=state.gpus,
            gpu_age_s=age,
            pids=dict(state.pids),
        )

    def _refresh_gpus(
        self, state: _HostState, engine: Any, image: str, container_ids: list[str]
    ) -> None:
        """Takes a finished background reading; starts a new one when the last is stale (or,
        with `wait_for_gpus`, takes it here and now)."""
        if state.pending is not None and state.pending.done():
            self._store(state, state.pending.result)
        stale = state.read_at is None or self._monotonic() - state.read_at >= self._gpu_every_s
        if state.pending is not None or not stale:
            return
        if self._wait:
            self._store(state, lambda: self._take_gpu_reading(engine, image, container_ids))
            return
        assert self._readings is not None
        state.pending = self._readings.submit(self._take_gpu_reading, engine, image, container_ids)

    def _store(self, state: _HostState, take: Callable[[], _GpuReading]) -> None:
        try:
            state.gpus, state.pids = take()
        except Exception as exc:  # the reader never raises; a bug must not stop the view
            state.gpus, state.pids = GpuInventory(error=f"GPU reading failed: {exc}"), {}
        state.pending = None
        state.read_at = self._monotonic()

    def _take_gpu_reading(self, engine: Any, image: str, container_ids: list[str]) -> _GpuReading:
        inventory = self._gpu_reader(engine, image)
        pids: dict[str, tuple[int, ...]] = {}
        if inventory.available:
            for container_id in container_ids:
                try:
                    pids[container_id] = tuple(engine.pids(container_id))
                except Exception:  # gone since the listing: its memory shows as unattributed
                    continue
        return inventory, pids

    def _forget(self, name: str) -> None:
        state = self._states.pop(name, None)
        if state is not None and state.stack.engine is not None:
            state.stack.engine.close()


def _tagged(stack: StackReading, host: str) -> StackReading:
    """The host's events say which host they happened on."""
    if not stack.events:
        return stack
    from dataclasses import replace

    events = tuple(
        LogEntry(entry.at, entry.kind, f"[{host}] {entry.message}") for entry in stack.events
    )
    return replace(stack, events=events)
