"""The client APIs `serve` passes through besides chat completions: OpenAI's Responses API
(`POST /v1/responses`) and Anthropic's Messages API (`POST /v1/messages`, `POST
/v1/messages/count_tokens`). Passed through unchanged to an engine that serves the API itself
(no translation: a backend without the route is skipped, and a request no backend can take is a
501); what differs per API is read here: which engines serve it, the output-limit field, the
usage fields, and the event that ends a stream.

Checked against the real servers: llama.cpp's server answers all three routes (Responses
streams `event: response.*` ending in `response.completed`, whose `response.usage` has
`input_tokens`/`output_tokens`; Messages streams `message_start` (usage with `input_tokens`,
prompt-cache hits in `cache_read_input_tokens`) ... `message_delta` (usage `output_tokens`) ...
`message_stop`); vLLM 0.32 registers all three; Ollama documents /v1/responses and /v1/messages.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
CHAT = "/v1/chat/completions"
OLLAMA_ROUTES = ("/api/chat", "/api/generate")
OLLAMA_EMBED_ROUTES = ("/api/embed", "/api/embeddings")


@dataclass(frozen=True, slots=True)
class Api:
    """An API `serve` passes through unchanged: its name and path on the backend, its
    output-limit field, the stream events that end it, and the client headers the engine needs
    too."""

    name: str  # what `GET /v1/models` lists
    upstream: str  # the path under the backend's /v1 root
    limit_field: str | None  # the output limit's field (None: the route generates nothing)
    # The SSE `event:` names that end a whole stream (the first is the usual one).
    end_events: tuple[bytes, ...]
    # Request headers a client sends that the engine needs too.
    forwarded_headers: tuple[str, ...] = ()


_ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")

PASSTHROUGH: dict[str, Api] = {
    # A Responses stream ends in one of three terminal events: an answer cut at
    # `max_output_tokens` is `response.incomplete`, a failure the engine reports whole
    # `response.failed`; each is the stream's complete end, not a broken connection.
    RESPONSES: Api(
        "responses",
        "responses",
        "max_output_tokens",
        (b"response.completed", b"response.incomplete", b"response.failed"),
    ),
    MESSAGES: Api("messages", "messages", "max_tokens", (b"message_stop",), _ANTHROPIC_HEADERS),
    COUNT_TOKENS: Api("messages", "messages/count_tokens", None, (), _ANTHROPIC_HEADERS),
}

# The routes each engine is known to serve (checked above); an engine not listed here (generic
# services, OpenAI-compatible endpoints) is tried, and a 404 or 501 from it skips it.
_KNOWN: dict[str, frozenset[str]] = {
    "llamacpp": frozenset({RESPONSES, MESSAGES, COUNT_TOKENS}),
    "vllm": frozenset({RESPONSES, MESSAGES, COUNT_TOKENS}),
    "ollama": frozenset({RESPONSES, MESSAGES}),
}


RERANK = "/v1/rerank"
SCORE = "/v1/score"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
# Routes that some engines serve, depending on how they run (a reranking model, an audio model),
# passed through unchanged: what `GET /v1/models` calls each.
EXTRA: dict[str, str] = {
    RERANK: "rerank",
    SCORE: "score",
    TRANSCRIPTIONS: "audio.transcriptions",
}
# Checked against the real llama.cpp server here: `/v1/rerank` only when started with
# `--reranking` (else 501 "This server does not support reranking. Start it with
# `--reranking`"), `/v1/score` not at all (404), `/v1/audio/transcriptions` only with an audio
# model (else 501 "The current model does not support audio input."). Ollama's API has none
# of the three. vLLM registers all three; each answers only for a model of that kind.
_EXTRA_NOT_SERVED: dict[str, frozenset[str]] = {
    "llamacpp": frozenset({SCORE}),
    "ollama": frozenset(EXTRA),
}
LLAMACPP_RERANK_FLAGS = ("--reranking", "--rerank")


def translated(engine: str, route: str) -> bool:
    """True when a Responses or Messages request goes to a backend of `engine` as chat
    completions (`aitherctl.serve.translate`): every engine not known to serve the API itself
    (a generic service, an OpenAI-compatible or cloud endpoint speaks chat completions)."""
    if route in OLLAMA_ROUTES:
        return True  # Ollama's API goes to every engine as chat completions
    if route not in (RESPONSES, MESSAGES):
        return False
    known = _KNOWN.get(engine)
    return known is None or route not in known


def not_served_reason(engine: str, route: str, args: tuple[str, ...] | None) -> str | None:
    """Why a backend of `engine` is known not to serve `route`, or None. `args`: a service's
    command-line arguments (None for an endpoint, whose server's flags are not known here)."""
    if known_not_served(engine, route):
        return f"{engine} does not serve it"
    if (
        engine == "llamacpp"
        and route == RERANK
        and args is not None
        and not any(flag in args for flag in LLAMACPP_RERANK_FLAGS)
    ):
        return "a llama.cpp service reranks only when started with --reranking"
    return None


def known_not_served(engine: str, route: str) -> bool:
    """True when `engine` is known not to serve the pass-through `route`."""
    if route in EXTRA:
        return route in _EXTRA_NOT_SERVED.get(engine, frozenset())
    known = _KNOWN.get(engine)
    return known is not None and route in PASSTHROUGH and route not in known


@dataclass(frozen=True, slots=True)
class ModelApis:
    """For `GET /v1/models`: the APIs a backend takes (`apis`), those of them through chat
    completions (`translated`), and those it is asked for without knowing whether it serves
    them (`tried`: passed over when it answers 404 or 501)."""

    apis: list[str]
    translated: list[str]
    tried: list[str]


def apis_of(engine: str, args: tuple[str, ...] = ()) -> ModelApis:
    """The APIs of a backend of `engine` (a service's `args` say whether llama.cpp reranks)."""
    names, via_chat, tried = ["chat.completions"], [], []
    for route, api in PASSTHROUGH.items():
        if route == COUNT_TOKENS:
            continue
        names.append(api.name)
        if translated(engine, route):
            via_chat.append(api.name)
    for route, name in EXTRA.items():
        if known_not_served(engine, route):
            continue
        if engine == "llamacpp" and route == RERANK:
            if any(flag in args for flag in LLAMACPP_RERANK_FLAGS):
                names.append(name)
            continue
        tried.append(name)
    return ModelApis(names, via_chat, tried)


def unbounded_reason(route: str, body: dict[str, Any]) -> str | None:
    """Why the cost of this body cannot be bounded from what is sent (a Responses request that
    continues a conversation stored at the provider, audio whose length is not read), or
    None."""
    if route == TRANSCRIPTIONS:
        return "the cost of transcribing audio has no upper bound that serve can read"
    if route == RESPONSES:
        for field_name in ("previous_response_id", "conversation", "prompt"):
            if body.get(field_name):
                return (
                    f"`{field_name}` brings input stored at the provider, which no upper bound "
                    "can be read for"
                )
    return None


def chat_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """A Responses or Messages `usage` in chat's field names. Messages counts prompt-cache
    hits and writes apart from `input_tokens`; all of them are input."""
    if "prompt_tokens" in usage or ("input_tokens" not in usage and "output_tokens" not in usage):
        return usage
    out: dict[str, Any] = {}
    parts = [
        usage.get(key)
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    ]
    counted = [p for p in parts if isinstance(p, int) and not isinstance(p, bool)]
    if isinstance(usage.get("input_tokens"), int):
        out["prompt_tokens"] = sum(counted)
    if isinstance(usage.get("output_tokens"), int):
        out["completion_tokens"] = usage["output_tokens"]
    return out


def prompt_text(route: str, body: dict[str, Any]) -> tuple[str, str | None]:
    """(the last user text, the system text) of a Responses or Messages body."""
    if route == RESPONSES:
        instructions = body.get("instructions")
        system = instructions if isinstance(instructions, str) else None
        value = body.get("input")
        if isinstance(value, str):
            return value, system
        user = ""
        for item in value if isinstance(value, list) else []:
            if isinstance(item, dict) and item.get("role") == "user":
                user = _text(item.get("content"))
            elif isinstance(item, dict) and item.get("role") in ("system", "developer"):
                system = system or _text(item.get("content"))
        return user, system
    system_value = body.get("system")
    system = _text(system_value) if system_value else None
    user = ""
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            user = _text(message.get("content"))
    return user, system


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


_EVENT_LINE = re.compile(rb"^event: ?(\S+)\r?$", re.MULTILINE)


class EventWatcher:
    """Passes a Responses or Messages event stream through unchanged, reading the usage it
    reports and whether the API's last event went by (the same interface as chat's splitter:
    `watch_done`, `feed`, `flush`, `usage`, `done`, `buffer`).

    `limit`: the `max_output_tokens` a Responses request was sent with. The llama.cpp server
    ends an answer cut at that limit with `response.completed` and `status: "completed"`
    (checked on the real server: 5 of 5 tokens, no `incomplete_details`), which tells a client
    such as Codex CLI that the answer is whole. With a limit, events go out whole (a piece of
    one waits for its end) and the last one, when its usage reached the limit, is passed on as
    the API defines it:
    `response.incomplete`, `status: "incomplete"`, `incomplete_details.reason:
    "max_output_tokens"` (`incomplete_response`)."""

    def __init__(self, route: str, limit: int | None = None) -> None:
        self.ends = PASSTHROUGH[route].end_events
        self.buffer = b""  # what is held back from the client (with a limit: a piece of an event)
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._pending = b""  # the unfinished event, read when it is complete
        self._limit = limit if route == RESPONSES and isinstance(limit, int) else None

    def watch_done(self, chunk: bytes) -> None:
        del chunk  # `feed` reads the events whole

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        head, sep, self._pending = data.rpartition(b"\n\n")
        if self._limit is None:
            if sep:
                for event in head.split(b"\n\n"):
                    self._read(event)
            return chunk
        # The last event may need rewriting: only whole events go out.
        self.buffer = self._pending
        if not sep:
            return b""
        return b"".join(self._read(event) + b"\n\n" for event in head.split(b"\n\n"))

    def _read(self, event: bytes) -> bytes:
        name = _EVENT_LINE.search(event)
        ended = name is not None and name.group(1) in self.ends
        if ended:
            self.done = True
        if b'"usage"' not in event:
            return event
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                payload = json.loads(line[5:])
            except ValueError:
                return event
            if not isinstance(payload, dict):
                return event
            holder = payload.get("response") or payload.get("message") or payload
            usage = holder.get("usage") if isinstance(holder, dict) else None
            if not isinstance(usage, dict):
                usage = payload.get("usage")
            if isinstance(usage, dict):
                merged = chat_usage(usage)
                self.usage = {**(self.usage or {}), **merged}
            if ended and self._limit is not None and _ends_incomplete(payload, holder, self._limit):
                payload["type"] = "response.incomplete"
                text = json.dumps(payload, ensure_ascii=False)
                return f"event: response.incomplete\ndata: {text}".encode()
        return event

    def flush(self) -> bytes:
        rest, self._pending, self.buffer = self._pending, b"", b""
        event = self._read(rest) if rest.strip() else rest
        return b"" if self._limit is None else event


def _ends_incomplete(event: dict[str, Any], response: Any, limit: int) -> bool:
    """Should this last event be `response.incomplete`? When `incomplete_response` marks it,
    and when the engine said `incomplete` in a `response.completed` event (vLLM 0.32, checked:
    `status: "incomplete"`, `incomplete_details.reason: "max_output_tokens"`, event
    `response.completed`)."""
    if incomplete_response(response, limit):
        return True
    return (
        isinstance(response, dict)
        and response.get("status") == "incomplete"
        and event.get("type") == "response.completed"
    )


def incomplete_response(response: Any, limit: int) -> bool:
    """Mark a Responses answer `incomplete` (in place) when the engine said `completed` but
    its output reached `limit`, the `max_output_tokens` it was sent; True when it did."""
    if not isinstance(response, dict) or response.get("status") != "completed":
        return False
    usage = response.get("usage")
    tokens = usage.get("output_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int) or tokens < limit:
        return False
    response["status"] = "incomplete"
    response["incomplete_details"] = {"reason": "max_output_tokens"}
    return True


def incomplete_answer(data: bytes, limit: int | None) -> bytes:
    """A whole Responses answer (`incomplete_response`'s rule), re-encoded only when marked."""
    if limit is None or b'"completed"' not in data:
        return data
    try:
        answer = json.loads(data)
    except ValueError:
        return data
    if not incomplete_response(answer, limit):
        return data
    return json.dumps(answer, ensure_ascii=False).encode()


def forwarded_headers(route: str, headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that go on to the engine with a request on `route`."""
    api = PASSTHROUGH.get(route)
    if api is None:
        return {}
    return {name: headers[name] for name in api.forwarded_headers if name in headers}


def stream_error(route: str, body: bytes) -> bytes:
    """An error (`error_body`'s JSON) as the event that ends a stream on `route`: Anthropic's
    clients read only a named `event: error` (a bare `data:` event is skipped, and the answer
    would look merely short); OpenAI's raise on any event whose data has `error`."""
    if route in OLLAMA_ROUTES or route in OLLAMA_EMBED_ROUTES:  # Ollama's: a line with `error`
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body.decode()
        return json.dumps({"error": message}).encode() + b"\n"
    if route not in (MESSAGES, COUNT_TOKENS):
        return b"data: " + body + b"\n\n"
    try:
        error = json.loads(body)["error"]
        payload = {"type": "error", "error": {"type": error["type"], "message": error["message"]}}
    except (ValueError, KeyError, TypeError):
        payload = {"type": "error", "error": {"type": "api_error", "message": body.decode()}}
    return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class FormFile:
    """A file part of a multipart request (the audio of a transcription)."""

    name: str  # the form field's
    filename: str
    content_type: str
    data: bytes = field(repr=False)


def encode_multipart(fields: dict[str, Any], files: tuple[FormFile, ...]) -> tuple[bytes, str]:
    """(the body, its Content-Type) of a `multipart/form-data` request (RFC 7578) holding
    `fields` as text parts and `files` as file parts."""
    boundary = "aither-" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:  # a repeated field
            text = item if isinstance(item, str) else json.dumps(item)
            out += f"--{boundary}\r\nContent-Disposition: form-data; ".encode()
            out += f'name="{_quote(name)}"\r\n\r\n'.encode() + text.encode() + b"\r\n"
    for part in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(part.name)}"; '
            f'filename="{_quote(part.filename)}"\r\nContent-Type: {part.content_type}\r\n\r\n'
        ).encode()
        out += part.data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")
