"""An endpoint's recent failure that `aitherctl run` remembered (a file both share) is honoured
by serve's routing, but requests no longer read that file on the event loop, on their way to
the first token (about 0.09 ms each, bench/timeline_gateway.py): while requests come, a
thread reads it every second and requests use the copy; the first request, and one after a
quiet spell, reads it itself."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from aitherctl.profiles.loader import load_profile_text
from aitherctl.routing.table import Candidate, build_routing
from aitherctl.serve import dispatcher as dispatcher_module
from aitherctl.serve.dispatcher import CONTEXT_QUIET_S, Dispatcher
from tests.serve.unit.fake_effects import FakeEffects
from tests.serve.unit.scenario import Clock, run, scheduler


class Memory:
    """The failure memory's reads: what `recent` answers, and on which thread it was asked."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.failures: dict[str, str] = {}
        self.threads: list[int] = []
        self.read = asyncio.Event()

    def recent(self, candidates: list[Candidate], ttl_s: float) -> dict[str, str]:
        del ttl_s
        self.threads.append(threading.get_ident())
        self.loop.call_soon_threadsafe(self.read.set)
        return {c.name: why for c in candidates if (why := self.failures.get(c.name))}


def _dispatcher(memory: Memory, clock: Clock) -> Dispatcher:
    profile: dict[str, Any] = {
        "name": "p",
        "services": {},
        "endpoints": {
            "cloud": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "engine": "openai"}
        },
    }
    prof = load_profile_text(yaml.safe_dump(profile), "p.yaml")
    table = build_routing(prof)
    router = SimpleNamespace(table=table, memory=memory)
    return Dispatcher(
        scheduler(prof, FakeEffects(running=set()), clock),
        router,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        env={},
        clock=clock,
    )


async def _next_read(memory: Memory) -> None:
    memory.read.clear()
    await memory.read.wait()


@run
async def test_a_remembered_failure_is_honoured_without_a_read_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatcher_module, "CONTEXT_FRESH_S", 0.0)  # re-read at once
    loop_thread = threading.get_ident()
    clock = Clock()
    memory = Memory(asyncio.get_running_loop())
    dispatcher = _dispatcher(memory, clock)

    assert dispatcher._context(False).remembered_failures == {}  # the first request reads
    assert memory.threads == [loop_thread]

    memory.failures["cloud"] = "connection refused (2s ago)"  # `run` remembers a failure
    for _ in range(3):  # the last one began after a read that began after the failure was
        await _next_read(memory)  # written had been taken in
    context = dispatcher._context(False)
    assert context.remembered_failures == {"cloud": "connection refused (2s ago)"}
    assert memory.threads[0] == loop_thread
    assert loop_thread not in memory.threads[1:]

    # No request for a while: the re-reading stops, and the next request reads the file itself.
    clock.advance(CONTEXT_QUIET_S + 1)
    while dispatcher._rereading is not None:
        await asyncio.sleep(0)
    memory.failures.clear()
    reads = len(memory.threads)
    assert dispatcher._context(False).remembered_failures == {}
    assert memory.threads[reads:][:1] == [loop_thread]
    await dispatcher.flush()
