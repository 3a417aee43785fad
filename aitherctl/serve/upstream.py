"""The gateway's HTTP client to backends (aiohttp): one pooled session for every upstream.

aiohttp's exceptions never leave this module: a request that cannot be sent or read raises
`UpstreamError` with the router's failure kinds (refused, timeout, http_5xx, bad_stream...).
Chosen over httpx's AsyncClient by measurement (bench/bench_http_stack.py): it adds less time to
the first byte of a streamed answer and holds more requests per second on two cores.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from aitherctl.engines.facts import origin
from aitherctl.errors import AitherError
from aitherctl.serve import timeline

KEEPALIVE_S = 4.0
SPARE_TIMEOUT_S = 2.0


class UpstreamError(AitherError):
    def __init__(
        self, kind: str, message: str, status: int | None = None, body: bytes = b""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.body = body


def status_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


class UpstreamResponse:
    """A response whose status says the request was accepted; its body is read as it comes."""

    def __init__(self, response: aiohttp.ClientResponse, read_timeout_s: float) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.read_timeout_s = read_timeout_s

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (each read waits at most `read_timeout_s`)."""
        content = self._response.content
        while True:
            try:
                # The session's `sock_read` timeout bounds each read (no task per read).
                data = await content.readany()
            except (TimeoutError, aiohttp.SocketTimeoutError):
                raise UpstreamError(
                    "timeout", f"no data for {self.read_timeout_s:g}s", self.status
                ) from None
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise UpstreamError("bad_stream", f"connection lost: {exc}", self.status) from None
            if not data:
                return
            yield data

    async def read(self) -> bytes:
        try:
            return await asyncio.wait_for(self._response.read(), self.read_timeout_s)
        except TimeoutError:
            raise UpstreamError("timeout", f"no answer in {self.read_timeout_s:g}s") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError("bad_stream", f"connection lost: {exc}") from None

    def close(self) -> None:
        """Drop the connection (the backend sees the client go away and frees its slot)."""
        self._response.close()

    def release(self) -> None:
        self._response.release()


class Upstream:
    """Two aiohttp sessions, created on the running loop, shared by every request: a pooled
    one, whose idle connections are dropped after KEEPALIVE_S (before servers drop theirs), and
    one that opens a new connection every time, for the one retry of a request that met a
    pooled connection the server had just closed (llama.cpp's cpp-httplib closes its connection
    after every streamed answer although it answers `keep-alive`)."""

    def __init__(self) -> None:
        self._spares: dict[str, asyncio.Task[None]] = {}
        self.fresh = self._session(aiohttp.TCPConnector(limit=0, force_close=True))
        self.session = self._session(
            aiohttp.TCPConnector(
                limit=0,
                ttl_dns_cache=300,
                enable_cleanup_closed=True,
                keepalive_timeout=KEEPALIVE_S,
            )
        )

    @staticmethod
    def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            # Requests ask for `identity` (`open` below); a server that compresses anyway is
            # decoded here, so clients get plain JSON and the gateway can read `usage`.
            auto_decompress=True,
            trust_env=False,
            skip_auto_headers=("User-Agent",),
            trace_configs=timeline.trace_configs(),
        )

    async def open(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        method: str = "POST",
    ) -> UpstreamResponse:
        """Send the request; return once its status line and headers are in. A status >= 400
        raises UpstreamError with the body (at most 64 kB) so the caller can pass it on."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        headers = {**headers, "Accept-Encoding": "identity"}
        spare = self._spares.get(origin(url))
        if spare is not None:
            # A connection to this server is being opened for the next request (this one):
            # it is further along than a new one would be.
            await asyncio.wait((spare,), timeout=SPARE_TIMEOUT_S)
        try:
            try:
                # aiohttp's `sock_connect` and `sock_read` bound the wait for the answer's head
                # (no `wait_for`: it made a task per request).
                response = await self.session.request(
                    method, url, data=body, headers=headers, timeout=timeout
                )
            except aiohttp.ClientConnectorError:
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # A pooled keep-alive connection the server had just closed (cpp-httplib, under
                # llama.cpp, closes one after every streamed answer): no answer began and the
                # body did not get through, so sending it once more, on a new connection, is
                # safe.
                response = await self.fresh.request(
                    method, url, data=body, headers=headers, timeout=timeout
                )
        except (TimeoutError, aiohttp.SocketTimeoutError):
            raise UpstreamError("timeout", f"no answer from {url} in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError("refused", f"cannot connect to {url}: {exc.os_error}") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError("refused", f"{url}: {exc}") from None
        if response.status >= 400:
            try:
                data = await asyncio.wait_for(response.content.read(65536), 5.0)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                data = b""
            response.release()
            raise UpstreamError(
                status_kind(response.status),
                f"HTTP {response.status}: {_error_text(data)}",
                response.status,
                data,
            )
        return UpstreamResponse(response, read_timeout_s)

    async def call(
        self, method: str, url: str, body: Any = None, *, timeout_s: float = 30.0
    ) -> Any:
        """A small control request (sleep, wake, free): its JSON answer, or None."""
        try:
            async with self.session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                data = await response.read()
                if response.status >= 400:
                    raise UpstreamError(
                        status_kind(response.status),
                        f"{method} {url}: HTTP {response.status}: {_error_text(data)}",
                        response.status,
                    )
        except TimeoutError:
            raise UpstreamError("timeout", f"{method} {url}: no answer in {timeout_s:g}s") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError("refused", f"{method} {url}: {exc}") from None
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None

    def open_spare(self, url: str) -> None:
        """Open a keep-alive connection to `url`'s server in the background (a GET of `url`, a
        cheap route that answers without closing), so that the next request to that server
        finds one in the pool instead of connecting (about 0.9 ms to a container's published
        port here). For servers that close the connection after each streamed answer
        (llama.cpp's cpp-httplib): without it, every streamed request pays for a connect. The
        connection is kept as any pooled one, KEEPALIVE_S; at most one opening per server,
        and a request to that server meanwhile waits for it (at most SPARE_TIMEOUT_S)."""
        server = origin(url)
        if server in self._spares or self.session.closed:
            return
        # A new context: the request that asked for it has its own timeline.
        task = asyncio.get_running_loop().create_task(
            self._spare(server, url), context=contextvars.Context()
        )
        self._spares[server] = task

    async def _spare(self, server: str, url: str) -> None:
        try:
            async with self.session.get(
                url, timeout=aiohttp.ClientTimeout(total=SPARE_TIMEOUT_S)
            ) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            pass  # the server is going away: the next request finds out and says so
        finally:
            self._spares.pop(server, None)

    async def close(self) -> None:
        for task in list(self._spares.values()):
            task.cancel()
        await asyncio.gather(*self._spares.values(), return_exceptions=True)
        await self.session.close()
        await self.fresh.close()


def _error_text(data: bytes) -> str:
    """The server's own error message when it sent the OpenAI error shape, else its text."""
    try:
        payload = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace").strip() or "(no body)"
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300]
        return str(error)[:300]
    return str(payload)[:300]
