"""The gateway's HTTP server: routes, API keys, the answer's transport, /metrics and /events.

aiohttp serves it (chosen by measurement against uvicorn: bench/bench_http_stack.py) with
`handler_cancellation=True`, so a client that disconnects cancels its handler: its queue place
is given up, its load wait ends and the upstream request is closed (the backend frees its slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from aitherctl.core.scheduling import Priority, parse_priority
from aitherctl.errors import UsageError
from aitherctl.gateway.access_log import AccessLog
from aitherctl.gateway.metrics import PromMetrics
from aitherctl.ops.gateway import ROUTES, Dispatcher, GatewayRequest, Reply, error_body
from aitherctl.ops.scheduler import REFRESH_S, EventLog, Scheduler

if TYPE_CHECKING:
    from aitherctl.adapters.docker_engine import DockerEngine
    from aitherctl.adapters.upstream import Upstream
    from aitherctl.core.gpu import GpuInventory
    from aitherctl.core.profile import Profile
    from aitherctl.ops.scheduler import ServiceControl

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8150
DEFAULT_DRAIN_S = 30.0
MAX_BODY_BYTES = 32 * 1024 * 1024  # images in chat messages are base64
PRIORITY_HEADER = "x-aither-priority"
KEYS_ENV = "AITHER_API_KEYS"
REPORT_HEADER = "x-aither-report"  # `aitherctl run` asks for its report (ops/gateway.py)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str  # what the ledger and logs call its holder (never the key itself)
    secret: str = field(repr=False)
    priority: Priority = Priority.NORMAL


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """One key per line (or comma-separated in the environment): `SECRET [priority] [name]`.
    Blank lines and `#` comments are skipped. Raises UsageError naming the line."""
    keys = []
    entries = [part for line in text.splitlines() for part in line.split(",")]
    for number, entry in enumerate(entries, 1):
        words = entry.split("#", 1)[0].split()
        if not words:
            continue
        secret = words[0]
        if len(secret) < 16:
            raise UsageError(f"{source}: entry {number}: an API key needs at least 16 characters")
        try:
            priority = parse_priority(words[1] if len(words) > 1 else None)
        except ValueError as exc:
            raise UsageError(f"{source}: entry {number}: {exc}") from None
        name = words[2] if len(words) > 2 else f"key-{number}"
        keys.append(ApiKey(name, secret, priority))
    return keys


def load_keys(keys_file: Path | None, env: dict[str, str]) -> list[ApiKey]:
    keys = []
    if env.get(KEYS_ENV):
        keys += parse_keys(env[KEYS_ENV], f"${KEYS_ENV}")
    if keys_file is not None:
        try:
            text = keys_file.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the API keys file {keys_file}: {exc.strerror}") from None
        keys += parse_keys(text, str(keys_file))
    return keys


def is_loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Sink:
    """The client's response, begun on the first write or keep-alive."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def start(self, status: int, headers: dict[str, str]) -> None:
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        self.response = response
        await response.prepare(self.request)

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)


