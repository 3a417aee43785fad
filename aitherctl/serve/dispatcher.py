"""One request through `aitherctl serve`: which backends may answer, in which order, and the
answer passed back as it streams. The HTTP front-end (`aitherctl.serve.app`) parses and writes; the
decisions are here, and they are `aitherctl run`'s: the same Router chooses the tier (`auto`
scores the prompt's effort), applies the same skip rules, reserves the same worst case against
the shared daily budget and writes one ledger row per request.

Fallback happens before the first byte of an answer and never after: once text has reached the
client, a failure ends the answer there (a streamed `error` event) and the row says `partial`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from aitherctl.engines.facts import spare_connection_url
from aitherctl.errors import AitherError, NotFoundError
from aitherctl.routing.request_cost import RequestBound, output_limit, request_bound
from aitherctl.routing.router import REMEMBERED_FAILURES, Choice, RunOptions
from aitherctl.routing.table import Candidate, RouteContext, Tier, static_skip_reason
from aitherctl.serve import timeline
from aitherctl.serve.apis import (
    EXTRA,
    PASSTHROUGH,
    RESPONSES,
    TRANSCRIPTIONS,
    EventWatcher,
    FormFile,
    apis_of,
    chat_usage,
    incomplete_answer,
    not_served_reason,
    stream_error,
    translated,
    unbounded_reason,
)
from aitherctl.serve.apis import prompt_text as passthrough_prompt_text
from aitherctl.serve.errors import LoadFailed, QueueFull, SchedulerError
from aitherctl.serve.model import Priority
from aitherctl.serve.ollama_api import EMBED_ROUTES as OLLAMA_EMBED_ROUTES
from aitherctl.serve.ollama_api import ROUTES as OLLAMA_ROUTES
from aitherctl.serve.ollama_api import is_streaming
from aitherctl.serve.scheduler import EventLog, Lease, Scheduler
from aitherctl.serve.states import BackendState

if TYPE_CHECKING:
    from aitherctl.routing.ledger import LedgerRow
    from aitherctl.routing.router import Router
    from aitherctl.serve.upstream import Upstream, UpstreamResponse

KEY_NOT_SET = " is not set"  # the end of static_skip_reason's reason for a missing API key
UPSTREAM_CLOSE_WAIT_S = 1.0  # after the answer's end event, the server's close is waited this long
KEEPALIVE_AFTER_S = 1.0  # a streaming client waiting this long gets its first keep-alive comment
KEEPALIVE_EVERY_S = 5.0
# Endpoints' remembered failures (a file `run` writes too): while requests come, re-read this
# often in a thread, the requests using the copy in memory; a request finding the copy older
# than CONTEXT_STALE_S (the first one, one after a quiet spell) reads the file itself.
CONTEXT_FRESH_S = 1.0
CONTEXT_STALE_S = 1.5
CONTEXT_QUIET_S = 10.0  # no request for this long: the re-reading stops
LEDGER_BATCH_S = 0.2  # ledger rows are written together, at most this long after their request
# Hop-by-hop and recomputed headers never passed on from an upstream answer.
# `content-encoding` too: the upstream client decodes what a server compressed anyway.
_DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "server",
        "date",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "content-encoding",
    }
)
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
ROUTES = {
    CHAT: "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    **{route: api.upstream for route, api in PASSTHROUGH.items()},
    **dict.fromkeys(OLLAMA_ROUTES, "chat/completions"),
    **dict.fromkeys(OLLAMA_EMBED_ROUTES, "embeddings"),
    **{route: route.removeprefix("/v1/") for route in EXTRA},
}


_ID_PREFIX = uuid.uuid4().hex[:8]  # this process's; the counter makes each id unique
_ids = itertools.count(1)


def _new_id() -> str:
    """A unique id without a `uuid4` (an `os.urandom` call) per request."""
    return f"{next(_ids):x}{_ID_PREFIX}"


class Sink(Protocol):
    """Where the answer goes: the front-end's response to the client."""

    @property
    def started(self) -> bool: ...

    async def start(self, status: int, headers: dict[str, str], *, at_once: bool = False) -> None:
        """Begin the answer. Its head goes with the first write, or `at_once`."""

    async def write(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """One request to the gateway as parsed: its route and body, its priority and client, and
    what `aitherctl run` may ask with it (forced effort, tier or backend, local only, its
    report)."""

    route: str  # a key of ROUTES
    body: dict[str, Any]
    priority: Priority
    client: str
    request_id: str = field(default_factory=lambda: _new_id()[:12])
    effort: int | None = None  # forced (`run --effort`), for `auto`
    local_only: bool = False  # never leave the machine (`run --local-only`)
    # Without a limit in the body, send `routing.max_tokens` to every backend (`run` asks this
    # with `x-aither-max-tokens: profile`, as `run --direct` always sends it).
    profile_limit: bool = False
    # `aitherctl run`'s --tier and --backend, for `auto`: chosen by the same Router.choose as
    # `run --direct` (same candidates, same errors).
    tier: str | None = None
    backend: str | None = None
    # Send `run`'s report (REPORT_HEADER): the same document `run --direct --json` prints.
    report: bool = False
    # The client's headers an API needs passed on (`anthropic-version`), lower-case names.
    headers: dict[str, str] = field(default_factory=dict)
    # The file parts of a multipart request (a transcription's audio); `body` holds its fields.
    files: tuple[FormFile, ...] = ()

    @property
    def streaming(self) -> bool:
        return (
            is_streaming(self.route, self.body)
            and self.route != "/v1/embeddings"
            and self.route not in EXTRA
            and self.route not in OLLAMA_EMBED_ROUTES
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer the front-end sends whole (errors, non-streamed answers)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """How one gateway request went, filled in as it goes: the backend that answered, every
    attempt and its timings, tokens, waits and cost, and why it failed when it did."""

    backend: Candidate | None = None
    outcome: str = "failed"
    attempts: list[tuple[str, str, str | None]] = field(default_factory=list)
    tokens_in: int | None = None
    tokens_out: int | None = None
    ttft_s: float | None = None
    queue_wait_s: float | None = None
    load_wait_s: float | None = None
    cost_usd: float = 0.0
    all_full: bool = True  # every candidate was skipped for a full queue
    retry_after_s: int = 1
    # The budget reservations of this request's attempts; its ledger row replaces them.
    run_id: str = field(default_factory=_new_id)
    unsupported: int = 0  # attempts whose backend answered 501: it does not serve the route
    # Per index into `attempts`: (time to first text, time the attempt took), when sent.
    timings: dict[int, tuple[float | None, float]] = field(default_factory=dict)
    # Why a backend that speaks only chat completions could not take the request (a field
    # with no translation): a 400 when no backend answered.
    untranslatable: str | None = None
    # The service whose server refused the last attempt's connection, and when (its container
    # may have died since serve last read what Docker runs).
    refused: tuple[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """What the `model` field named, resolved: the candidates in order, whether a full queue
    overflows to the next one, and the tier / effort when they were chosen."""

    candidates: tuple[Candidate, ...]
    overflow: bool
    tier: Tier | None = None
    effort: int | None = None
    effort_reasons: tuple[str, ...] = ()
    choice: Choice | None = None  # Router.choose's decision, for `auto`


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """The OpenAI error shape, so clients show the message."""
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


def prompt_text(route: str, body: dict[str, Any]) -> tuple[str, str | None]:
    """(the request's last user text, its system text) for the effort score."""
    if route in PASSTHROUGH:
        return passthrough_prompt_text(route, body)
    if route == "/api/generate":
        system = body.get("system")
        return str(body.get("prompt") or ""), (system if isinstance(system, str) else None)
    if route == "/v1/completions":
        prompt = body.get("prompt", "")
        return (prompt if isinstance(prompt, str) else " ".join(map(str, prompt))), None
    if route in (EMBEDDINGS, *OLLAMA_EMBED_ROUTES):
        value = body.get("input", body.get("prompt", ""))
        return (value if isinstance(value, str) else ""), None
    user, system = "", None
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        text = _content_text(message.get("content"))
        if message.get("role") == "system" and system is None:
            system = text
        elif message.get("role") == "user":
            user = text
    return user, system


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class Dispatcher:
    """Routes each request through the scheduler. Lives on the scheduler's event loop."""

    def __init__(
        self,
        scheduler: Scheduler,
        router: Router,
        upstream: Upstream,
        *,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
        observe: Callable[[str, str, float], None] | None = None,
        count: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.router = router
        self.upstream = upstream
        self.env = os.environ if env is None else env
        self.clock = clock
        self.wall_clock = wall_clock
        self.observe = observe or (lambda _n, _b, _s: None)
        self.count = count or (lambda _n, _b, _o: None)
        self._rows: list[tuple[LedgerRow, str]] = []
        self._writer: asyncio.Task[None] | None = None
        # The environment of a running process does not change: which keys are set, once.
        self._env_keys = frozenset(k for k, v in self.env.items() if v)
        self._remembered: tuple[float, dict[str, str]] | None = None
        self._rereading: asyncio.Task[None] | None = None
        self._last_context = 0.0
        table = router.table
        self._endpoints = [c for c in table.backends.values() if c.origin == "endpoint"]
        self.names: dict[str, str] = {}  # what a client may send as `model` -> backend name
        for name, candidate in table.backends.items():
            if scheduler.routable(name):
                self.names[name] = name
                self.names.setdefault(candidate.model, name)

    # -- the model list --------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """`GET /v1/models`: from the profile alone, never loading anything."""
        created = int(self.wall_clock())
        entries = []
        seen = set()
        for name, backend in self.names.items():
            if name in seen:
                continue
            seen.add(name)
            state = self.scheduler.backends[backend].state.value
            service = self.router.profile.services.get(backend)
            apis = apis_of(
                self.router.table.backends[backend].engine, service.args if service else ()
            )
            aither: dict[str, Any] = {
                "kind": "backend",
                "backend": backend,
                "state": state,
                "apis": apis.apis,
            }
            if apis.translated:
                aither["apis_translated"] = apis.translated
            if apis.tried:
                aither["apis_tried"] = apis.tried
            key_env = self.router.table.backends[backend].api_key_env
            if key_env and key_env not in self._env_keys:
                aither["state"] = "unavailable"
                aither["reason"] = f"${key_env} is not set where `aitherctl serve` runs"
            entries.append(
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "aitherctl",
                    "aither": aither,
                }
            )
        for tier in self.router.table.tiers:
            if tier.name not in seen:
                seen.add(tier.name)
                entries.append(
                    {
                        "id": tier.name,
                        "object": "model",
                        "created": created,
                        "owned_by": "aitherctl",
                        "aither": {"kind": "tier", "candidates": [c.name for c in tier.candidates]},
                    }
                )
        entries.append(
            {
                "id": "auto",
                "object": "model",
                "created": created,
                "owned_by": "aitherctl",
                "aither": {"kind": "auto"},
            }
        )
        return entries

    def known_names(self) -> list[str]:
        return sorted({*self.names, *(t.name for t in self.router.table.tiers), "auto"})

    # -- resolving -------------------------------------------------------------------------------

    def resolve(self, request: GatewayRequest) -> Route:
        model = request.body.get("model")
        if not isinstance(model, str) or not model:
            model = "auto"
        table = self.router.table
        if model in self.names:
            backend = self.names[model]
            return Route((table.backends[backend],), overflow=False)
        tiers = {tier.name: tier for tier in table.tiers}
        if model in tiers:
            tier = tiers[model]
            return Route(self._routable(tier.candidates), overflow=True, tier=tier)
        if model == "auto":
            prompt, system = prompt_text(request.route, request.body)
            choice = self.router.choose(
                RunOptions(
                    prompt=prompt or " ",
                    system=system,
                    effort=request.effort,
                    tier=request.tier,
                    backend=request.backend,
                )
            )
            return Route(
                self._routable(choice.candidates),
                overflow=request.backend is None,
                tier=choice.tier,
                effort=choice.effort.score,
                effort_reasons=choice.effort.reasons,
                choice=choice,
            )
        raise NotFoundError(
            f"unknown model {model!r}; this gateway serves: {', '.join(self.known_names())}"
        )

    def _routable(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        return tuple(c for c in candidates if self.scheduler.routable(c.name))

    # -- handling ---------------------------------------------------------------------------------

    async def handle(
        self,
        request: GatewayRequest,
        sink: Sink,
        done: Callable[[Outcome], None] | None = None,
    ) -> Reply | None:
        """Answer `request`: a Reply to send whole, or None when the answer was streamed into
        `sink`. `done` receives what happened (the request log's line), once the backends
        were tried."""
        started, started_wall = self.clock(), self.wall_clock()
        try:
            if self.router.table.classifier == "model" and request.body.get("model") in (
                None,
                "",
                "auto",
            ):
                # A local model grades the prompt (a blocking HTTP call): off the loop.
                route = await asyncio.to_thread(self.resolve, request)
            else:
                route = self.resolve(request)
        except NotFoundError as exc:
            return Reply(404, error_body(exc.message, "invalid_request_error", "model_not_found"))
        except AitherError as exc:
            return Reply(400, error_body(exc.message, "invalid_request_error"))
        if timeline.ON:
            timeline.mark("route_resolved")
        result = Outcome()
        reply: Reply | None = None
        try:
            reply = await self._try_candidates(request, route, sink, result, started)
            if request.report and route.choice is not None:
                reply = await self._send_report(request, route, result, started, sink, reply)
        finally:
            self._record(request, route, result, started, started_wall)
            if done is not None:
                done(result)
        return reply

    async def _send_report(  # noqa: PLR0917
        self,
        request: GatewayRequest,
        route: Route,
        result: Outcome,
        started: float,
        sink: Sink,
        reply: Reply | None,
    ) -> Reply | None:
        """`run`'s report: after a streamed answer an SSE comment (`: x-aither-report JSON`,
        which other clients ignore); in an error reply, its `aither_report` field."""
        report = await self.report(request, route, result, started)
        if reply is not None:
            try:
                payload = json.loads(reply.body)
            except ValueError:
                return reply
            if isinstance(payload, dict):
                payload["aither_report"] = report
                return Reply(reply.status, json.dumps(payload).encode(), reply.headers)
            return reply
        if sink.started:
            await sink.write(b": x-aither-report " + json.dumps(report).encode() + b"\n\n")
        return None

    async def report(
        self, request: GatewayRequest, route: Route, result: Outcome, started: float
    ) -> dict[str, Any]:
        """What `run --direct --json` prints (`RunResult.to_json()`, without the answer the
        client already has), from this request's decisions, plus `error` when it failed."""
        from aitherctl.routing.cost import budget_warning
        from aitherctl.routing.router import Attempt, RunResult
        from aitherctl.routing.run_report import (
            BUDGET,
            FAILED,
            attempt_lines,
            budget_message,
            no_backend_message,
            partial_message,
        )

        router = self.router
        choice = route.choice
        assert choice is not None
        models = {name: c.model for name, c in router.table.backends.items()}
        timings = dict(result.timings)
        attempts = tuple(
            Attempt(name, models.get(name, "?"), what, why, *timings.get(index, (None, None)))
            for index, (name, what, why) in enumerate(result.attempts)
        )
        committed = await asyncio.to_thread(
            router.ledger.committed_since, router.day_start(), self.wall_clock()
        )
        spent = committed.spent_usd
        backend = result.backend
        run = RunResult(
            profile=router.profile.name,
            effort=choice.effort,
            tier=choice.tier.name,
            backend=backend.name if backend else None,
            model=backend.model if backend else None,
            answer="",
            outcome=result.outcome,
            attempts=attempts,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            ttft_s=result.ttft_s,
            total_s=self.clock() - started,
            cost_usd=result.cost_usd,
            spent_today_usd=spent,
            budget_daily_usd=router.budget.daily_usd,
            warning=budget_warning(router.budget, spent) if spent else None,
            # The limit the answer was sent with (the client's, else the profile's: _upstream_body).
            max_tokens=output_limit(request.body)
            or (router.table.default_max_tokens if request.profile_limit else None),
        )
        data = run.to_json()
        del data["answer"]
        data["queue_wait_s"] = _round(result.queue_wait_s)
        data["load_wait_s"] = _round(result.load_wait_s)
        lines = attempt_lines((a.backend, a.model, a.outcome, a.reason) for a in attempts)
        if result.outcome == "partial" and backend is not None:
            reason = next((a.reason for a in attempts if a.outcome == "partial"), None) or ""
            data["error"] = {
                "kind": FAILED,
                "detail": lines,
                "message": partial_message(backend.name, backend.model, reason),
            }
        elif result.outcome == "budget" and all(a.outcome == "skipped" for a in attempts):
            data["error"] = {
                "kind": BUDGET,
                "detail": lines,
                "message": budget_message(choice.tier.name, spent, router.budget.daily_usd),
            }
        elif result.outcome not in ("ok", "partial"):
            data["error"] = {
                "kind": FAILED,
                "detail": lines,
                "message": no_backend_message(choice.tier.name, len(attempts)),
            }
        return data

    async def _try_candidates(
        self,
        request: GatewayRequest,
        route: Route,
        sink: Sink,
        result: Outcome,
        started: float,
    ) -> Reply | None:
        ctx = self._context(request.local_only)
        self.scheduler.note_request(route.effort, request.request_id)
        for listed in route.candidates:
            candidate = self._live(listed)
            reason = self._node_skip_reason(candidate, route)
            if reason is None:
                # A node the client named and that has no instance yet is checked as it will
                # be once created (its address is the only thing it lacks).
                waits = candidate.origin == "node" and not candidate.base_url
                checked = replace(candidate, base_url="(being created)") if waits else candidate
                reason = static_skip_reason(checked, ctx)
            if (
                reason is None
                and route.overflow
                and not self.scheduler.queue_has_room(
                    candidate.name, _int_or_none(route.tier.max_queue if route.tier else None)
                )
            ):
                reason = "queue full: overflowing to the next candidate"
                result.attempts.append((candidate.name, "skipped", reason))
                self.scheduler.events.emit("overflowed", candidate.name, reason, request.request_id)
                continue
            unserved = (
                not_served_reason(candidate.engine, request.route, self._args(candidate))
                if reason is None
                else None
            )
            if unserved is not None:
                # Passed over, never started for it (count_tokens has no chat completions form;
                # rerank and score need an engine, and a llama.cpp its flag, that serve them).
                result.all_full = False
                result.unsupported += 1
                result.attempts.append((candidate.name, "unsupported", unserved))
                continue
            if reason is not None:
                result.all_full = False
                result.attempts.append((candidate.name, "skipped", reason))
                continue
            result.all_full = False
            for again in (False, True):
                began, count = self.clock(), len(result.attempts)
                try:
                    answer = await self._attempt(request, route, candidate, sink, result, started)
                finally:
                    if len(result.attempts) > count and result.attempts[-1][1] != "skipped":
                        ttft = (
                            result.ttft_s - (began - started) if result.ttft_s is not None else None
                        )
                        result.timings[len(result.attempts) - 1] = (ttft, self.clock() - began)
                if answer is not None or result.outcome in ("ok", "partial"):
                    return answer
                refused, result.refused = result.refused, None
                # Its server refused the connection and no other candidate is left to take the
                # request: a container that died since serve last read what Docker runs is
                # started for it, as for the next request. (With a candidate left, the request
                # goes there at once, as before: starting this one would keep it waiting.)
                if (
                    again
                    or candidate is not route.candidates[-1]
                    or refused is None
                    or refused[0] != candidate.name
                    or not await self.scheduler.recheck(candidate.name, refused[1])
                ):
                    break
        return await self._no_backend(request, route, sink, result)

    def _live(self, candidate: Candidate) -> Candidate:
        """A rented node's candidate as the scheduler knows it now: with its instance's
        address and key while one runs, without (skipped) while none does."""
        if candidate.origin != "node":
            return candidate
        backend = self.scheduler.backends.get(candidate.name)
        return backend.candidate if backend is not None else candidate

    def _node_skip_reason(self, candidate: Candidate, route: Route) -> str | None:
        """None for a node with a running instance, and for one the client named (it waits
        while the node is created); else why it is passed over (as a stopped service is)."""
        if candidate.origin != "node" or candidate.base_url or not route.overflow:
            return None
        backend = self.scheduler.backends.get(candidate.name)
        if backend is not None and backend.state is BackendState.LOADING:
            return "cloud node is being created (used once its engine answers)"
        return "cloud node has no running instance"

    def _args(self, candidate: Candidate) -> tuple[str, ...] | None:
        """A service's command-line arguments; None for an endpoint."""
        if candidate.origin != "service":
            return None
        service = self.router.profile.services.get(candidate.name)
        return service.args if service is not None else None

    async def _attempt(  # noqa: PLR0917 - one request's life, in order
        self,
        request: GatewayRequest,
        route: Route,
        candidate: Candidate,
        sink: Sink,
        result: Outcome,
        started: float,
    ) -> Reply | None:
        from aitherctl.serve.translate import Untranslatable

        router = self.router
        if request.route in OLLAMA_ROUTES:
            from aitherctl.serve.ollama_api import load_request

            what = load_request(request.route, request.body)
            if what is not None:
                return await self._load_only(request, route, candidate, result, what)
        via_chat = translated(candidate.engine, request.route)
        sent_route = CHAT if via_chat else request.route
        if request.route in OLLAMA_EMBED_ROUTES:
            sent_route = EMBEDDINGS
        try:
            wire, usage_added = self._upstream_body(request, candidate, via_chat)
        except Untranslatable as exc:
            result.untranslatable = f"{candidate.name} speaks only chat completions: {exc.message}"
            result.attempts.append((candidate.name, "skipped", exc.message))
            return None
        priced = candidate.price is not None and not candidate.price.is_free
        # Only a priced backend needs the bound (walking a long chat costs time on the loop).
        bound = request_bound(sent_route, wire) if priced else RequestBound(0, 0)
        unbounded = unbounded_reason(sent_route, wire) if priced else None
        if unbounded is not None:
            result.attempts.append((candidate.name, "skipped", unbounded))
            result.outcome = "budget"
            return None
        worst = bound.cost_usd(candidate.price)
        reservation: int | None = None
        if worst > 0:
            timeout = route.tier.timeout_s if route.tier else 60.0
            reservation, refusal = await asyncio.to_thread(
                router.reserve, result.run_id, candidate, worst, timeout
            )
            if refusal:
                result.attempts.append((candidate.name, "skipped", refusal))
                result.outcome = "budget"
                return None
        if timeline.ON:
            timeline.mark("cost_bound_reserved")
        keepalive: _KeepAlive | None = None
        lease: Lease | None = self.scheduler.try_acquire(candidate.name)
        response: UpstreamResponse | None = None
        billable = False
        try:
            try:
                if lease is None:
                    # It must wait (a queue, a load): a streaming client hears from us meanwhile.
                    # (Not for Ollama's NDJSON, which has no comment lines.)
                    waits = request.streaming and request.route not in OLLAMA_ROUTES
                    keepalive = (
                        _KeepAlive(sink, self.scheduler.events, candidate.name) if waits else None
                    )
                    lease = await self.scheduler.acquire(
                        candidate.name, request.priority, request.request_id
                    )
            except QueueFull as exc:
                result.attempts.append((candidate.name, "queue_full", exc.message))
                result.retry_after_s = exc.retry_after_s
                if not route.overflow:  # its one backend is full: 429, not 503
                    result.all_full = True
                return None
            except (LoadFailed, SchedulerError) as exc:
                result.attempts.append((candidate.name, "error", exc.message))
                self.scheduler.events.emit(
                    "fell_back", candidate.name, exc.message, request.request_id
                )
                return None
            if timeline.ON:
                timeline.mark("admitted")
            result.queue_wait_s, result.load_wait_s = lease.queue_wait_s, lease.load_wait_s
            candidate = self._live(candidate)  # a node created while the request waited
            if candidate.origin == "node" and not candidate.base_url:
                result.attempts.append((candidate.name, "error", "its instance is gone"))
                return None
            self.observe("queue_wait_seconds", candidate.name, lease.queue_wait_s)
            if lease.load_wait_s:
                self.observe("load_wait_seconds", candidate.name, lease.load_wait_s)
            if request.route == TRANSCRIPTIONS:
                from aitherctl.serve.apis import encode_multipart

                body, content_type = encode_multipart(wire, request.files)
            else:
                body, content_type = json.dumps(wire).encode(), "application/json"
            headers = {"Content-Type": content_type}
            if candidate.api_key_env:
                headers["Authorization"] = f"Bearer {self.env.get(candidate.api_key_env, '')}"
            elif candidate.api_key:  # a rented node's generated key (never logged)
                headers["Authorization"] = f"Bearer {candidate.api_key}"
            if request.streaming:
                headers["Accept"] = "text/event-stream"
            api = None if via_chat else PASSTHROUGH.get(request.route)
            if api is not None:
                headers.update(
                    (name, request.headers[name])
                    for name in api.forwarded_headers
                    if name in request.headers
                )
            from aitherctl.serve.upstream import UpstreamError

            timeout_s = route.tier.timeout_s if route.tier else 600.0
            if timeline.ON:
                timeline.mark("upstream_body_built")
            try:
                billable = True
                response = await self.upstream.open(
                    candidate.base_url + "/" + ROUTES[sent_route],
                    body,
                    headers,
                    connect_timeout_s=candidate.connect_timeout_s,
                    read_timeout_s=timeout_s,
                )
            except UpstreamError as exc:
                billable = exc.status is not None and exc.status < 400
                unsupported = False
                result.attempts.append((candidate.name, "error", exc.message))
                if exc.status == HTTPStatus.NOT_IMPLEMENTED or (
                    exc.status == HTTPStatus.NOT_FOUND
                    and (request.route in PASSTHROUGH or request.route in EXTRA)
                ):  # (a translated request too: a backend without chat completions)
                    # It lacks this route (llama.cpp's embeddings without --embeddings): says
                    # nothing about the backend's health.
                    result.unsupported += 1
                    unsupported = True
                elif candidate.origin == "endpoint" and exc.kind in REMEMBERED_FAILURES:
                    await asyncio.to_thread(router.memory.remember, candidate, exc.message)
                elif candidate.origin == "service" and exc.kind == "refused":
                    result.refused = (candidate.name, self.scheduler.clock())
                self.scheduler.events.emit(
                    "fell_back", candidate.name, exc.message, request.request_id
                )
                if (
                    exc.status is not None
                    and 400 <= exc.status < 500
                    and exc.status != 429
                    and not unsupported
                ):
                    # The request itself is wrong: another backend would refuse it too.
                    result.outcome = "failed"
                    return Reply(exc.status, exc.body or error_body(exc.message, "upstream"))
                return None
            if keepalive is not None:
                await keepalive.stop()
            reply = await self._relay(
                request,
                route,
                candidate,
                response,
                sink,
                result,
                started,
                usage_added,
                lease,
                via_chat,
                wire,
            )
            self.scheduler.events.emit("served", candidate.name, result.outcome, request.request_id)
            return reply
        finally:
            if keepalive is not None:
                await keepalive.stop()
            if response is not None:
                response.close()
            if lease is not None:
                self.scheduler.release(lease)
            if reservation is not None:
                cost = (
                    _cost(bound, candidate, result)
                    if (result.outcome in ("ok", "partial"))
                    else (worst if billable else 0.0)
                )
                result.cost_usd += cost
                await _quietly(asyncio.to_thread(router.ledger.settle, reservation, cost))

    async def _load_only(
        self,
        request: GatewayRequest,
        route: Route,
        candidate: Candidate,
        result: Outcome,
        what: str,
    ) -> Reply | None:
        """Ollama's load request: the backend is brought up through the scheduler as for any
        request (queued by priority, started on demand), and the answer says it is loaded.
        An unload is answered at once: the scheduler decides what stays loaded."""
        from aitherctl.serve.ollama_api import load_answer

        if what == "load":
            lease = self.scheduler.try_acquire(candidate.name)
            try:
                if lease is None:
                    lease = await self.scheduler.acquire(
                        candidate.name, request.priority, request.request_id
                    )
            except QueueFull as exc:
                result.attempts.append((candidate.name, "queue_full", exc.message))
                result.retry_after_s = exc.retry_after_s
                result.all_full = not route.overflow
                return None
            except (LoadFailed, SchedulerError) as exc:
                result.attempts.append((candidate.name, "error", exc.message))
                return None
            result.queue_wait_s, result.load_wait_s = lease.queue_wait_s, lease.load_wait_s
            self.scheduler.release(lease)
        result.all_full = False
        _completed(result, candidate)
        return Reply(
            200,
            load_answer(request.route, request.body, what),
            {"Content-Type": "application/json", "x-aither-backend": candidate.name},
        )

    def _upstream_body(
        self, request: GatewayRequest, candidate: Candidate, via_chat: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """The client's body for this backend: its model name, no `priority`, the endpoint's
        max-tokens field and temperature rule, usage asked for when streaming (the ledger
        needs it; the extra chunk is not passed on unless the client asked). Without a limit
        from the client, `routing.max_tokens` goes to a priced backend (its worst case must be
        bounded) and, for `run`, to every backend (as `run --direct` sends it). `via_chat`: a
        Responses or Messages body translated to chat completions (raises `Untranslatable`)."""
        if request.route in OLLAMA_EMBED_ROUTES:
            from aitherctl.serve.ollama_api import to_embeddings

            body = to_embeddings(request.route, request.body)
            body["model"] = candidate.model
            return body, False
        if via_chat:
            from aitherctl.serve import ollama_api, translate

            if request.route in OLLAMA_ROUTES:
                body = ollama_api.to_chat(request.route, request.body)
            else:
                body = translate.to_chat(request.route, request.body)
            route = CHAT
        else:
            body = dict(request.body)
            route = request.route
        body.pop("priority", None)
        body["model"] = candidate.model
        api = PASSTHROUGH.get(route)
        if route in EXTRA:  # nothing generated: no output limit, no sampling rule
            return body, False
        field_name = (
            candidate.max_tokens_field
            if route == CHAT
            else (api.limit_field or "")
            if api is not None
            else "max_tokens"
        )
        if field_name == "max_completion_tokens" and "max_tokens" in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
        priced = candidate.price is not None and not candidate.price.is_free
        if (
            request.route != "/v1/embeddings"
            and field_name
            and output_limit(body) is None
            and (priced or request.profile_limit)
        ):
            body[field_name] = self.router.table.default_max_tokens
        if candidate.temperature == "omit":
            body.pop("temperature", None)
        elif not isinstance(candidate.temperature, str):
            body["temperature"] = candidate.temperature
        usage_added = False
        if request.streaming and api is None:  # the other APIs report usage in their events
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                body["stream_options"] = {**(options or {}), "include_usage": True}
                usage_added = True
        return body, usage_added

    async def _relay(  # noqa: PLR0917
        self,
        request: GatewayRequest,
        route: Route,
        candidate: Candidate,
        response: UpstreamResponse,
        sink: Sink,
        result: Outcome,
        started: float,
        usage_added: bool,
        lease: Lease,
        via_chat: bool = False,
        wire: dict[str, Any] | None = None,
    ) -> Reply | None:
        """`wire`: the body sent (its output limit)."""
        from aitherctl.serve import ollama_api
        from aitherctl.serve.translate_answers import BadAnswer, ChatStreamTranslator, from_chat
        from aitherctl.serve.upstream import UpstreamError

        headers = Dispatcher._answer_headers(route, candidate, lease)
        sent = wire.get("max_output_tokens") if wire is not None else None
        limit = sent if isinstance(sent, int) and not isinstance(sent, bool) else None
        for key, value in response.headers.items():
            if key.lower() not in _DROPPED_HEADERS and not key.lower().startswith("x-aither"):
                headers.setdefault(key, value)
        ollama = request.route in OLLAMA_ROUTES
        if ollama or request.route in OLLAMA_EMBED_ROUTES:
            for key in [k for k in headers if k.lower() == "content-type"]:
                del headers[key]
            headers["Content-Type"] = (
                "application/x-ndjson" if request.streaming else "application/json"
            )
        if not request.streaming:
            try:
                data = await response.read()
            except UpstreamError as exc:
                result.attempts.append((candidate.name, "error", exc.message))
                return None
            if request.route == RESPONSES and not via_chat:
                data = incomplete_answer(data, limit)
            if request.route in OLLAMA_EMBED_ROUTES:
                _read_usage(data, result)
                try:
                    elapsed_ns = int((self.clock() - started) * 1e9)
                    data = ollama_api.from_embeddings(request.route, data, request.body, elapsed_ns)
                except BadAnswer as exc:
                    result.attempts.append((candidate.name, "error", str(exc)))
                    return None
            if via_chat:
                _read_usage(data, result)
                try:
                    if ollama:
                        elapsed_ns = int((self.clock() - started) * 1e9)
                        data = ollama_api.from_chat(request.route, data, request.body, elapsed_ns)
                    else:
                        data = from_chat(request.route, data, request.body)
                except BadAnswer as exc:
                    result.attempts.append((candidate.name, "error", str(exc)))
                    return None
            result.ttft_s = self.clock() - started
            result.backend, result.outcome = candidate, "ok"
            result.attempts.append((candidate.name, "ok", None))
            _read_usage(data, result)
            self.observe("ttft_seconds", candidate.name, result.ttft_s)
            return Reply(response.status, data, headers)
        splitter: _SseSplitter | EventWatcher | ChatStreamTranslator
        if ollama:
            splitter = ollama_api.OllamaStream(request.route, request.body)
        elif via_chat:
            splitter = ChatStreamTranslator(request.route, request.body)
        elif request.route in PASSTHROUGH:
            splitter = EventWatcher(request.route, limit)
        else:
            splitter = _SseSplitter(strip_usage=usage_added)
        head_sent = False
        spare_url = spare_connection_url(candidate.engine, candidate.base_url, candidate.health_url)
        if not sink.started and candidate is route.candidates[-1]:
            # No other candidate could take over before the first token: the head goes now,
            # while the backend computes it (the client reads the head meanwhile, as through a
            # plain pass-through), not on the first token's way (about 0.3 ms of it at one
            # client, bench/timeline_gateway.py). A failure before the first token is then an
            # error event, as after a keep-alive.
            await sink.start(200, headers, at_once=True)
            head_sent = True
            if isinstance(splitter, ChatStreamTranslator):
                # The opening events too: the client reads them meanwhile, and the first
                # token's way carries only its own events.
                opening = splitter.preamble()
                if opening:
                    await sink.write(opening)
        try:
            async for chunk in response.chunks():
                if timeline.ON:
                    timeline.mark_nth("upstream_chunk")
                splitter.watch_done(chunk)
                out = splitter.feed(chunk)
                if splitter.usage is not None:
                    _usage_into(splitter.usage, result)
                if not out:
                    continue
                if result.ttft_s is None:
                    result.ttft_s = self.clock() - started
                    self.observe("ttft_seconds", candidate.name, result.ttft_s)
                    if not sink.started:
                        await sink.start(200, headers)
                    elif not head_sent:  # a keep-alive began the stream: headers as comments
                        await sink.write(_header_comments(headers))
                    result.backend = candidate
                if splitter.done and spare_url:
                    # The server closes this connection after this answer: the next request to
                    # it finds one open instead of connecting on its first token's way. Asked
                    # before the client has the end, so a client's next request finds it begun.
                    self.upstream.open_spare(spare_url)
                    spare_url = None
                await sink.write(out)
                if splitter.done and not splitter.buffer:
                    # The client has the whole answer: it is complete now, whatever happens
                    # next (a client that leaves at `[DONE]` cancels us before the upstream
                    # closes its end; that is not a cancelled request).
                    _completed(result, candidate)
                    # The server sends its last bytes and finishes the request right after
                    # this event: wait (briefly) for it to close, so the backend is not slept or
                    # evicted while its own count still holds this request.
                    await _until_closed(response, UPSTREAM_CLOSE_WAIT_S)
                    return None
            tail = splitter.flush()
            if tail:
                if not sink.started:
                    await sink.start(200, headers)
                await sink.write(tail)
            if not splitter.done:
                # A connection closed before the last event (`data: [DONE]` for chat) is a
                # broken answer, not an end.
                api = PASSTHROUGH.get(request.route)
                last = api.end_events[0].decode() if api and api.end_events else "[DONE]"
                raise UpstreamError("bad_stream", f"stream ended without {last}")
        except UpstreamError as exc:
            if result.ttft_s is None:
                result.attempts.append((candidate.name, "error", exc.message))
                return None
            result.attempts.append((candidate.name, "partial", exc.message))
            result.backend, result.outcome = candidate, "partial"
            message = f"{candidate.name} failed after the answer had started: {exc.message}"
            await sink.write(stream_error(request.route, error_body(message, "upstream_error")))
            return None
        if result.ttft_s is None:
            result.ttft_s = self.clock() - started
            if not sink.started:
                await sink.start(200, headers)
        _completed(result, candidate)
        return None

    @staticmethod
    def _answer_headers(route: Route, candidate: Candidate, lease: Lease) -> dict[str, str]:
        headers = {
            "x-aither-backend": candidate.name,
            "x-aither-queue-wait": f"{lease.queue_wait_s:.3f}",
            "x-aither-load-wait": f"{lease.load_wait_s:.3f}",
        }
        if route.tier is not None:
            headers["x-aither-tier"] = route.tier.name
        if route.effort is not None:
            headers["x-aither-effort"] = str(route.effort)
        if candidate.price is not None and not candidate.price.is_free:
            # Per million tokens in/out: a client (`run`) can price the usage it is sent.
            headers["x-aither-price"] = (
                f"{candidate.price.input_usd_per_mtok}/{candidate.price.output_usd_per_mtok}"
            )
        return headers

    async def _no_backend(
        self, request: GatewayRequest, route: Route, sink: Sink, result: Outcome
    ) -> Reply | None:
        """The truest status for a request no backend answered: 402 (budget), 429 (queues
        full), 401 (only API keys missing), 501 (no backend serves the route), else 503."""
        del route
        lines = (
            "; ".join(
                f"{name} {what}" + (f": {why}" if why else "")
                for name, what, why in result.attempts
            )
            or "no candidate"
        )
        if result.untranslatable is not None and all(
            a[1] in ("skipped", "unsupported") for a in result.attempts
        ):
            status, kind, message = 400, "invalid_request_error", result.untranslatable
            result.outcome = "failed"
        elif result.outcome == "budget" and all(a[1] == "skipped" for a in result.attempts):
            status, kind, message = (
                402,
                "budget_exceeded",
                (f"the daily budget forbids this request ({lines})"),
            )
        elif result.all_full and result.attempts:
            status, kind, message = 429, "rate_limit_error", f"queue full ({lines})"
            result.outcome = "rejected"
        elif result.attempts and all(
            what == "skipped" and why is not None and why.endswith(KEY_NOT_SET)
            for _name, what, why in result.attempts
        ):
            # Only keys missing where serve runs: a 401 (which clients do not retry), not a 503.
            status, kind, message = 401, "authentication_error", f"no backend answered ({lines})"
            result.outcome = "failed"
        elif result.unsupported and result.unsupported == sum(
            1 for _name, what, _why in result.attempts if what != "skipped"
        ):
            status, kind, message = (
                501,
                "not_implemented",
                (f"no backend here serves {request.route} ({lines})"),
            )
            result.outcome = "failed"
        else:
            status, kind, message = 503, "service_unavailable", f"no backend answered ({lines})"
            result.outcome = "failed"
        if sink.started:  # a keep-alive already began the stream: end it with the error
            await sink.write(stream_error(request.route, error_body(message, kind)))
            return None
        headers = {"Retry-After": str(result.retry_after_s)} if status == 429 else {}
        return Reply(status, error_body(message, kind), headers)

    def _context(self, local_only: bool) -> RouteContext:
        """As `run`'s, except that services are never skipped for not running (the scheduler
        starts them) and only endpoints' recent failures count (it knows its services')."""
        now = self._last_context = self.clock()
        if self._remembered is None or now - self._remembered[0] > CONTEXT_STALE_S:
            self._remembered = (now, self._read_remembered())
        if self._rereading is None and self._endpoints:
            # Later requests use the copy, kept fresh off their way to the first token (the
            # file read on the loop took about 0.09 ms of it, bench/timeline_gateway.py).
            self._rereading = asyncio.get_running_loop().create_task(self._keep_remembered())
        return RouteContext(
            running=None,
            env_keys=self._env_keys,
            local_only=local_only,
            remembered_failures=self._remembered[1],
        )

    def _read_remembered(self) -> dict[str, str]:
        if not self._endpoints:
            return {}
        return dict(self.router.memory.recent(self._endpoints, self.router.table.health_memory_s))

    async def _keep_remembered(self) -> None:
        """Re-read the remembered failures every CONTEXT_FRESH_S, in a thread, until no
        request has come for CONTEXT_QUIET_S."""
        try:
            while self.clock() - self._last_context < CONTEXT_QUIET_S:
                await asyncio.sleep(CONTEXT_FRESH_S)
                began = self.clock()
                self._remembered = (began, await asyncio.to_thread(self._read_remembered))
        except Exception:  # a request reads the file itself when the copy is stale
            pass
        finally:
            self._rereading = None

    def _record(
        self,
        request: GatewayRequest,
        route: Route,
        result: Outcome,
        started: float,
        started_wall: float,
    ) -> None:
        """One ledger row per request, written off the loop (and even when the client left)."""
        from aitherctl.routing.ledger import LedgerRow, prompt_hash

        prompt, system = prompt_text(request.route, request.body)
        if result.outcome not in ("ok", "partial", "budget", "rejected") and not result.attempts:
            result.outcome = "cancelled"
        last = result.backend
        if last is None and result.attempts:
            last = self.router.table.backends.get(result.attempts[-1][0])
        total = self.clock() - started
        outcome = result.outcome
        row = LedgerRow(
            ts=started_wall,
            profile=self.router.profile.name,
            effort=route.effort,
            tier=route.tier.name if route.tier else None,
            backend=last.name if last else None,
            model=last.model if last else None,
            local=last.local if last else None,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            cost_usd=result.cost_usd,
            ttft_s=result.ttft_s,
            total_s=total,
            outcome=outcome,
            attempts=len(result.attempts),
            prompt_sha256=prompt_hash(system, prompt),
            prompt=prompt if self.router.store_prompts else None,
            client=request.client,
            priority=request.priority.label,
            queue_wait_s=result.queue_wait_s,
            load_wait_s=result.load_wait_s,
        )
        backend = last.name if last else "none"
        self.count("requests", backend, outcome)
        self.observe("request_seconds", backend, total)
        self._rows.append((row, result.run_id))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_rows())

    async def _write_rows(self) -> None:
        """Rows go to the ledger in batches (one transaction each), off the loop: under load
        one fsync serves many requests."""
        while self._rows:
            await asyncio.sleep(LEDGER_BATCH_S)
            rows, self._rows = self._rows, []
            await _quietly(asyncio.to_thread(self.router.ledger.record_many, rows))

    async def flush(self) -> None:
        """Wait for the ledger rows still being written (at shutdown)."""
        if self._rereading is not None:
            self._rereading.cancel()
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)


class _KeepAlive:
    """SSE comments to a streaming client while it waits (a queue, a load), so neither it nor
    a proxy times out. A write is never cut in half: `stop` lets the current one finish."""

    def __init__(self, sink: Sink, events: EventLog | None = None, backend: str = "") -> None:
        self.sink = sink
        self.events = events
        self.backend = backend
        self.stopping = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        delay = KEEPALIVE_AFTER_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return
            if not self.sink.started:
                await self.sink.start(
                    200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                )
            await self.sink.write(self._comment())
            delay = KEEPALIVE_EVERY_S

    def _comment(self) -> bytes:
        """`: waiting for a backend`, or, while its start downloads the model first,
        `: downloading BACKEND FILE  DONE / TOTAL (P%)`."""
        download = self.events.downloads.get(self.backend) if self.events else None
        if download is None:
            return b": waiting for a backend\n\n"
        return f": downloading {self.backend} {download.detail}\n\n".encode()

    async def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(Exception):
            await self.task


async def _until_closed(response: UpstreamResponse, within_s: float) -> None:
    """Read what is left of an answer the client already has whole, until the server closes it
    or `within_s` passes (whichever first; a read error ends it too)."""
    from aitherctl.serve.upstream import UpstreamError

    async def rest() -> None:
        async for _chunk in response.chunks():
            pass

    with contextlib.suppress(TimeoutError, UpstreamError):
        await asyncio.wait_for(rest(), within_s)


async def _quietly(awaitable: Awaitable[Any]) -> None:
    """Bookkeeping (the ledger) must never break or hang an answer."""
    with contextlib.suppress(Exception):
        await awaitable


def _header_comments(headers: dict[str, str]) -> bytes:
    """`: x-aither-backend NAME` lines (SSE comments, which clients ignore) for the headers a
    stream begun by a keep-alive could not carry."""
    lines = [f": {key} {value}\n" for key, value in headers.items() if key.startswith("x-aither")]
    return ("".join(lines) + "\n").encode()


def _cost(bound: RequestBound, candidate: Candidate, result: Outcome) -> float:
    """From the server's usage; what it did not report counts at its bound (never undercount)."""
    if candidate.price is None or candidate.price.is_free:
        return 0.0
    used_in = result.tokens_in if result.tokens_in is not None else bound.input_tokens
    used_out = result.tokens_out if result.tokens_out is not None else bound.output_tokens
    return candidate.price.cost_usd(used_in, used_out)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    return None


def _read_usage(data: bytes, result: Outcome) -> None:
    try:
        payload = json.loads(data)
    except ValueError:
        return
    if isinstance(payload, dict) and isinstance(payload.get("usage"), dict):
        _usage_into(payload["usage"], result)


def _usage_into(usage: dict[str, Any], result: Outcome) -> None:
    usage = chat_usage(usage)  # Responses' and Messages' field names, too
    prompt_tokens = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if isinstance(prompt_tokens, int):
        result.tokens_in = prompt_tokens
    if isinstance(completion, int):
        result.tokens_out = completion


def _completed(result: Outcome, candidate: Candidate) -> None:
    result.backend, result.outcome = candidate, "ok"
    result.attempts.append((candidate.name, "ok", None))


# The stream's end: a `data: [DONE]` line of its own (a line starts after a newline byte, which
# JSON text never holds raw, so `[DONE]` inside the model's text never matches).
_DONE_EVENT = re.compile(rb"\ndata: ?\[DONE\](?:\r?\n|$)")


class _SseSplitter:
    """Passes an SSE stream through in the chunks it arrives in, reading (and, when the
    gateway added the request for it, dropping) the final usage-only event."""

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.buffer = b""
        self.usage: dict[str, Any] | None = None
        self.done = False  # the `data: [DONE]` event went by
        self._tail = b"\n"  # the stream's start counts as a line start

    def watch_done(self, chunk: bytes) -> None:
        if self.done:
            return
        data = self._tail + chunk
        if b"[DONE]" in data:
            self.done = _DONE_EVENT.search(data) is not None
        self._tail = data[-16:]

    def feed(self, chunk: bytes) -> bytes:
        if b'"usage"' not in chunk and not self.buffer:
            return chunk  # the hot path: nothing to look at
        data = self.buffer + chunk
        head, sep, rest = data.rpartition(b"\n\n")
        if not sep:
            self.buffer = data
            return b""
        self.buffer = rest
        out = []
        for event in (head + sep).split(b"\n\n"):
            if not event:
                continue
            if b'"usage"' in event and self._take_usage(event) and self.strip_usage:
                continue
            out.append(event + b"\n\n")
        return b"".join(out)

    def _take_usage(self, event: bytes) -> bool:
        """Read the usage of an event; True when the event is usage alone (no choices)."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                payload = json.loads(line[5:])
            except ValueError:
                return False
            if isinstance(payload, dict) and isinstance(payload.get("usage"), dict):
                self.usage = payload["usage"]
                return not payload.get("choices")
        return False

    def flush(self) -> bytes:
        data, self.buffer = self.buffer, b""
        return data
