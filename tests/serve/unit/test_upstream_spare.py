"""The gateway's spare connection (serve/upstream.py `open_spare`) on real sockets: a real aiohttp
server on loopback stands for the backend (the effect against llama.cpp itself:
tests/serve/docker/test_serve_llamacpp.py::test_a_streamed_request_after_another_reuses_a_connection).
What is checked here is what can go wrong around it: two callers at once, a server that is gone,
and serve shutting down while a spare is still opening."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from aitherctl.serve.upstream import Upstream, UpstreamError
from tests.serve.unit.scenario import run


class _Backend:
    """A server whose health route counts its calls and answers once `release` is set."""

    def __init__(self) -> None:
        self.health_calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _health(self, request: web.Request) -> web.Response:
        del request
        self.health_calls += 1
        await self.release.wait()
        return web.json_response({"status": "ok"})

    async def _chat(self, request: web.Request) -> web.Response:
        del request
        return web.json_response({"choices": []})

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@run
async def test_two_streams_ending_together_open_one_spare_and_the_next_request_uses_it() -> None:
    backend = _Backend()
    await backend.start()
    upstream = Upstream()
    try:
        backend.release.clear()  # the spare is still opening when the next request comes
        upstream.open_spare(backend.url + "/health")
        upstream.open_spare(backend.url + "/health")
        chat = backend.url + "/v1/chat/completions"
        request = asyncio.create_task(
            upstream.open(chat, b"{}", {}, connect_timeout_s=5, read_timeout_s=5)
        )
        while backend.health_calls == 0:
            await asyncio.sleep(0.01)
        assert not request.done()  # it waits for the spare instead of connecting
        backend.release.set()
        response = await request
        assert response.status == 200
        response.release()
        assert backend.health_calls == 1
    finally:
        await upstream.close()
        await backend.stop()


@run
async def test_a_spare_to_a_server_that_is_gone_leaves_the_next_request_its_own_error() -> None:
    url = f"http://127.0.0.1:{_unused_port()}"
    upstream = Upstream()
    try:
        upstream.open_spare(url + "/health")
        with pytest.raises(UpstreamError) as caught:
            await upstream.open(
                url + "/v1/chat/completions", b"{}", {}, connect_timeout_s=2, read_timeout_s=2
            )
        assert caught.value.kind == "refused"
        upstream.open_spare(url + "/health")  # and a later stream may ask again
    finally:
        await upstream.close()


@run
async def test_shutting_down_while_a_spare_opens_ends_it() -> None:
    backend = _Backend()
    await backend.start()
    backend.release.clear()  # the backend never answers the spare's request
    upstream = Upstream()
    try:
        upstream.open_spare(backend.url + "/health")
        while backend.health_calls == 0:
            await asyncio.sleep(0.01)
        await upstream.close()  # within the test's 5 s bound: the spare is cancelled
        assert upstream.session.closed
    finally:
        backend.release.set()
        await backend.stop()
