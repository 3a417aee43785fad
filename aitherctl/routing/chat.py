"""OpenAI chat completions with SSE streaming: over httpx (with `httpx-sse` parsing the stream)
for remote endpoints, over a plain socket (loopback_http.py) for plain-http servers on
this machine, so a `run` that only talks to local servers does not import httpx (20-40 ms).

One protocol for every backend: vLLM and llama.cpp (`POST /v1/chat/completions`), cloud endpoints
(DeepSeek, Gemini's and Anthropic's OpenAI-compatible APIs, OpenAI), and Ollama through its
OpenAI-compatible `/v1` API. The request asks for `stream_options.include_usage`, so the last
chunk before `data: [DONE]` carries `usage` (prompt and completion tokens) with empty `choices`
(OpenAI API reference, "Create chat completion", `stream_options`).

Every failure becomes a `ChatError` that says whether any text had arrived (`partial`): before the
first token the router may try the next candidate; after it, it must not splice another answer.
The API key is read from the named environment variable when sending and appears in no message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aitherctl.profiles.profile import is_loopback as is_loopback_host
from aitherctl.routing.table import Candidate

if TYPE_CHECKING:
    import httpx


class HttpClients:
    """One keep-alive client per scheme, each built on first use.

    Local servers speak plain HTTP, and building a verifying TLS context (loading the CA bundle)
    costs about 40 ms: a run that only talks to local servers never pays it. Every https:// URL
    goes through the verifying client; the plain one only ever sees http:// URLs.
    """

    def __init__(self) -> None:
        self._plain: httpx.Client | None = None
        self._tls: httpx.Client | None = None

    def for_url(self, url: str) -> httpx.Client:
        import httpx

        if url.startswith("http://"):
            if self._plain is None:
                self._plain = httpx.Client(
                    transport=httpx.HTTPTransport(verify=False), follow_redirects=False
                )
            return self._plain
        if self._tls is None:
            self._tls = httpx.Client(follow_redirects=False)
        return self._tls

    def close(self) -> None:
        for client in (self._plain, self._tls):
            if client is not None:
                client.close()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion to ask for: the prompt, an optional system message, the chat's earlier
    turns, the output limit and the temperature."""

    prompt: str
    system: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    history: tuple[tuple[str, str], ...] = ()  # (role, text) of a chat's earlier turns

    def messages(self) -> list[dict[str, str]]:
        items = [{"role": "system", "content": self.system}] if self.system else []
        items += [{"role": role, "content": text} for role, text in self.history]
        items.append({"role": "user", "content": self.prompt})
        return items


@dataclass(slots=True)
class ChatResult:
    """A streamed answer: its text, the tokens the server counted (None when it did not report
    them), the chunks received, and the time to the first token and in all."""

    text: str
    tokens_in: int | None  # as the server reported (usage.prompt_tokens)
    tokens_out: int | None  # usage.completion_tokens; else None
    chunks: int  # content chunks received (a floor for tokens_out when usage is missing)
    ttft_s: float | None
    total_s: float
    finish_reason: str | None = None
    last_token_s: float | None = None  # when the last piece of text arrived, from the start


@dataclass
class ChatError(Exception):
    """A failed attempt. `kind`: refused, timeout, http_5xx, http_429, http_4xx, bad_stream, ..."""

    kind: str
    message: str
    partial_text: str = ""
    ttft_s: float | None = None
    elapsed_s: float = 0.0
    status: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Whether the server may have accepted (and billed) the request: False when it never reached
    # the server (refused, connect timeout) or the server answered with an HTTP error status.
    billable: bool = True

    @property
    def partial(self) -> bool:
        return bool(self.partial_text)

    def __str__(self) -> str:
        return self.message


def build_body(candidate: Candidate, request: ChatRequest) -> dict[str, Any]:
    """The request body as this endpoint wants it: the length limit under the field it accepts
    (`max_tokens`, or `max_completion_tokens` for OpenAI's gpt-5 and o-series), and the
    temperature passed on, left out, or fixed (`Candidate.temperature`)."""
    body: dict[str, Any] = {
        "model": candidate.model,
        "messages": request.messages(),
        "stream": True,
        "stream_options": {"include_usage": True},
        candidate.max_tokens_field: request.max_tokens,
    }
    rule = candidate.temperature
    if isinstance(rule, float | int):
        body["temperature"] = rule
    elif rule == "pass" and request.temperature is not None:
        body["temperature"] = request.temperature
    return body


