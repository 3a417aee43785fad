"""A fake of aitherctl's own effects interface (`aitherctl.serve.effects.Effects`), to drive the
real `Scheduler` through its interleavings step by step (llama-swap's `fakeEffects`).

It also fakes the node effects (`NodeEffects`): `create_node` stays pending until the test
answers it with a `NodeAddress` (`call.succeed(address(...))`); `observe_nodes` answers
`nodes_running` and `spend_today` answers `spent_usd` at once; a destroy that succeeds takes the
node out of `nodes_running`.

It stands in for our interface, not for Docker: each real effect keeps its test against a real
engine (tests/serve/docker/). Every call is recorded and stays pending until the test ends it
(`call.succeed()` / `call.fail(exc)`), except the kinds named in `instant`, which return at once.
A start or a stop that succeeds changes `running`, as a container would.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aitherctl.serve.effects import Cancel, GpuReading, NodeAddress, Spend


@dataclass(eq=False)
class Call:
    kind: str  # start, stop, sleep, wake, release, observe, read_gpus, close
    service: str | None
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    # `observe` answers what ran when it was called (a read that takes time, then returns)
    snapshot: set[str] = field(default_factory=set)

    def succeed(self, value: Any = None) -> None:
        self.future.set_result(value)

    def fail(self, error: BaseException) -> None:
        self.future.set_exception(error)

    @property
    def pending(self) -> bool:
        return not self.future.done()


class FakeEffects:
    def __init__(
        self,
        running: set[str] | None = None,
        *,
        instant: tuple[str, ...] = (
            "observe",
            "read_gpus",
            "close",
            "observe_nodes",
            "spend_today",
        ),
        gpus: dict[int, GpuReading] | None = None,
    ) -> None:
        self.nodes_running: dict[str, NodeAddress] = {}
        self.spent_usd = 0.0
        self.spent_by_node: dict[str, float] = {}
        self.running = set(running or ())
        self.instant = set(instant)
        self.gpus = gpus
        self.calls: list[Call] = []
        self._arrived = asyncio.Event()

    # -- what the test reads -------------------------------------------------------------------

    def kinds(self, *kinds: str) -> list[tuple[str, str | None]]:
        """The calls made so far, as (kind, service), of the given kinds (all when none)."""
        return [(c.kind, c.service) for c in self.calls if not kinds or c.kind in kinds]

    async def next_call(self, kind: str, service: str | None = None) -> Call:
        """The first pending call of `kind` (for `service`), waiting for it to be made."""
        while True:
            for call in self.calls:
                if call.pending and call.kind == kind and service in (None, call.service):
                    return call
            self._arrived.clear()
            await self._arrived.wait()

    # -- the Effects protocol ------------------------------------------------------------------

    async def _call(self, kind: str, service: str | None, *args: Any) -> Any:
        call = Call(
            kind, service, args, asyncio.get_running_loop().create_future(), set(self.running)
        )
        self.calls.append(call)
        self._arrived.set()
        if kind in self.instant:
            call.succeed(self._answer(call))
        value = await call.future
        if kind == "create_node":
            self.nodes_running[service or ""] = value
        elif kind == "destroy_node":
            self.nodes_running.pop(service or "", None)
        elif kind == "start":
            self.running.add(service or "")
        elif kind == "stop":
            self.running.discard(service or "")
        if kind == "observe" and value is None:
            return call.snapshot
        return value

    def _answer(self, call: Call) -> Any:
        if call.kind == "observe":
            return set(self.running)
        if call.kind == "read_gpus":
            return self.gpus
        if call.kind == "observe_nodes":
            return dict(self.nodes_running)
        if call.kind == "spend_today":
            return Spend(self.spent_usd, dict(self.spent_by_node))
        return None

    async def start(self, service: Any, cancel: Cancel) -> None:
        await self._call("start", service.name, service, cancel)

    async def stop(self, service: Any) -> None:
        await self._call("stop", service.name, service)

    async def sleep(self, service: Any, base_url: str) -> None:
        await self._call("sleep", service.name, base_url)

    async def wake(self, service: Any, base_url: str) -> None:
        await self._call("wake", service.name, base_url)

    async def release(self, service: Any, base_url: str) -> None:
        await self._call("release", service.name, base_url)

    async def observe(self) -> set[str]:
        result: set[str] = await self._call("observe", None)
        return result

    async def read_gpus(self) -> dict[int, GpuReading] | None:
        result: dict[int, GpuReading] | None = await self._call("read_gpus", None)
        return result

    def adopt(self, profile: Any) -> None:
        self.adopted = profile

    async def close(self) -> None:
        await self._call("close", None)

    # -- the NodeEffects protocol --------------------------------------------------------------

    async def create_node(self, node: Any, cancel: Cancel) -> NodeAddress:
        result: NodeAddress = await self._call("create_node", node.name, node, cancel)
        return result

    async def destroy_node(self, node: Any, record_id: str) -> None:
        await self._call("destroy_node", node.name, record_id)

    async def observe_nodes(self) -> dict[str, NodeAddress]:
        result: dict[str, NodeAddress] = await self._call("observe_nodes", None)
        return result

    async def spend_today(self) -> Spend:
        result: Spend = await self._call("spend_today", None)
        return result


def address(record_id: str, port: int = 41234, price: float = 0.15) -> NodeAddress:
    """A node's instance as the real effects return it once its engine answers."""
    return NodeAddress(record_id, f"http://127.0.0.1:{port}", f"key-{record_id}", price)
