"""A streamed answer is complete once the client has its `data: [DONE]` event, even when the
client then leaves before the upstream closes its end (the openai client does exactly that):
such a request was recorded as `cancelled`. Driven through the dispatcher's relay with our own
`Sink` and a response whose body never ends, so the order of events is exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from aitherctl.routing.table import build_routing
from aitherctl.serve.dispatcher import Dispatcher, GatewayRequest, Outcome, Route
from aitherctl.serve.model import Priority
from aitherctl.serve.scheduler import Lease
from tests.serve.unit.fake_effects import FakeEffects
from tests.serve.unit.scenario import Clock, llama, profile, run, scheduler, settle

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
DONE = b"data: [DONE]\n\n"


class Body:
    """An upstream answer: the chunks given, then a connection that stays open."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.headers: dict[str, str] = {}
        self.chunks_given = chunks
        self.held = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks_given:
            yield chunk
        self.held.set()
        await asyncio.Event().wait()  # the upstream has not closed yet


class ClientSink:
    def __init__(self) -> None:
        self.started = False
        self.data = b""

    async def start(self, status: int, headers: dict[str, str], *, at_once: bool = False) -> None:
        del status, headers, at_once
        self.started = True

    async def write(self, data: bytes) -> None:
        self.data += data


async def _relay(chunks: list[bytes]) -> tuple[Outcome, ClientSink, asyncio.Task[object]]:
    prof = profile({"chat": llama(1, on_demand=False)})
    sched = scheduler(prof, FakeEffects(running={"chat"}), Clock())
    table = build_routing(prof)
    # The upstream client only hears that a llama.cpp stream ended (a spare connection).
    upstream = SimpleNamespace(open_spare=lambda _url: None)
    dispatcher = Dispatcher(sched, SimpleNamespace(table=table), upstream, env={})  # type: ignore[arg-type]
    candidate = table.backends["chat"]
    lease = sched.try_acquire("chat")
    assert isinstance(lease, Lease)
    request = GatewayRequest("/v1/chat/completions", {"stream": True}, Priority.NORMAL, "t")
    result, sink, body = Outcome(), ClientSink(), Body(chunks)
    relay = asyncio.create_task(
        dispatcher._relay(
            request,
            Route((candidate,), False),
            candidate,
            body,  # type: ignore[arg-type]
            sink,
            result,
            0.0,
            False,
            lease,
        )
    )
    held = asyncio.create_task(body.held.wait())
    await asyncio.wait({relay, held}, return_when=asyncio.FIRST_COMPLETED)
    held.cancel()
    await settle()
    return result, sink, relay


@run
async def test_a_client_leaving_at_done_leaves_a_complete_answer() -> None:
    result, sink, relay = await _relay([CHUNK % b"Hello", CHUNK % b" there", DONE])
    if not relay.done():
        relay.cancel()  # the client closed its connection: aiohttp cancels the handler
        with pytest.raises(asyncio.CancelledError):
            await relay
    assert sink.data.endswith(DONE)
    assert result.outcome == "ok"


@run
async def test_done_inside_the_model_text_does_not_end_the_answer() -> None:
    result, sink, relay = await _relay([CHUNK % b"[DONE]\\n\\ndata: [DONE]", CHUNK % b"more"])
    assert not relay.done()  # still reading the answer
    relay.cancel()
    with pytest.raises(asyncio.CancelledError):
        await relay
    assert result.outcome == "failed"  # the client left in the middle: not complete
    assert sink.data.endswith(CHUNK % b"more")
