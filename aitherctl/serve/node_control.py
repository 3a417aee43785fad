"""The scheduler's real node effects (`aitherctl.serve.effects.NodeEffects`): the provider's
calls, this machine's node records and the usage ledger, in their own worker threads, through
the same operations as `aitherctl nodes` (aitherctl.nodes.operations): the record is written
before the create call, the daily cap is checked against the ledger, every destroy accrues the
node's last seconds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from aitherctl.errors import AitherError
from aitherctl.serve.errors import LoadFailed

if TYPE_CHECKING:
    from aitherctl.nodes.model import NodeRecord
    from aitherctl.nodes.provider import Provider
    from aitherctl.nodes.records import NodeRecords
    from aitherctl.profiles.profile import Node, Profile
    from aitherctl.routing.ledger import Ledger
    from aitherctl.serve.effects import Cancel, NodeAddress, Spend

T = TypeVar("T")

# How long a new instance may take to run and its engine to answer (the image pulled, the
# model downloaded and loaded on the rented machine): past it, the instance is destroyed.
NODE_BOOT_TIMEOUT_S = 1800.0
POLL_S = 1.0  # the provider's state is asked this often while booting (its API rate-limits)
# The node's own engine is asked this often once the provider runs it: the model's load is what
# the request waits for, and a tiny GET to our own node costs nothing (1 s made a cold node's first
# token wait half a second more on average).
ENGINE_POLL_S = 0.25
# Each node's cost goes into the ledger in rows of at least this many seconds (and at its
# destroy); the spend the scheduler compares with the cap counts the seconds between too.
ACCRUE_EVERY_S = 10.0
NODE_THREADS = 4


class NodeControl:
    """Rented nodes for `serve`. `provider_for` gives the adapter for a node's `provider`
    (tests: the Vast contract double); `records` and `ledger` default to this machine's."""

    def __init__(
        self,
        profile: Profile,
        *,
        records: NodeRecords | None = None,
        ledger: Ledger | None = None,
        provider_for: Callable[[str], Provider] | None = None,
        machine: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from aitherctl.nodes.records import NodeRecords, machine_name

        self.profile = profile
        self.records = records or NodeRecords()
        self._ledger = ledger
        self._provider_for = provider_for
        self._providers: dict[str, Provider] = {}
        self.machine = machine or machine_name()
        self.clock = clock
        self._lock = threading.Lock()  # the records and the ledger, from several threads
        self._threads = ThreadPoolExecutor(NODE_THREADS, thread_name_prefix="aither-nodes")

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from aitherctl.routing.ledger import Ledger

            self._ledger = Ledger()
        return self._ledger

    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            if self._provider_for is not None:
                self._providers[name] = self._provider_for(name)
            else:
                from aitherctl.nodes.operations import provider_for

                self._providers[name] = provider_for(name)
        return self._providers[name]

    async def _in_threads(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, work)

    # -- NodeEffects ---------------------------------------------------------------------------

    def adopt(self, profile: Profile) -> None:
        self.profile = profile

    async def create_node(self, node: Node, cancel: Cancel) -> NodeAddress:
        return await self._in_threads(lambda: self.create_blocking(node, cancel))

    async def destroy_node(self, node: Node, record_id: str) -> None:
        await self._in_threads(lambda: self.destroy_blocking(node, record_id))

    async def observe_nodes(self) -> dict[str, NodeAddress]:
        return await self._in_threads(self.observe_blocking)

    async def spend_today(self) -> Spend:
        return await self._in_threads(self.spend_blocking)

    async def close(self) -> None:
        # A create still booting sees its cancel (set by the scheduler) and destroys what it
        # made: its thread finishes that before the process exits.
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- the blocking work ---------------------------------------------------------------------

    def known_blocking(self) -> dict[str, NodeAddress]:
        """The profile's nodes this machine's records last saw running (no provider call):
        what `serve` routes to when it starts; the first refresh asks the provider."""
        from aitherctl.nodes.model import NodeState

        found: dict[str, NodeAddress] = {}
        for record in self.records.all():  # oldest first: the newest wins
            if (
                record.profile == self.profile.name
                and record.node in self.profile.nodes
                and record.state is NodeState.RUNNING
                and record.url
            ):
                found[record.node] = _address(record)
        return found

    def create_blocking(self, node: Node, cancel: Cancel) -> NodeAddress:
        from aitherctl.nodes.operations import create_node

        provider = self.provider(node.provider)
        spent = self.spend_blocking().today_usd
        with self._lock:
            record = create_node(
                provider,
                self.records,
                profile=self.profile.name,
                node=node,
                machine=self.machine,
                cloud=self.profile.cloud,
                spent_today_usd=spent,
                clock=self.clock,
            )
        deadline = time.monotonic() + NODE_BOOT_TIMEOUT_S  # for both waits together
        try:
            record = self._wait_published(provider, record, cancel, deadline)
            self._wait_engine(node, record, cancel, deadline)
        except BaseException:
            # Not kept: a node that did not come up is not paid for any longer.
            self._destroy_record(provider, record)
            raise
        return _address(record)

    def _wait_published(
        self, provider: Provider, record: NodeRecord, cancel: Cancel, deadline: float
    ) -> NodeRecord:
        """Until the provider runs the instance and publishes its engine's port."""
        from aitherctl.nodes.model import NodeState
        from aitherctl.nodes.operations import refresh
        from aitherctl.nodes.provider import ProviderError, ProviderFailure

        while True:
            try:
                with self._lock:
                    record = refresh(provider, self.records, record, clock=self.clock)
            except ProviderError as exc:
                if exc.kind not in (ProviderFailure.UNREACHABLE, ProviderFailure.RATE_LIMITED):
                    raise
                _pause(cancel, deadline, record.node)  # a passing failure: ask again
                continue
            if record.state is NodeState.RUNNING and record.url:
                return record
            if record.state is NodeState.GONE:
                raise LoadFailed(f"node {record.node}: the provider no longer has its instance")
            _pause(cancel, deadline, record.node)

    def _wait_engine(self, node: Node, record: NodeRecord, cancel: Cancel, deadline: float) -> None:
        """Until the engine answers its health path (the model loaded)."""
        from aitherctl.nodes.operations import engine_answers

        assert record.url is not None
        while not engine_answers(node, record.url, record.api_key):
            _pause(cancel, deadline, node.name, ENGINE_POLL_S)

    def destroy_blocking(self, node: Node, record_id: str) -> None:
        provider = self.provider(node.provider)
        record = next((r for r in self.records.all() if r.id == record_id), None)
        if record is not None:
            self._destroy_record(provider, record)

    def _destroy_record(self, provider: Provider, record: NodeRecord) -> None:
        from aitherctl.nodes.operations import NodeView, accrue, destroy

        with self._lock:
            destroy(provider, self.records, NodeView(record, None, self.clock()), clock=self.clock)
            accrue(self.records, self.ledger, clock=self.clock)

    def observe_blocking(self) -> dict[str, NodeAddress]:
        """The records reconciled with each provider's list (an instance that died or was
        destroyed elsewhere becomes `gone`); the provider unreachable: as the records say."""
        from aitherctl.nodes.operations import survey

        providers = {node.provider for node in self.profile.nodes.values()}
        for name in sorted(providers):
            try:
                provider = self.provider(name)
            except AitherError:
                continue
            with self._lock:
                survey(provider, self.records, machine=self.machine, clock=self.clock)
        return self.known_blocking()

    def spend_blocking(self) -> Spend:
        """Today's spend: the ledger (API requests, nodes' accrued cost) plus each node's
        seconds not accrued yet (rows are written once a node's span reaches ACCRUE_EVERY_S);
        and each of the profile's nodes' cost today, from the records."""
        from aitherctl.nodes.operations import accrue, spent_today_usd
        from aitherctl.routing.ledger import start_of_local_day
        from aitherctl.serve.effects import Spend

        now = self.clock()
        day = start_of_local_day(now)
        with self._lock:
            records = self.records.all()
            spans = [(r, r.unaccrued(now)) for r in records]
            if any(
                span is not None and (span[1] - span[0] >= ACCRUE_EVERY_S or r.ended_at)
                for r, span in spans
            ):
                accrue(self.records, self.ledger, clock=lambda: now)
                spans = [(r, r.unaccrued(now)) for r in self.records.all()]
            pending = sum(
                (r.price_per_hour_usd or 0.0) * (span[1] - span[0]) / 3600.0
                for r, span in spans
                if span is not None
            )
            by_node: dict[str, float] = {}
            for record, _ in spans:
                if record.profile == self.profile.name:
                    by_node[record.node] = by_node.get(record.node, 0.0) + record.cost_since(
                        day, now
                    )
            total = spent_today_usd(self.ledger, clock=lambda: now) + pending
            return Spend(total, by_node)


def _pause(cancel: Cancel, deadline: float, node: str, seconds: float = POLL_S) -> None:
    if time.monotonic() >= deadline:
        raise LoadFailed(f"node {node}: not answering after {NODE_BOOT_TIMEOUT_S:.0f}s")
    if isinstance(cancel, threading.Event):
        cancel.wait(seconds)  # woken at once when the load is abandoned
    else:
        time.sleep(seconds)
    if cancel.is_set():
        raise LoadFailed(f"node {node}: its creation was abandoned")


def _address(record: NodeRecord) -> NodeAddress:
    from aitherctl.serve.effects import NodeAddress

    assert record.url is not None
    return NodeAddress(record.id, record.url, record.api_key, record.price_per_hour_usd)