class Gateway:
    """The aiohttp application around one Dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        scheduler: Scheduler,
        metrics: PromMetrics,
        keys: list[ApiKey],
        access_log: AccessLog | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.metrics = metrics
        self.keys = keys
        self.started = time.time()
        self.access_log = access_log or AccessLog()

    def replace(self, dispatcher: Dispatcher, scheduler: Scheduler) -> None:
        """New requests go to `scheduler` from now on (one assignment, on the loop)."""
        self.dispatcher, self.scheduler = dispatcher, scheduler

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
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._auth])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/events", self.events)
        app.router.add_get("/status", self.status)
        for path in ROUTES:
            app.router.add_post(path, self.generate)
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
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self.keys and request.path != "/health":
            key = self._key_for(request)
            if key is None:
                if request.method == "POST":
                    self.access_log.request(request.remote, "-", "-", None, 401, None, None,
                                            None, None, 0.0)
                return _json_reply(Reply(401, error_body(
                    "a valid API key is required (Authorization: Bearer KEY)",
                    "authentication_error", "invalid_api_key",
                )))
            request["api_key"] = key
        result: web.StreamResponse = await handler(request)
        return result

    # -- routes --------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        del request
        return web.json_response({
            "status": "ok",
            "profile": self.scheduler.profile.name,
            "in_flight": self.scheduler.in_flight(),
            "uptime_s": round(time.time() - self.started, 1),
        })

    async def models(self, request: web.Request) -> web.Response:
        del request
        return web.json_response({"object": "list", "data": self.dispatcher.models()})

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
        async with self.scheduler.events.subscribe() as queue:
            for event in list(self.scheduler.events.recent):
                await response.write(_sse(event.to_json()))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15.0)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(_sse(event.to_json()))

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """One request: answered, and its line written to the request log."""
        started = time.perf_counter()
        line: dict[str, Any] = {"client": "-", "model": "-", "status": 499, "outcome": None}
        try:
            response = await self._generate(request, line)
            line["status"] = response.status
            return response
        finally:
            outcome = line["outcome"]
            self.access_log.request(
                request.remote, line["client"], line["model"],
                outcome.backend.name if outcome and outcome.backend else None,
                line["status"],
                outcome.queue_wait_s if outcome else None,
                outcome.load_wait_s if outcome else None,
                outcome.tokens_in if outcome else None,
                outcome.tokens_out if outcome else None,
                time.perf_counter() - started,
            )

    async def _generate(self, request: web.Request, line: dict[str, Any]) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _json_reply(
                Reply(400, error_body("the body is not JSON", "invalid_request_error"))
            )
        if not isinstance(body, dict):
            return _json_reply(Reply(400, error_body("the body must be a JSON object",
                                                      "invalid_request_error")))
        key: ApiKey | None = request.get("api_key")
        try:
            priority = parse_priority(
                request.headers.get(PRIORITY_HEADER) or body.get("priority"),
                default=key.priority if key else Priority.NORMAL,
            )
        except ValueError as exc:
            return _json_reply(Reply(400, error_body(str(exc), "invalid_request_error")))
        client = key.name if key else (request.headers.get("x-aither-client")
                                       or request.remote or "unknown")
        model = body.get("model")
        line["client"] = client
        line["model"] = model if isinstance(model, str) and model else "auto"
        effort = request.headers.get("x-aither-effort")
        if effort is not None and not (effort.isdigit() and 1 <= int(effort) <= 10):
            return _json_reply(Reply(400, error_body(
                "x-aither-effort must be a whole number from 1 to 10", "invalid_request_error"
            )))
        gateway_request = GatewayRequest(
            request.path, body, priority, client,
            effort=int(effort) if effort else None,
            local_only=request.headers.get("x-aither-local-only", "") in ("1", "true"),
            tier=request.headers.get("x-aither-tier") or None,
            backend=request.headers.get("x-aither-backend") or None,
            report=request.headers.get(REPORT_HEADER, "") in ("1", "true"),
        )
        sink = _Sink(request)
        reply = await self.dispatcher.handle(
            gateway_request, sink, lambda outcome: line.__setitem__("outcome", outcome)
        )
        if reply is not None:
            if sink.response is not None:  # a keep-alive began the stream
                await sink.write(b"data: " + reply.body + b"\n\n")
                return sink.response
            return _json_reply(reply)
        assert sink.response is not None
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
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    drain_s: float = DEFAULT_DRAIN_S
    keys: tuple[ApiKey, ...] = ()


def check_bind(options: ServeOptions) -> None:
    if not options.keys and not is_loopback_bind(options.host):
        raise UsageError(
            f"serving on {options.host} (not loopback) needs API keys: set ${KEYS_ENV} or pass "
            "--keys-file (one key of 16+ characters per line)"
        )


async def _follow(
    gateway: Gateway,
    stack: Stack,
    active: Callable[[str], Profile | None],
    retired: list[Scheduler],
    *,
    drain_s: float,
    on_change: Callable[[str], None],
) -> None:
    """Serve the active profile: when a switch made another one active, build its scheduler
    and send new requests there; the old one finishes what it has (its containers are the
    switch's business) and stops."""
    while True:
        await asyncio.sleep(REFRESH_S)
        try:
            profile = await asyncio.to_thread(active, gateway.scheduler.profile.name)
        except Exception as exc:
            gateway.scheduler.events.emit("follow_failed", None, str(exc))
            continue
        if profile is None or profile.name == gateway.scheduler.profile.name:
            continue
        control, running = await asyncio.to_thread(stack.running, profile)
        old = gateway.scheduler
        scheduler, dispatcher = stack.build(profile, control, running)
        gateway.replace(dispatcher, scheduler)
        old.events.emit(
            "profile_changed", None, f"now serving {profile.name} (was {old.profile.name})"
        )
        on_change(profile.name)
        retired.append(old)
        asyncio.get_running_loop().create_task(old.close(drain_s))


async def serve_forever(
    build: Callable[[], tuple[Gateway, Stack]],
    options: ServeOptions,
    on_ready: Callable[[str], None],
    state_file: Path | None,
    active: Callable[[str], Profile | None] | None = None,
) -> int:
    """Build the scheduler on this loop, serve until SIGTERM or SIGINT, drain, and return the
    exit code. `active(current)` (blocking) gives the active profile when it is no longer
    `current`; None: serve the one built."""
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
    runner = web.AppRunner(gateway.app(), handler_cancellation=True, access_log=None)
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
    retired: list[Scheduler] = []
    url = f"http://{_url_host(options.host)}:{options.port}"

    def on_change(profile: str) -> None:
        if state_file is not None:
            _write_state(state_file, url, profile)

    follower = None
    if active is not None:
        follower = loop.create_task(_follow(
            gateway, stack, active, retired, drain_s=options.drain_s, on_change=on_change
        ))
    if state_file is not None:
        _write_state(state_file, url, scheduler.profile.name)
    on_ready(url)
    try:
        await stop.wait()
    finally:
        if follower is not None:
            follower.cancel()
        scheduler = gateway.scheduler
        scheduler.events.emit("draining", None, f"{scheduler.in_flight()} request(s) in flight")
        with contextlib.suppress(Exception):
            await site.stop()  # no new connections
        await asyncio.gather(*(s.close(options.drain_s) for s in [*retired, scheduler]))
        housekeeping.cancel()
        with contextlib.suppress(BaseException):
            await housekeeping
        await runner.cleanup()
        await gateway.dispatcher.flush()
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

    def running(self, profile: Profile) -> tuple[ServiceControl | None, set[str] | None]:
        """(the Docker control, the services running now); (None, None) without an engine.
        Blocking: call it in a worker thread once the loop runs."""
        from aitherctl.errors import AitherError
        from aitherctl.ops.scheduler import ServiceControl

        control = ServiceControl(self.connect, self.inventory, profile.name, self.upstream)
        try:
            return control, control.running_blocking()
        except AitherError:
            return None, None  # no Docker engine: services are taken as running

    def build(
        self, profile: Profile, control: ServiceControl | None, running: set[str] | None
    ) -> tuple[Scheduler, Dispatcher]:
        import psutil

        from aitherctl.adapters.backend_probe import BackendProbe, FailureMemory
        from aitherctl.adapters.chat import HttpClients
        from aitherctl.adapters.ledger import Ledger
        from aitherctl.core.routing import build_routing
        from aitherctl.ops.route import Router
        from aitherctl.ops.serve import memory_pools

        table = build_routing(profile)
        pools = memory_pools(profile, self.inventory(), psutil.virtual_memory().total)
        scheduler = Scheduler(profile, table, control, pools, events=self.events,
                              metrics=self.metrics, running=running)
        clients = HttpClients()
        router = Router(profile, table, clients=clients, probe=BackendProbe(clients),
                        memory=FailureMemory(), ledger=Ledger())
        dispatcher = Dispatcher(scheduler, router, self.upstream, observe=self.metrics.observe,
                                count=self.metrics.count_outcome)
        return scheduler, dispatcher


def build_gateway(
    profile: Profile,
    connect: Callable[[], DockerEngine],
    inventory: Callable[[], GpuInventory],
    *,
    keys: list[ApiKey],
    access_log: AccessLog | None = None,
) -> tuple[Gateway, Stack]:
    """Everything `serve` runs, built on the running event loop."""
    from aitherctl.adapters.upstream import Upstream

    stack = Stack(connect, inventory, Upstream(), PromMetrics(), EventLog())
    control, running = stack.running(profile)
    scheduler, dispatcher = stack.build(profile, control, running)
    return Gateway(dispatcher, scheduler, stack.metrics, keys, access_log), stack


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _write_state(path: Path, url: str, profile: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "profile": profile,
                               "engine": os.environ.get("DOCKER_HOST", "")}))
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