def key_may_travel(url: str, candidate: Candidate | None = None) -> bool:
    """An API key goes over https, or over plain http only to this machine (loopback), or to a
    service on one of the profile's own hosts."""
    parts = urlsplit(url)
    if candidate is not None and candidate.key_over_http:
        return True
    return parts.scheme == "https" or is_loopback_host(parts.hostname or "")


def _headers(candidate: Candidate, url: str) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    key = candidate.api_key
    if key is None and candidate.api_key_env:
        key = os.environ.get(candidate.api_key_env, "")
    if key and key_may_travel(url, candidate):
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _error_detail(response: httpx.Response) -> str:
    """The server's own error message, short: `{"error": {"message": ...}}` or the body's start."""
    import httpx

    try:
        response.read()
        data = response.json()
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:200]
        if isinstance(error, str):
            return error[:200]
    except (ValueError, httpx.HTTPError):
        pass
    try:
        return response.text.strip().replace("\n", " ")[:200]
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""


def is_local_plain(url: str) -> bool:
    """A plain-http URL on this machine (the socket client serves it)."""
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")


class _Stream:
    """One answer's bookkeeping, whatever carries it: each SSE event's data goes to `event`."""

    def __init__(self, on_text: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.on_text = on_text
        self.clock = clock
        self.started = clock()
        self.parts: list[str] = []
        self.ttft: float | None = None
        self.last_token: float | None = None
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.chunks = 0
        self.done = False

    def fail(
        self, kind: str, message: str, status: int | None = None, *, billable: bool = True
    ) -> ChatError:
        return ChatError(
            kind,
            message,
            "".join(self.parts),
            self.ttft,
            self.clock() - self.started,
            status,
            billable=billable,
        )

    def event(self, data: str) -> bool:
        """Handle one event's data; True once `[DONE]` came."""
        if data.strip() == "[DONE]":
            self.done = True
            return True
        if not data.strip():
            return False
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self.fail("bad_stream", "malformed stream: a chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise self.fail("bad_stream", "malformed stream: a chunk is not an object")
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise self.fail("stream_error", f"error in stream: {str(message)[:200]}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text:
                self.last_token = self.clock() - self.started
                if self.ttft is None:
                    self.ttft = self.last_token
                self.chunks += 1
                self.parts.append(text)
                self.on_text(text)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return False

    def result(self) -> ChatResult:
        if not self.done and self.finish is None:
            raise self.fail("bad_stream", "stream ended without [DONE]")
        usage = self.usage
        return ChatResult(
            text="".join(self.parts),
            tokens_in=_int(usage.get("prompt_tokens")) if usage else None,
            tokens_out=_int(usage.get("completion_tokens")) if usage else None,
            chunks=self.chunks,
            ttft_s=self.ttft,
            total_s=self.clock() - self.started,
            finish_reason=self.finish,
            last_token_s=self.last_token,
        )


def stream_chat(
    clients: HttpClients,
    candidate: Candidate,
    request: ChatRequest,
    on_text: Callable[[str], None],
    *,
    read_timeout_s: float,
    clock: Callable[[], float] = time.perf_counter,
    on_sent: Callable[[], None] | None = None,
) -> ChatResult:
    """Send the request and call `on_text` with each piece of the answer as it arrives;
    `on_sent` once the request is on its way (work to do while the server thinks)."""
    url = candidate.base_url + "/chat/completions"
    state = _Stream(on_text, clock)
    if candidate.api_key_env and not key_may_travel(url, candidate):
        raise state.fail(
            "insecure",
            f"refused: the API key would travel unencrypted over plain http to "
            f"{urlsplit(url).hostname} (use https://)",
            billable=False,
        )
    if is_local_plain(url):
        _stream_local(candidate, request, url, state, read_timeout_s, on_sent)
    else:
        if on_sent is not None:
            on_sent()
        _stream_httpx(clients, candidate, request, url, state, read_timeout_s)
    return state.result()


def _stream_local(  # noqa: PLR0917
    candidate: Candidate,
    request: ChatRequest,
    url: str,
    state: _Stream,
    read_timeout_s: float,
    on_sent: Callable[[], None] | None = None,
) -> None:
    """The stream from a plain-http server on this machine, over the small socket client."""
    from aitherctl.loopback_http import connect_tcp, host_header
    from aitherctl.loopback_http import request as send

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = json.dumps(build_body(candidate, request)).encode()
    headers = {"Content-Type": "application/json", **_headers(candidate, url)}
    try:
        sock = connect_tcp(host, port, candidate.connect_timeout_s)
    except TimeoutError:
        raise state.fail(
            "timeout",
            f"connect timed out after {candidate.connect_timeout_s:g}s",
            billable=False,
        ) from None
    except OSError:
        raise state.fail("refused", "connection refused", billable=False) from None
    try:
        answer = send(
            sock,
            "POST",
            host_header(host, port),
            parts.path or "/",
            body=body,
            headers=headers,
            read_timeout_s=read_timeout_s,
            on_sent=on_sent,
        )
    except TimeoutError:
        raise state.fail("timeout", f"no answer within {read_timeout_s:g}s") from None
    except (OSError, ValueError):
        raise state.fail("bad_stream", "connection closed mid-response") from None
    try:
        if answer.status >= 400:
            code = answer.status
            detail = _detail_text(answer.read())
            kind = "http_429" if code == 429 else "http_5xx" if code >= 500 else "http_4xx"
            raise state.fail(
                kind, f"HTTP {code}" + (f": {detail}" if detail else ""), code, billable=False
            )
        content_type = answer.header("content-type") or ""
        if "text/event-stream" not in content_type:
            raise state.fail("bad_stream", f"not an event stream ({content_type or 'no type'})")
        data: list[str] = []
        for raw in answer.lines():
            line = raw.decode("utf-8", "replace")
            if not line:
                if data and state.event("\n".join(data)):
                    return
                data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            state.event("\n".join(data))
    except ChatError:
        raise
    except TimeoutError:
        what = "no answer" if state.ttft is None else "stream stalled"
        raise state.fail("timeout", f"{what} within {read_timeout_s:g}s") from None
    except (OSError, ValueError):
        raise state.fail("bad_stream", "connection closed mid-response") from None
    finally:
        answer.close()


def _detail_text(body: bytes) -> str:
    """As `_error_detail`, from a body already read."""
    try:
        data = json.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:200]
        if isinstance(error, str):
            return error[:200]
    except ValueError:
        pass
    return body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]


def _stream_httpx(  # noqa: PLR0917
    clients: HttpClients,
    candidate: Candidate,
    request: ChatRequest,
    url: str,
    state: _Stream,
    read_timeout_s: float,
) -> None:
    import httpx
    from httpx_sse import SSEError, connect_sse

    timeout = httpx.Timeout(
        connect=candidate.connect_timeout_s, read=read_timeout_s, write=10.0, pool=5.0
    )
    try:
        with connect_sse(
            clients.for_url(url),
            "POST",
            url,
            json=build_body(candidate, request),
            headers=_headers(candidate, url),
            timeout=timeout,
        ) as source:
            response = source.response
            if response.status_code >= 400:
                detail = _error_detail(response)
                code = response.status_code
                kind = "http_429" if code == 429 else "http_5xx" if code >= 500 else "http_4xx"
                raise state.fail(
                    kind,
                    f"HTTP {code}" + (f": {detail}" if detail else ""),
                    code,
                    billable=False,
                )
            for event in source.iter_sse():
                if state.event(event.data):
                    break
    except ChatError:
        raise
    except SSEError as exc:
        raise state.fail("bad_stream", f"not an event stream ({exc})") from None
    except httpx.ConnectTimeout:
        raise state.fail(
            "timeout",
            f"connect timed out after {candidate.connect_timeout_s:g}s",
            billable=False,
        ) from None
    except httpx.ConnectError:
        raise state.fail("refused", "connection refused", billable=False) from None
    except httpx.ReadTimeout:
        what = "no answer" if state.ttft is None else "stream stalled"
        raise state.fail("timeout", f"{what} within {read_timeout_s:g}s") from None
    except httpx.RemoteProtocolError:
        raise state.fail("bad_stream", "connection closed mid-response") from None
    except httpx.HTTPError as exc:
        raise state.fail("http_error", f"{type(exc).__name__}") from None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
