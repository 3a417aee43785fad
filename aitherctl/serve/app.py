"""The gateway's HTTP server: routes, API keys, the answer's transport, /metrics and /events.

aiohttp serves it (chosen by measurement against uvicorn: bench/bench_http_stack.py) with
`handler_cancellation=True`, so a client that disconnects cancels its handler: its queue place
is given up, its load wait ends and the upstream request is closed (the backend frees its slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from aitherctl.errors import AitherError, UsageError
from aitherctl.profiles.profile import is_loopback
from aitherctl.serve import timeline
from aitherctl.serve.access import AccessPolicy
from aitherctl.serve.access_log import AccessLog
from aitherctl.serve.apis import TRANSCRIPTIONS, FormFile, forwarded_headers, stream_error
from aitherctl.serve.dispatcher import ROUTES, Dispatcher, GatewayRequest, Reply, error_body
from aitherctl.serve.metrics import PromMetrics
from aitherctl.serve.model import Priority, parse_priority
from aitherctl.serve.ollama_api import EMBED_ROUTES as OLLAMA_EMBED_ROUTES
from aitherctl.serve.ollama_api import ROUTES as OLLAMA_CHAT_ROUTES
from aitherctl.serve.scheduler import REFRESH_S, EventLog, Scheduler

if TYPE_CHECKING:
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.gpu.model import GpuInventory
    from aitherctl.profiles.profile import Profile
    from aitherctl.routing.table import RoutingTable
    from aitherctl.serve.control import ServiceControl
    from aitherctl.serve.model import Pool
    from aitherctl.serve.node_control import NodeControl
    from aitherctl.serve.upstream import Upstream

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8150
DEFAULT_DRAIN_S = 30.0
# What aiohttp may still wait for each connection once the drain is over and every handler has
# been cancelled (its own default, 60 s, applied twice, outlasted systemd's TimeoutStopSec).
SHUTDOWN_GRACE_S = 0.5
OLLAMA_ROUTES = (*OLLAMA_CHAT_ROUTES, *OLLAMA_EMBED_ROUTES)
MAX_BODY_BYTES = 32 * 1024 * 1024  # images in chat messages are base64
PRIORITY_HEADER = "x-aither-priority"
# `x-aither-max-tokens: profile`: no limit in the body means the profile's `routing.max_tokens`
# for every backend (what `aitherctl run` sends without --max-tokens).
MAX_TOKENS_HEADER = "x-aither-max-tokens"
KEYS_ENV = "AITHER_API_KEYS"
CORS_MAX_AGE_S = 600
# What a page allowed by `--allow-origin` may read of an answer besides the CORS-safe headers.
_EXPOSED_HEADERS = ", ".join(
    (
        "x-aither-backend",
        "x-aither-tier",
        "x-aither-effort",
        "x-aither-queue-wait",
        "x-aither-load-wait",
        "x-aither-price",
        "Retry-After",
    )
)
REPORT_HEADER = "x-aither-report"  # `aitherctl run` asks for its report (serve/dispatcher.py)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key the gateway accepts: the name its holder goes by in logs and the ledger, the secret
    itself (never shown), and the priority its requests get."""

    name: str  # what the ledger and logs call its holder (never the key itself)
    secret: str = field(repr=False)
    priority: Priority = Priority.NORMAL


def parse_keys(text: str, source: str, *, env: bool = False) -> list[ApiKey]:
    """A keys file: one key per line, `KEY [interactive|normal|batch] [NAME]`, blank lines and
    `#` comments (a line of its own, or after a space) skipped. The environment variable: the
    same entries separated by commas. Anything else is refused, naming the line (never the key):
    a key with `#` or `,` in it used to be cut there silently."""
    keys = []
    if env:
        entries = list(enumerate(text.split(","), 1))
        where = "entry"
    else:
        entries = list(enumerate(text.splitlines(), 1))
        where = "line"
    for number, entry in entries:
        place = f"{source}: {where} {number}" if env else f"{source}:{number}"
        words = entry.split()
        for index, word in enumerate(words):
            if word.startswith("#"):
                words = words[:index]
                break
        if not words:
            continue
        if any("#" in word for word in words):
            raise UsageError(
                f"{place}: '#' inside a word: put comments on their own line or "
                "after a space (a key may not contain '#')"
            )
        if not env and any("," in word for word in words):
            raise UsageError(
                f"{place}: ',' in a keys file: one key per line (commas separate "
                f"keys only in ${KEYS_ENV})"
            )
        if len(words) > 3:
            raise UsageError(f"{place}: {len(words)} words; expected KEY [priority] [NAME]")
        secret = words[0]
        if len(secret) < 16:
            raise UsageError(f"{place}: an API key needs at least 16 characters")
        try:
            priority = parse_priority(words[1] if len(words) > 1 else None)
        except ValueError as exc:
            raise UsageError(f"{place}: {exc}") from None
        name = words[2] if len(words) > 2 else f"key-{number}"
        keys.append(ApiKey(name, secret, priority))
    return keys


