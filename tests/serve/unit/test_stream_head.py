"""When a streamed answer's head goes to the client (bench/timeline_gateway.py for the times).

With another candidate left to fall back to, the head waits for the first chunk and leaves with
it, in one write: the client does not wake for a head alone and then again for the first token
(checked on the wire with a real aiohttp server and a raw socket). With none left, it goes as
soon as the backend's own head is in, and the client reads it while the model computes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace

from aiohttp import web

from aitherctl.routing.table import build_routing
from aitherctl.serve.app import _Sink
from aitherctl.serve.dispatcher import Dispatcher, GatewayRequest, Outcome, Route
from aitherctl.serve.model import Priority
from aitherctl.serve.scheduler import Lease
from tests.serve.unit.fake_effects import FakeEffects
from tests.serve.unit.scenario import Clock, llama, profile, run, scheduler

EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'


@run
async def test_the_head_goes_out_with_the_first_chunk() -> None:
    began, proceed = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        sink = _Sink(request)
        await sink.start(200, {"x-aither-backend": "chat"})
        began.set()
        await proceed.wait()
        await sink.write(EVENT)
        assert sink.response is not None
        await sink.response.write_eof()
        return sink.response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(
            client,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        await began.wait()
        # (Loopback delivers a write before the writer's send returns: a head sent on its own
        # would be readable here.)
        try:
            early = client.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            early = b""
        assert early == b""
        proceed.set()
        first = await loop.sock_recv(client, 65536)
        head, _, body = first.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nx-aither-backend: chat\r\n" in head + b"\r\n"
        assert b"Content-Type: text/event-stream" in head
        assert body.startswith(f"{len(EVENT):x}\r\n".encode() + EVENT)
    finally:
        proceed.set()
        client.close()
        await runner.cleanup()


class _HeldBody:
    """An upstream answer whose head is in and whose first chunk has not come yet."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {"Content-Type": "text/event-stream"}
        self.first = asyncio.Event()
        self.reading = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        self.reading.set()
        await self.first.wait()
        yield EVENT + b"data: [DONE]\n\n"


class _Recorder:
    def __init__(self) -> None:
        self.heads: list[tuple[int, bool]] = []
        self.data = b""

    @property
    def started(self) -> bool:
        return bool(self.heads)

    async def start(self, status: int, headers: dict[str, str], *, at_once: bool = False) -> None:
        del headers
        self.heads.append((status, at_once))

    async def write(self, data: bytes) -> None:
        self.data += data


async def _relay_held(
    services: list[str],
    route: str = "/v1/chat/completions",
    spares: list[str] | None = None,
) -> tuple[_Recorder, list[tuple[int, bool]], bytes]:
    """Relay `services[0]`'s answer (the others are candidates left to fall back to) to a
    client of `route` (translated from chat completions unless it is chat): the recorder, the
    heads it had and the bytes it had while the first chunk was awaited. `spares`: the URLs
    the dispatcher asked the upstream client to open a spare connection to."""
    prof = profile({name: llama(index + 1, on_demand=False) for index, name in enumerate(services)})
    sched = scheduler(prof, FakeEffects(running=set(services)), Clock())
    table = build_routing(prof)
    upstream = SimpleNamespace(open_spare=(spares if spares is not None else []).append)
    dispatcher = Dispatcher(sched, SimpleNamespace(table=table), upstream, env={})  # type: ignore[arg-type]
    candidates = tuple(table.backends[name] for name in services)
    lease = sched.try_acquire(services[0])
    assert isinstance(lease, Lease)
    request = GatewayRequest(route, {"stream": True, "model": services[0]}, Priority.NORMAL, "t")
    body, sink = _HeldBody(), _Recorder()
    relay = asyncio.create_task(
        dispatcher._relay(
            request,
            Route(candidates, False),
            candidates[0],
            body,  # type: ignore[arg-type]
            sink,
            Outcome(),
            0.0,
            False,
            lease,
            route != "/v1/chat/completions",  # via chat completions
        )
    )
    await body.reading.wait()
    heads, data = list(sink.heads), sink.data
    body.first.set()
    await relay
    return sink, heads, data


async def _head_before_first_chunk(
    services: list[str], spares: list[str] | None = None
) -> list[tuple[int, bool]]:
    """The heads the client was sent while the first chunk of `services[0]`'s answer was
    awaited, then after it."""
    sink, before, _ = await _relay_held(services, spares=spares)
    assert sink.data == EVENT + b"data: [DONE]\n\n"
    return [*before, (-1, False), *sink.heads[len(before) :]]


@run
async def test_with_no_other_candidate_the_head_goes_before_the_first_token() -> None:
    # The client reads the head while the model computes its first token (as through a plain
    # pass-through); nothing could fall back any more.
    assert await _head_before_first_chunk(["chat"]) == [(200, True), (-1, False)]


@run
async def test_with_another_candidate_the_head_waits_for_the_first_token() -> None:
    # Another candidate may still take over before the first token: the head waits for it.
    assert await _head_before_first_chunk(["chat", "spare"]) == [(-1, False), (200, False)]


@run
async def test_after_a_llamacpp_stream_a_spare_connection_to_it_is_opened() -> None:
    # llama.cpp closes its connection after every streamed answer: the next request to it
    # would connect on its first token's way (the effect itself: tests/serve/docker/
    # test_serve_llamacpp.py::test_a_streamed_request_after_another_reuses_a_connection).
    spares: list[str] = []
    await _head_before_first_chunk(["chat"], spares)
    assert len(spares) == 1
    assert spares[0].startswith("http://127.0.0.1:")
    assert spares[0].endswith("/health")


@run
async def test_a_translated_answer_opens_with_its_first_events_before_the_first_token() -> None:
    """A Messages request translated to chat completions, nothing to fall back to: the client
    has the head and `message_start` while the model computes; the first token's way carries
    only the text block's own events."""
    sink, _, before = await _relay_held(["chat"], "/v1/messages")
    assert sink.heads == [(200, True)]
    assert before.startswith(b"event: message_start\n")
    assert before.count(b"event: ") == 1
    after = sink.data[len(before) :]
    assert after.startswith(b"event: content_block_start\n")
    assert b'"text":"Hi"' in after.replace(b" ", b"")
    assert b"event: message_start" not in after  # said once
