"""A small real HTTP server speaking OpenAI chat completions (SSE), for routing tests.

Contract double for the two backends that cannot run here:
- a cloud OpenAI-compatible endpoint, after the OpenAI API reference "Create chat completion"
  (https://platform.openai.com/docs/api-reference/chat/create): `Authorization: Bearer KEY`
  required (401 `{"error": {"message", "type", "code"}}` without it), `stream: true` answers
  `text/event-stream` with `chat.completion.chunk` objects whose `choices[0].delta.content`
  carries text, `finish_reason: "stop"` on the last choice chunk (`"length"` when the output
  limit cut the answer), then with
  `stream_options.include_usage` one chunk with `choices: []` and `usage`, then `data: [DONE]`;
- Ollama's OpenAI-compatible API, after ollama/ollama docs/openai.md ("OpenAI compatibility"):
  `/v1/chat/completions` with the same chunk shape (`system_fingerprint: "fp_ollama"`), no key
  needed, `GET /api/version` -> `{"version": ...}` as its liveness answer (docs/api.md).

OpenAI's parameter rules for its reasoning families (gpt-5*, o1*, o3*, o4*), as the API answers
them: `max_tokens` is refused with 400 `{"error": {"message": "Unsupported parameter: 'max_tokens'
is not supported with this model. Use 'max_completion_tokens' instead.", "type":
"invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}` and a
temperature other than 1 with 400 `"Unsupported value: 'temperature' does not support 0.7 with
this model. Only the default (1) value is supported."` (`"code": "unsupported_value"`). Sources: the
OpenAI API reference, Create chat completion (`max_tokens` "deprecated in favor of
`max_completion_tokens`, and is not compatible with o-series models"), and the error bodies quoted
in teilomillet/gollm#33, griptape-ai/ComfyUI-Griptape#312, diffbot/code-gpt-docs#445 and
tmc/langchaingo#1355. Other models accept either length field.

`POST /v1/audio/transcriptions` (OpenAI's "Create transcription": multipart form, `model` and
`file`) answers `{"text": ...}` with the double's words and records the fields it received.

It also plays the failures the router must survive, chosen per request by `mode`: `http500`,
`http429`, `broken_after` (two chunks, then the connection drops), `garbage` (a non-JSON chunk
first), `json` (200 but not an event stream), `silent` (accepts and never answers), `no_done`,
`burst` (the whole answer in one write, as a buffering proxy delivers it), `tool_call` (the
model calls the request's first tool with `TOOL_ARGUMENTS`, streamed or whole as the request
asks, in the reference's shape: `message.tool_calls[]` / `delta.tool_calls[]` with `index`, `id`,
`type: "function"`, `function.name` in the first delta and `function.arguments` in pieces, then
`finish_reason: "tool_calls"`), `complete` (a whole
`chat.completion`, gzip-compressed with `compress` when the request accepts gzip, as the OpenAI
API does: `Content-Encoding: gzip`). `delay_s` holds every
answer that long before its first byte (a server busy generating). llama.cpp-style `/health` and
`/metrics` (`llamacpp:requests_deferred`) are served too.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOOL_ARGUMENTS = '{"city": "Paris"}'
_REASONING_MODEL = re.compile(r"^(gpt-5|o[134])([.\-].*)?$")


def _openai_parameter_error(body: dict[str, Any]) -> dict[str, Any] | None:
    """The 400 error OpenAI answers for a body its reasoning models refuse, or None."""
    model = str(body.get("model") or "")
    if not _REASONING_MODEL.match(model):
        return None
    if "max_tokens" in body:
        return {
            "error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
        }
    temperature = body.get("temperature", 1)
    if temperature != 1:
        return {
            "error": {
                "message": f"Unsupported value: 'temperature' does not support {temperature} with "
                "this model. Only the default (1) value is supported.",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "unsupported_value",
            }
        }
    return None


@dataclass
class DoubleState:
    mode: str = "ok"
    flavour: str = "openai"  # openai | ollama
    api_key: str | None = None  # required Bearer key (cloud double)
    words: tuple[str, ...] = ("Hello", " from", " the", " double", ".")
    deferred: int = 0  # llamacpp:requests_deferred
    health_status: int = 200
    include_usage_honoured: bool = True
    delay_s: float = 0.0  # wait this long before answering
    # mode "complete": a whole (not streamed) chat.completion, gzip-compressed when this is set
    # and the request accepts gzip (as OpenAI's API does for a client that asks).
    compress: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _handler(state: DoubleState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(state.health_status, b'{"status": "ok"}')
            elif self.path == "/api/version" and state.flavour == "ollama":
                self._send(200, b'{"version": "0.6.2"}')
            elif self.path == "/metrics":
                text = (
                    "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
                    "# TYPE llamacpp:requests_deferred gauge\n"
                    f"llamacpp:requests_deferred {state.deferred}\n"
                )
                self._send(200, text.encode(), "text/plain; version=0.0.4")
            elif self.path == "/v1/models":
                self._send(200, b'{"object": "list", "data": [{"id": "double"}]}')
            else:
                self._send(404, b'{"error": "not found"}')

        def _complete(self, body: dict[str, Any]) -> None:
            text = "".join(state.words)
            answer = json.dumps(
                {
                    "id": "chatcmpl-123",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 9,
                        "completion_tokens": len(state.words),
                        "total_tokens": 9 + len(state.words),
                    },
                }
            ).encode()
            accepted = self.headers.get("Accept-Encoding", "")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if state.compress and "gzip" in accepted:
                answer = gzip.compress(answer)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _tool_call(self, body: dict[str, Any]) -> None:
            name = body["tools"][0]["function"]["name"]
            usage = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}
            base = {"id": "chatcmpl-7", "created": int(time.time()), "model": body.get("model")}
            if not body.get("stream"):
                call = {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": name, "arguments": TOOL_ARGUMENTS},
                }
                answer = {
                    **base,
                    "object": "chat.completion",
                    "usage": usage,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "tool_calls",
                            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                        }
                    ],
                }
                self._send(200, json.dumps(answer).encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            base["object"] = "chat.completion.chunk"
            first = {
                "index": 0,
                "id": "call_7",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            self._chunk(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": None,
                            "delta": {"role": "assistant", "content": None, "tool_calls": [first]},
                        }
                    ],
                }
            )
            for piece in (TOOL_ARGUMENTS[:9], TOOL_ARGUMENTS[9:]):
                self._chunk(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": None,
                                "delta": {
                                    "tool_calls": [{"index": 0, "function": {"arguments": piece}}]
                                },
                            }
                        ],
                    }
                )
            self._chunk(
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
            )
            if (body.get("stream_options") or {}).get("include_usage"):
                self._chunk({**base, "choices": [], "usage": usage})
            self._chunk("[DONE]")

        def _chunk(self, payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        def _transcribe(self, raw: bytes) -> None:
            """OpenAI's "Create transcription": a multipart form with `model` and the audio as
            `file`; answers `{"text": ...}` (JSON, the default `response_format`)."""
            message = BytesParser(policy=default).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
            )
            fields: dict[str, Any] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                if part.get_filename():
                    fields[name] = {
                        "filename": part.get_filename(),
                        "bytes": len(payload),
                        "content_type": part.get_content_type(),
                    }
                elif name in fields:  # a repeated field: all its values
                    previous = fields[name]
                    fields[name] = [
                        *(previous if isinstance(previous, list) else [previous]),
                        payload.decode(),
                    ]
                else:
                    fields[name] = payload.decode()
            state.requests.append(fields)
            if "file" not in fields:
                self._send(400, b'{"error": {"message": "file is required"}}')
                return
            self._send(200, json.dumps({"text": " ".join(state.words).strip()}).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path == "/v1/audio/transcriptions":
                self._transcribe(raw)
                return
            body = json.loads(raw or b"{}")
            state.requests.append(body)
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": "not found"}')
                return
            if state.api_key is not None and (
                self.headers.get("Authorization") != f"Bearer {state.api_key}"
            ):
                error = {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                }
                self._send(401, json.dumps(error).encode())
                return
            if state.flavour == "openai":
                refusal = _openai_parameter_error(body)
                if refusal is not None:
                    self._send(400, json.dumps(refusal).encode())
                    return
            if state.delay_s:
                state.stop.wait(state.delay_s)
            mode = state.mode
            if mode == "http500":
                self._send(500, b'{"error": {"message": "internal error"}}')
                return
            if mode == "http429":
                self._send(429, b'{"error": {"message": "Rate limit reached", "type": "requests"}}')
                return
            if mode == "json":
                self._send(200, b'{"id": "x", "choices": []}')
                return
            if mode == "complete":
                self._complete(body)
                return
            if mode == "tool_call":
                self._tool_call(body)
                return
            if mode == "silent":
                state.stop.wait(30)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            base: dict[str, Any] = {
                "id": "chatcmpl-123",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model"),
            }
            if state.flavour == "ollama":
                base["system_fingerprint"] = "fp_ollama"
            if mode == "garbage":
                self._chunk("{not json")
                return
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            words = state.words[: int(limit or len(state.words))]
            # As the API says why it stopped: `length` when the output limit cut the answer.
            finish = "length" if len(words) < len(state.words) else "stop"
            if mode == "burst":  # every chunk, the stop and the usage in one write
                pieces = [
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": word}, "finish_reason": None}
                        ],
                    }
                    for word in words
                ]
                pieces.append(
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
                )
                pieces.append(
                    {
                        **base,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": 10,
                            "completion_tokens": len(words),
                            "total_tokens": 10 + len(words),
                        },
                    }
                )
                payload = "".join(f"data: {json.dumps(p)}\n\n" for p in pieces)
                self.wfile.write((payload + "data: [DONE]\n\n").encode())
                self.wfile.flush()
                return
            for index, word in enumerate(words):
                if mode == "broken_after" and index == 2:
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                delta: dict[str, Any] = {"content": word}
                if index == 0:
                    delta["role"] = "assistant"
                self._chunk(
                    {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                )
            if mode == "no_done":
                return
            self._chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            usage_wanted = (body.get("stream_options") or {}).get("include_usage")
            if usage_wanted and state.include_usage_honoured:
                prompt_tokens = sum(len(m["content"].split()) for m in body["messages"]) + 8
                self._chunk(
                    {
                        **base,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": len(words),
                            "total_tokens": prompt_tokens + len(words),
                        },
                    }
                )
            self._chunk("[DONE]")

    return Handler


@dataclass
class RunningDouble:
    state: DoubleState
    port: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def chat_double(**settings: Any) -> Iterator[RunningDouble]:
    """Serve a double on a free loopback port for the duration of the block."""
    state = DoubleState(**settings)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RunningDouble(state, server.server_address[1])
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port with nothing listening (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port