def load_keys(keys_file: Path | None, env: dict[str, str]) -> list[ApiKey]:
    keys = []
    if env.get(KEYS_ENV):
        keys += parse_keys(env[KEYS_ENV], f"${KEYS_ENV}", env=True)
    if keys_file is not None:
        try:
            text = keys_file.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the API keys file {keys_file}: {exc.strerror}") from None
        keys += parse_keys(text, str(keys_file))
    return keys


class _StreamAnswer(web.StreamResponse):
    """A streamed answer whose head goes out with its first chunk, in one write, as aiohttp's
    own `Response` sends a head with its body. A `StreamResponse` sends its head on its own when
    prepared; the gateway prepares it when the first chunk is already in hand (an answer may
    still fall back to another backend before that), so the client woke for the head, then again
    for the chunk: about 0.3 ms more to the first token than the chunk alone
    (bench/timeline_gateway.py)."""

    _send_headers_immediately = False


class _Sink:
    """The client's response, begun on the first write or keep-alive."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def start(self, status: int, headers: dict[str, str], *, at_once: bool = False) -> None:
        response = (web.StreamResponse if at_once else _StreamAnswer)(
            status=status, headers=headers
        )
        ndjson = headers.get("Content-Type") == "application/x-ndjson"  # Ollama's stream
        response.content_type = "application/x-ndjson" if ndjson else "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        self.response = response
        await response.prepare(self.request)
        if timeline.ON:
            timeline.mark("client_head_prepared")

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)
        if timeline.ON:
            timeline.mark_nth("client_written")


class Gateway:
    """The aiohttp application around one Dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        scheduler: Scheduler,
        metrics: PromMetrics,
        keys: list[ApiKey],
        access: AccessPolicy | None = None,
        *,
        access_log: AccessLog | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.metrics = metrics
        self.keys = keys
        self.access = access or AccessPolicy()
        self.started = time.time()
        self.closing = asyncio.Event()  # set at shutdown: /events streams end
        self.retired: list[Dispatcher] = []  # dispatchers replaced by a followed switch
        self._handlers: set[asyncio.Task[Any]] = set()
        self.access_log = access_log or AccessLog()

    def replace(self, dispatcher: Dispatcher, scheduler: Scheduler) -> None:
        """New requests go to `scheduler` from now on (one assignment, on the loop)."""
        self.retired.append(self.dispatcher)
        self.dispatcher, self.scheduler = dispatcher, scheduler

    async def cancel_requests(self, grace_s: float) -> None:
        """Cancel the handlers still running (the drain is over): each closes its upstream
        request and records its ledger row; wait at most `grace_s` for them."""
        tasks = [task for task in self._handlers if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)

    async def flush(self) -> None:
        """Write every ledger row still pending, the retired dispatchers' too."""
        for dispatcher in [*self.retired, self.dispatcher]:
            await dispatcher.flush()

    async def housekeeping(self) -> None:
        """The current scheduler's idle loop, following it when it is replaced."""
        while True:
            scheduler = self.scheduler
            task = asyncio.get_running_loop().create_task(scheduler.run_housekeeping())
            while self.scheduler is scheduler and not task.done():
                await asyncio.sleep(1.0)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard, self._auth])
        app.on_response_prepare.append(self._cors_headers)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/events", self.events)
        app.router.add_get("/status", self.status)
        for path in ROUTES:
            app.router.add_post(path, self.generate)
        # Ollama's API besides /api/chat and /api/generate (aitherctl/serve/ollama_api.py).
        app.router.add_get("/", self.ollama_root)
        app.router.add_get("/api/version", self.ollama_version)
        app.router.add_get("/api/tags", self.ollama_tags)
        app.router.add_get("/api/ps", self.ollama_ps)
        app.router.add_post("/api/show", self.ollama_show)
        return app

    # -- keys ----------------------------------------------------------------------------------

    def _key_for(self, request: web.Request) -> ApiKey | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.headers.get("x-api-key", "")
        if not token:
            return None
        found = None
        for key in self.keys:  # compare with every key, in constant time each
            if hmac.compare_digest(key.secret.encode(), token.strip().encode()):
                found = key
        return found

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """A `Host` that does not name this machine (DNS rebinding) and an `Origin` that is
        not allowed (a web page) are refused before anything runs; an allowed origin's CORS
        preflight is answered here."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        if not self.access.host_allowed(request.headers.get("Host")):
            return _json_reply(
                Reply(
                    403,
                    error_body(
                        f"Host {request.headers.get('Host')!r} does not name this machine "
                        "(allow it with aitherctl serve --allow-host NAME)",
                        "permission_error",
                        "host_not_allowed",
                    ),
                )
            )
        origin = request.headers.get("Origin")
        if origin is not None and not self.access.origin_allowed(origin):
            return _json_reply(
                Reply(
                    403,
                    error_body(
                        f"requests from the web page at {origin} are not allowed (allow its origin "
                        "with aitherctl serve --allow-origin ORIGIN)",
                        "permission_error",
                        "origin_not_allowed",
                    ),
                )
            )
        if request.method == "OPTIONS" and origin is not None:
            headers = {
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Authorization, Content-Type"
                ),
                "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
            }
            return web.Response(status=204, headers=headers)
        result: web.StreamResponse = await handler(request)
        return result

    async def _cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """An allowed page may read the answer (set on every response, streams included)."""
        origin = request.headers.get("Origin")
        if origin is not None and self.access.origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS
            response.headers.add("Vary", "Origin")

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self.keys and request.path != "/health" and request.method != "OPTIONS":
            key = self._key_for(request)
            if key is None:
                if request.method == "POST":
                    self.access_log.request(
                        request.remote, "-", "-", None, 401, None, None, None, None, 0.0
                    )
                return _json_reply(
                    Reply(
                        401,
                        error_body(
                            "a valid API key is required (Authorization: Bearer KEY or "
                            "x-api-key: KEY)",
                            "authentication_error",
                            "invalid_api_key",
                        ),
                    )
                )
            request["api_key"] = key
        result: web.StreamResponse = await handler(request)
        return result

    # -- routes --------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        del request
        return web.json_response(
            {
                "status": "ok",
                "profile": self.scheduler.profile.name,
                "in_flight": self.scheduler.in_flight(),
                "uptime_s": round(time.time() - self.started, 1),
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        del request
        return web.json_response({"object": "list", "data": self.dispatcher.models()})

    def _ollama_models(self) -> list[dict[str, Any]]:
        """`GET /v1/models`' entries, each backend's engine added (Ollama's `details`)."""
        backends = self.dispatcher.router.table.backends
        entries = []
        for entry in self.dispatcher.models():
            aither = dict(entry["aither"])
            backend = backends.get(str(aither.get("backend")))
            if backend is not None:
                aither["engine"] = backend.engine
            entries.append({**entry, "aither": aither})
        return entries

    async def ollama_root(self, request: web.Request) -> web.Response:
        del request
        return web.Response(text="Ollama is running")  # what Ollama's clients probe for

    async def ollama_version(self, request: web.Request) -> web.Response:
        from aitherctl.serve.ollama_api import API_VERSION

        del request
        return web.json_response({"version": API_VERSION})

    async def ollama_tags(self, request: web.Request) -> web.Response:
        from aitherctl.serve.ollama_api import tags

        del request
        return web.json_response(tags(self._ollama_models()))

    async def ollama_ps(self, request: web.Request) -> web.Response:
        from aitherctl.serve.ollama_api import ps

        del request
        return web.json_response(ps(self._ollama_models()))

    async def ollama_show(self, request: web.Request) -> web.Response:
        from aitherctl.serve.ollama_api import model_name, show

        try:
            body = json.loads(await request.read())
            name = model_name(body.get("model") or body.get("name"))
        except (ValueError, AttributeError):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        entry = next((e for e in self._ollama_models() if e["id"] == name), None)
        if entry is None:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        return web.json_response(show(entry))

    async def status(self, request: web.Request) -> web.Response:
        del request
        snapshot = self.scheduler.snapshot()
        snapshot["events"] = [e.to_json() for e in list(self.scheduler.events.recent)[-20:]]
        return web.json_response(snapshot)

    async def prometheus(self, request: web.Request) -> web.Response:
        del request
        body, content_type = self.metrics.render(self.scheduler)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the recent decisions, then each new one as it happens."""
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        closing = asyncio.ensure_future(self.closing.wait())
        async with self.scheduler.events.subscribe() as queue:
            try:
                for event in list(self.scheduler.events.recent):
                    await response.write(_sse(event.to_json()))
                while not self.closing.is_set():
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, closing}, timeout=15.0, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter in done:
                        await response.write(_sse(getter.result().to_json()))
                        continue
                    getter.cancel()
                    if not self.closing.is_set():
                        await response.write(b": keep-alive\n\n")
            finally:
                closing.cancel()
        await response.write_eof()  # shutdown: the stream ends, the client sees it end
        return response

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """One request: answered, and its line written to the request log."""
        started = time.perf_counter()
        if timeline.ON:
            timeline.begin(request.headers.get(timeline.CLIENT_T0_HEADER))
        line: dict[str, Any] = {"client": "-", "model": "-", "status": 499, "outcome": None}
        try:
            response = await self._generate(request, line)
            line["status"] = response.status
            return response
        finally:
            outcome = line["outcome"]
            if line["status"] == 499 and outcome is not None and outcome.outcome == "ok":
                # The client left after the answer's last event (the handler was cancelled
                # while the backend closed its side): it has the whole answer.
                line["status"] = 200
            self.access_log.request(
                request.remote,
                line["client"],
                line["model"],
                outcome.backend.name if outcome and outcome.backend else None,
                line["status"],
                outcome.queue_wait_s if outcome else None,
                outcome.load_wait_s if outcome else None,
                outcome.tokens_in if outcome else None,
                outcome.tokens_out if outcome else None,
                time.perf_counter() - started,
            )
            if timeline.ON:
                timeline.mark("handler_done")
                timeline.end()

    async def _read_form(
        self, request: web.Request
    ) -> tuple[dict[str, Any], tuple[FormFile, ...]] | web.Response:
        """A transcription's `multipart/form-data` body: its text fields (a repeated one as a
        list) and its files. (A browser may send a form cross-site without asking; the Origin
        rule refuses it before this runs.)"""
        if request.content_type != "multipart/form-data":
            return _json_reply(
                Reply(
                    415,
                    error_body(
                        "a transcription is sent as Content-Type: multipart/form-data (not "
                        f"{request.headers.get('Content-Type') or 'none'})",
                        "invalid_request_error",
                    ),
                )
            )
        fields: dict[str, Any] = {}
        files: list[FormFile] = []
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                content_type = value.content_type or "application/octet-stream"
                files.append(FormFile(name, value.filename, content_type, value.file.read()))
            elif name in fields:
                previous = fields[name]
                fields[name] = (
                    [*previous, value] if isinstance(previous, list) else [previous, value]
                )
            else:
                fields[name] = str(value)
        problem = None
        if not files:
            problem = "a transcription needs its audio as a `file` part"
        elif str(fields.get("stream", "false")).lower() == "true":
            problem = "`stream`: serve passes a transcription back whole; leave `stream` out"
        if problem is not None:
            return _json_reply(Reply(400, error_body(problem, "invalid_request_error")))
        return fields, tuple(files)

    async def _generate(self, request: web.Request, line: dict[str, Any]) -> web.StreamResponse:
        files: tuple[FormFile, ...] = ()
        if request.path == TRANSCRIPTIONS:
            form = await self._read_form(request)
            if isinstance(form, web.Response):
                return form
            body, files = form
        elif request.content_type != "application/json":
            # A browser sends text/plain and form bodies cross-site without asking (a "simple"
            # request); JSON needs a preflight, which the Origin rule answers.
            return _json_reply(
                Reply(
                    415,
                    error_body(
                        f"the body must be JSON sent as Content-Type: application/json (not "
                        f"{request.headers.get('Content-Type') or 'none'})",
                        "invalid_request_error",
                    ),
                )
            )
        else:
            try:
                body = json.loads(await request.read())
            except ValueError:
                return _json_reply(
                    Reply(400, error_body("the body is not JSON", "invalid_request_error"))
                )
        if not isinstance(body, dict):
            return _json_reply(
                Reply(400, error_body("the body must be a JSON object", "invalid_request_error"))
            )
        if timeline.ON:
            timeline.mark("body_parsed")
        if request.path in OLLAMA_ROUTES:
            from aitherctl.serve.ollama_api import model_name

            body["model"] = model_name(body.get("model"))
        key: ApiKey | None = request.get("api_key")
        try:
            priority = parse_priority(
                request.headers.get(PRIORITY_HEADER) or body.get("priority"),
                default=key.priority if key else Priority.NORMAL,
            )
        except ValueError as exc:
            return _json_reply(Reply(400, error_body(str(exc), "invalid_request_error")))
        client = (
            key.name
            if key
            else (request.headers.get("x-aither-client") or request.remote or "unknown")
        )
        model = body.get("model")
        line["client"] = client
        line["model"] = model if isinstance(model, str) and model else "auto"
        effort = request.headers.get("x-aither-effort")
        if effort is not None and not (effort.isdigit() and 1 <= int(effort) <= 10):
            return _json_reply(
                Reply(
                    400,
                    error_body(
                        "x-aither-effort must be a whole number from 1 to 10",
                        "invalid_request_error",
                    ),
                )
            )
        gateway_request = GatewayRequest(
            request.path,
            body,
            priority,
            client,
            effort=int(effort) if effort else None,
            local_only=request.headers.get("x-aither-local-only", "") in ("1", "true"),
            profile_limit=request.headers.get(MAX_TOKENS_HEADER, "") == "profile",
            tier=request.headers.get("x-aither-tier") or None,
            backend=request.headers.get("x-aither-backend") or None,
            report=request.headers.get(REPORT_HEADER, "") in ("1", "true"),
            headers=forwarded_headers(request.path, request.headers),
            files=files,
        )
        sink = _Sink(request)
        if timeline.ON:
            timeline.mark("request_built")
        reply = await self.dispatcher.handle(
            gateway_request, sink, lambda outcome: line.__setitem__("outcome", outcome)
        )
        if reply is not None:
            if sink.response is not None:  # a keep-alive began the stream
                await sink.write(stream_error(request.path, reply.body))
                return sink.response
            if request.path in OLLAMA_ROUTES and reply.status >= 400:  # {"error": "message"}
                reply = Reply(reply.status, stream_error(request.path, reply.body), reply.headers)
            return _json_reply(reply)
        assert sink.response is not None
        # A client may leave as soon as it has read the API's last event, before the chunked
        # body's end: its answer is whole (aiohttp would log a traceback per request, on the
        # loop, and the request log would say 499).
        with contextlib.suppress(ConnectionResetError):  # aiohttp's ClientConnectionResetError
            await sink.response.write_eof()
        return sink.response


def _json_reply(reply: Reply) -> web.Response:
    response = web.Response(status=reply.status, body=reply.body, headers=reply.headers)
    if "Content-Type" not in reply.headers and "content-type" not in reply.headers:
        response.content_type = "application/json"
    return response


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


# ---- running it --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How `aitherctl serve` runs: the address it listens on, how long it drains requests when it
    stops, the API keys it accepts, and the hosts and browser origins it allows."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    drain_s: float = DEFAULT_DRAIN_S
    keys: tuple[ApiKey, ...] = ()
    allow_hosts: tuple[str, ...] = ()  # --allow-host and $AITHER_ALLOWED_HOSTS
    allow_origins: tuple[str, ...] = ()  # --allow-origin and $AITHER_ORIGINS


def check_bind(options: ServeOptions) -> None:
    if not options.keys and not is_loopback(options.host):
        raise UsageError(
            f"serving on {options.host} (not loopback) needs API keys: set ${KEYS_ENV} or pass "
            "--keys-file (one key of 16+ characters per line)"
        )


async def _follow(
    gateway: Gateway,
    stack: Stack,
    active: Callable[[Profile], Profile | None],
    *,
    on_change: Callable[[str], None],
) -> None:
    """Serve the active profile: when a switch made another one active (or the served one was
    edited), the one scheduler adopts it (`Scheduler.adopt`: a service of both keeps its
    requests in flight, its queue and its state; no second scheduler ever acts on a container)
    and new requests are routed by the new profile."""
    while True:
        await asyncio.sleep(REFRESH_S)
        scheduler = gateway.scheduler
        try:
            profile = await asyncio.to_thread(active, scheduler.profile)
        except Exception as exc:
            scheduler.events.emit("follow_failed", None, str(exc))
            continue
        if profile is None or profile == scheduler.profile:
            continue
        was = scheduler.profile.name
        running = None
        if scheduler.control is not None:
            scheduler.control.adopt(profile)  # its services are the ones to look for
            with contextlib.suppress(AitherError):
                running = await scheduler.control.observe()
        dispatcher = stack.adopt(scheduler, profile, running)
        gateway.replace(dispatcher, scheduler)
        detail = f"now serving {profile.name}" + (
            f" (was {was})" if was != profile.name else " (its file changed)"
        )
        scheduler.events.emit("profile_changed", None, detail)
        on_change(profile.name)


async def serve_forever(
    build: Callable[[], tuple[Gateway, Stack]],
    options: ServeOptions,
    on_ready: Callable[[str], None],
    state_file: Path | None,
    active: Callable[[Profile], Profile | None] | None = None,
) -> int:
    """Build the scheduler on this loop, serve until SIGTERM or SIGINT, drain, and return the
    exit code. `active(current)` (blocking) gives the active profile when it is not `current`
    (another one, or the same one edited); None: serve the one built."""
    gateway, stack = build()
    scheduler, upstream = gateway.scheduler, stack.upstream
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):

        def handler(sig: int = sig) -> None:
            received.append(sig)
            stop.set()

        loop.add_signal_handler(sig, handler)
    runner = web.AppRunner(
        gateway.app(), handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S
    )
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, reuse_address=True, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await upstream.close()
        raise UsageError(
            f"cannot listen on {options.host}:{options.port}: {exc.strerror} "
            "(another `aitherctl serve`? pass --port)"
        ) from None
    housekeeping = loop.create_task(gateway.housekeeping())
    url = f"http://{_url_host(options.host)}:{options.port}"

    def on_change(profile: str) -> None:
        if state_file is not None:
            _write_state(state_file, url, profile)

    follower = None
    if active is not None:
        follower = loop.create_task(_follow(gateway, stack, active, on_change=on_change))
    if state_file is not None:
        _write_state(state_file, url, scheduler.profile.name)
    on_ready(url)
    try:
        await stop.wait()
    finally:
        # `--drain` is the whole budget: requests in flight get what is left of it, then are
        # cancelled (each records its ledger row), and the ledger is written before exit.
        deadline = loop.time() + options.drain_s
        if follower is not None:
            follower.cancel()
        scheduler = gateway.scheduler
        scheduler.events.emit("draining", None, f"{scheduler.in_flight()} request(s) in flight")
        gateway.closing.set()
        with contextlib.suppress(Exception):
            await site.stop()  # no new connections
        await scheduler.close(max(0.0, deadline - loop.time()))
        housekeeping.cancel()
        with contextlib.suppress(BaseException):
            await housekeeping
        await gateway.cancel_requests(SHUTDOWN_GRACE_S)
        await runner.cleanup()
        await gateway.flush()
        await upstream.close()
        if state_file is not None:
            with contextlib.suppress(OSError):
                state_file.unlink()
    return 128 + received[0] if received and received[0] != signal.SIGTERM else 0


@dataclass
class Stack:
    """What serving one profile takes; replaced whole when the active profile changes."""

    connect: Callable[[], DockerEngine]
    inventory: Callable[[], GpuInventory]
    upstream: Upstream
    metrics: PromMetrics
    events: EventLog
    nodes: NodeControl | None = None  # tests give one with the Vast double's provider
    log: Callable[[str], None] | None = None  # serve's stderr lines (node and budget news)

    def running(self, profile: Profile) -> tuple[ServiceControl | None, set[str] | None]:
        """(the Docker control, the services running now); (None, None) without an engine.
        Blocking: call it in a worker thread once the loop runs."""
        from aitherctl.errors import AitherError
        from aitherctl.serve.control import ServiceControl

        control = ServiceControl(
            self.connect,
            self.inventory,
            profile.name,
            self.upstream,
            profile=profile,
            events=self.events,
        )
        try:
            return control, control.running_blocking()
        except AitherError:
            return None, None  # no Docker engine: services are taken as running

    def build(
        self, profile: Profile, control: ServiceControl | None, running: set[str] | None
    ) -> tuple[Scheduler, Dispatcher]:
        from aitherctl.serve.node_control import NodeControl

        # Rented nodes through the same operations as `aitherctl nodes`; those this
        # machine's records saw running are routed to from the start (blocking: a file read).
        nodes = self.nodes or NodeControl(profile)
        scheduler = Scheduler(
            profile,
            build_routing_table(profile),
            control,
            self.pools(profile),
            events=self.events,
            metrics=self.metrics,
            running=running,
            nodes=nodes,
            nodes_running=nodes.known_blocking() if profile.nodes else None,
            log=self.log,
        )
        return scheduler, self.dispatcher(scheduler)

    def adopt(self, scheduler: Scheduler, profile: Profile, running: set[str] | None) -> Dispatcher:
        """The same scheduler, now serving `profile`; a dispatcher that routes by it."""
        scheduler.adopt(profile, build_routing_table(profile), self.pools(profile), running)
        return self.dispatcher(scheduler)

    def pools(self, profile: Profile) -> dict[str, Pool]:
        import psutil

        from aitherctl.serve.discovery import memory_pools

        return memory_pools(profile, self.inventory(), psutil.virtual_memory().total)

    def dispatcher(self, scheduler: Scheduler) -> Dispatcher:
        from aitherctl.routing.chat import HttpClients
        from aitherctl.routing.ledger import Ledger
        from aitherctl.routing.probes import BackendProbe, FailureMemory
        from aitherctl.routing.router import Router

        clients = HttpClients()
        router = Router(
            scheduler.profile,
            scheduler.table,
            clients=clients,
            probe=BackendProbe(clients),
            memory=FailureMemory(),
            ledger=Ledger(),
        )
        return Dispatcher(
            scheduler,
            router,
            self.upstream,
            observe=self.metrics.observe,
            count=self.metrics.count_outcome,
        )


def build_routing_table(profile: Profile) -> RoutingTable:
    from aitherctl.routing.table import build_routing

    return build_routing(profile)


def build_gateway(
    profile: Profile,
    connect: Callable[[], DockerEngine],
    inventory: Callable[[], GpuInventory],
    *,
    keys: list[ApiKey],
    access: AccessPolicy | None = None,
    access_log: AccessLog | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Gateway, Stack]:
    """Everything `serve` runs, built on the running event loop."""
    from aitherctl.serve.upstream import Upstream

    stack = Stack(connect, inventory, Upstream(), PromMetrics(), EventLog(), log=log)
    control, running = stack.running(profile)
    scheduler, dispatcher = stack.build(profile, control, running)
    return Gateway(dispatcher, scheduler, stack.metrics, keys, access, access_log=access_log), stack


def machine_names() -> list[str]:
    """This machine's host name (`Host` may name it; no DNS lookup at start)."""
    import socket

    return [socket.gethostname()]


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _write_state(path: Path, url: str, profile: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "url": url,
                "pid": os.getpid(),
                "profile": profile,
                "engine": os.environ.get("DOCKER_HOST", ""),
            }
        )
    )
    tmp.replace(path)


__all__ = [
    "ApiKey",
    "EventLog",
    "Gateway",
    "ServeOptions",
    "check_bind",
    "load_keys",
    "serve_forever",
]
