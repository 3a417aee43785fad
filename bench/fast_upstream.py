"""A minimal, fast OpenAI-compatible upstream for gateway benchmarks: no model, fixed tokens.

    python bench/fast_upstream.py --port 8201 [--tokens 16] [--interval-ms 0]

It exists so a benchmark measures the proxy in front of it, not the model behind it. Built on
`asyncio.Protocol` with a hand-written HTTP/1.1 reader (keep-alive, `Content-Length` bodies, no
chunked request bodies) and uvloop when it is importable: no framework between the socket and the
bytes, so on the benchmark machine it streams about twice as many requests per second as the
fastest proxy in front of it (~4,500/s against ~2,200/s; both scripts report its direct rate next
to the proxies').

What it answers, in the shapes of OpenAI's API reference (chat completion object, chat completion
chunk object, completions, embeddings, models list) and llama.cpp's server:
- `GET /health` → `{"status": "ok"}` (as llama.cpp's), `GET /v1/models` → one model, `--model`;
- `POST /v1/chat/completions` and `/v1/completions`: `max_tokens` tokens (else `--tokens`), each
  the word "tok"; with `"stream": true` one SSE event per token in a chunked response (each event
  its own write, so a proxy sees them as separate reads unless the kernel merges them), then a
  finish chunk (with `usage` when `stream_options.include_usage`), then `data: [DONE]`;
- `POST /v1/embeddings` → one 8-dimension vector per input.
`--interval-ms` spaces the token events (to hold streams open, e.g. for a memory reading under many
concurrent clients); 0 writes them back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
MAX_HEADER_BYTES = 64 * 1024


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'OK')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
STREAM_END = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Upstream:
    """The fixed answers, built once per (kind, model, tokens) and reused."""

    def __init__(self, model: str, tokens: int, interval_s: float) -> None:
        self.model = model
        self.tokens = tokens
        self.interval_s = interval_s
        self._stream_cache: dict[tuple[str, str, int, bool], list[bytes]] = {}
        self._plain_cache: dict[tuple[str, str, int], bytes] = {}
        self.health = _response(200, b'{"status":"ok"}')
        models = {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "bench"}],
        }
        self.models = _response(200, json.dumps(models).encode())

    def stream_events(self, kind: str, model: str, n: int, usage: bool) -> list[bytes]:
        key = (kind, model, n, usage)
        events = self._stream_cache.get(key)
        if events is None:
            events = self._stream_cache[key] = self._build_stream(kind, model, n, usage)
        return events

    def _build_stream(self, kind: str, model: str, n: int, usage: bool) -> list[bytes]:
        events: list[bytes] = []
        base: dict[str, Any] = {"id": "cmpl-bench", "created": 0, "model": model}
        for i in range(n + 1):
            last = i == n
            if kind == "chat":
                delta: dict[str, Any] = {"role": "assistant"} if i == 0 else {}
                if not last:
                    delta["content"] = "tok" if i else " tok"
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": "length" if last else None,
                }
                obj = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            else:
                obj = {
                    **base,
                    "object": "text_completion",
                    "choices": [
                        {
                            "index": 0,
                            "text": "" if last else " tok",
                            "finish_reason": "length" if last else None,
                        }
                    ],
                }
            if last and usage:
                obj["usage"] = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8}
            data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
            events.append(_chunk(data))
        return events

    def plain(self, kind: str, model: str, n: int) -> bytes:
        key = (kind, model, n)
        cached = self._plain_cache.get(key)
        if cached is None:
            text = " tok" * n
            usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8}
            if kind == "chat":
                obj: dict[str, Any] = {
                    "id": "cmpl-bench",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": usage,
                }
            else:
                obj = {
                    "id": "cmpl-bench",
                    "object": "text_completion",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                    "usage": usage,
                }
            cached = self._plain_cache[key] = _response(200, json.dumps(obj).encode())
        return cached


class Connection(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a paced stream is being written; later requests wait in the buffer
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, path, *_ = head[0].split(" ")
            length = 0
            self.close_after = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    self.close_after = True
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self._answer(method, path.split("?", 1)[0], body)
            if self.close_after and not self.busy and self.transport is not None:
                self.transport.close()

    def _answer(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        up = self.upstream
        if method == "GET":
            if path in {"/health", "/healthz", "/v1/health"}:
                self.transport.write(up.health)
            elif path == "/v1/models":
                self.transport.write(up.models)
            else:
                self.transport.write(_response(404, b'{"error":"not found"}'))
            return
        if method != "POST":
            self.transport.write(_response(405, b'{"error":"method not allowed"}'))
            return
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            self.transport.write(_response(400, b'{"error":"body is not JSON"}'))
            return
        model = str(payload.get("model") or up.model)
        if path.endswith("/embeddings"):
            inputs = payload.get("input", "")
            count = len(inputs) if isinstance(inputs, list) else 1
            obj = {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.125] * 8}
                    for i in range(count)
                ],
                "usage": {"prompt_tokens": 8, "total_tokens": 8},
            }
            self.transport.write(_response(200, json.dumps(obj).encode()))
            return
        if path.endswith("/chat/completions"):
            kind = "chat"
        elif path.endswith("/completions"):
            kind = "text"
        else:
            self.transport.write(_response(404, b'{"error":"not found"}'))
            return
        n = payload.get("max_tokens") or payload.get("max_completion_tokens") or up.tokens
        n = max(1, min(int(n), 4096))
        if not payload.get("stream"):
            self.transport.write(up.plain(kind, model, n))
            return
        options = payload.get("stream_options") or {}
        events = up.stream_events(kind, model, n, bool(options.get("include_usage")))
        if up.interval_s <= 0:
            self.transport.write(STREAM_HEAD)
            for event in events:
                self.transport.write(event)
            self.transport.write(STREAM_END)
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self._paced(events))

    async def _paced(self, events: list[bytes]) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(STREAM_HEAD)
        for event in events:
            await asyncio.sleep(self.upstream.interval_s)
            if transport.is_closing():
                return
            transport.write(event)
        transport.write(STREAM_END)
        self.busy = False
        if self.close_after:
            transport.close()
        elif self.buffer:
            self._process()


async def serve(host: str, port: int, upstream: Upstream) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(upstream), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fast")
    parser.add_argument("--tokens", type=int, default=16, help="tokens when max_tokens is unset")
    parser.add_argument("--interval-ms", type=float, default=0.0)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    upstream = Upstream(args.model, args.tokens, args.interval_ms / 1000)
    runner: Any = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(serve(args.host, args.port, upstream))


if __name__ == "__main__":
    main()
