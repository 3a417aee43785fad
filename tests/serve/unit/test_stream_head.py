"""A streamed answer's head leaves with its first chunk, in one write: the client does not wake
for a head alone and then again for the first token (about 0.3 ms of the first-token overhead,
bench/timeline_gateway.py). Checked on the wire with a real aiohttp server and a raw socket:
after the gateway began the answer, nothing has reached the client until the first chunk."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from aitherctl.serve.app import _Sink
from tests.serve.unit.scenario import run

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
