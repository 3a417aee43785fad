"""`aitherctl run`: score the prompt, pick the tier, try its candidates in order, record the result.

Per candidate, in order, cheapest check first: the static reasons (not running, `--local-only`,
missing API key, failed recently), the budget (worst case against what is left today), the health
probe, the queue. Then the request: an error before the first token moves on to the next
candidate (and is remembered); an error after it stops the run with the partial answer, which is
never completed by another model. Every request ends as one ledger row.

The budget holds under concurrency: right before a priced request is sent, its worst case (prompt
bound + max_tokens at the endpoint's prices) is reserved in the ledger in one transaction that
also checks the cap; after it, the reservation is settled with the real cost (the server's
`usage`), or with the worst case when the request was sent but no usage came back. The cap is the
`budget.daily_usd` of the profile the run routes with (`--profile`, else the active profile,
else $AITHER_GPU_PROFILE: `select_profile_name`), against everything spent today on this ledger;
`aitherctl usage` picks the cap the same way.

`--explain` records nothing: no ledger row or reservation, no failure memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from aitherctl.errors import (
    AitherError,
    BackendFailedError,
    BudgetExceededError,
    ConfigError,
    UsageError,
)
from aitherctl.routing.cost import (
    Budget,
    budget_warning,
    check_budget,
    parse_budget,
)
from aitherctl.routing.effort import EffortScore, EffortScorer
from aitherctl.routing.request_cost import request_bound
from aitherctl.routing.run_report import (
    attempt_lines,
    budget_message,
    no_backend_message,
    partial_message,
    tokens_per_s,
)
from aitherctl.routing.table import (
    Candidate,
    RouteContext,
    RoutingTable,
    Tier,
    queue_skip_reason,
    static_skip_reason,
)

if TYPE_CHECKING:
    from aitherctl.docker.listing import ContainerSource
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.profiles.profile import Profile
    from aitherctl.routing.chat import HttpClients
    from aitherctl.routing.ledger import Ledger
    from aitherctl.routing.probes import BackendProbe, FailureMemory


# Failures that say something about the backend, not about this request: remembered so the next
# run skips it at once. A 4xx (a bad key, an unknown model, a prompt too long) is not.
REMEMBERED_FAILURES = frozenset({"refused", "timeout", "http_5xx", "http_429", "bad_stream"})
# A reservation whose run was killed stops counting after this long (or 10x the tier's
# per-read timeout when that is longer): long enough for any answer of max_tokens to stream.
RESERVATION_MIN_TTL_S = 600.0
# Tokens per second is only reported over a real decoding window: at least this many tokens
# after the first, spread over at least this long. A stream that arrives in one burst (a proxy
# that buffers, a cached answer) has no measurable rate.
RATE_MIN_TOKENS = 8
RATE_MIN_WINDOW_S = 0.2
CHAT_ROUTE = "/v1/chat/completions"


class StackView(Protocol):
    """Which of a profile's services have a running container; None when that is unknown."""

    def running_services(self, profile: str) -> frozenset[str] | None: ...


class UnknownStack:
    """No container state (no Docker engine): health probes decide."""

    def running_services(self, profile: str) -> frozenset[str] | None:  # noqa: ARG002
        return None


class ObservedStack:
    """Running services as Docker reports them (`aitherctl.switching.state.observe`).

    Matched by service name, not by the container's profile label: a switch keeps a container
    whose spec did not change, and that container still carries the old profile's label.
    """

    def __init__(self, running: frozenset[str]) -> None:
        self.running = running

    def running_services(self, profile: str) -> frozenset[str] | None:  # noqa: ARG002
        return self.running


def observe_stack(
    connect: Callable[[], ContainerSource],
) -> tuple[str | None, StackView, str | None]:
    """(active profile, running services, why Docker could not say)."""
    from aitherctl.switching.state import observe

    try:
        engine = connect()
        try:
            state = observe(engine, inspect=False)  # the labels and states say all `run` needs
        finally:
            engine.close()
    except AitherError as exc:
        return None, UnknownStack(), exc.message
    from aitherctl.switching.remembered_hosts import remembered_hosts, remembered_profile

    if remembered_hosts():
        # Services also run on other hosts: their health probes say what answers (reading
        # every engine over SSH would cost a second per host on each `run`).
        return state.active_profile or remembered_profile(), UnknownStack(), None
    return state.active_profile, ObservedStack(frozenset(i.service for i in state.running)), None


def select_profile_name(explicit: str | None, active: str | None) -> str | None:
    """The one rule for which profile `run` routes with and whose daily budget caps today's
    spending (`usage` shows the same): `--profile`, else the active profile, else
    $AITHER_GPU_PROFILE."""
    return explicit or active or os.environ.get("AITHER_GPU_PROFILE") or None


def resolve_profile(
    explicit: str | None,
    catalog: ProfileCatalog,
    connect: Callable[[], ContainerSource],
) -> tuple[Profile, StackView]:
    """The profile to route with (`select_profile_name`) and what Docker says is running.
    Without a Docker engine, a named profile still works: its services are then judged by their
    health probes alone."""
    active, stack, docker_problem = observe_stack(connect)
    name = select_profile_name(explicit, active)
    if not name:
        why = f" ({docker_problem})" if docker_problem else ""
        raise UsageError(
            "no active profile: run `aitherctl profile switch NAME`, pass --profile NAME or set "
            f"AITHER_GPU_PROFILE{why}"
        )
    return catalog.load(name), stack


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What one `run` (or one turn of `chat`) asks for: the prompt and earlier turns, the output
    limit and temperature, and an effort, tier or backend the user forces (`--effort`, `--tier`,
    `--backend`)."""

    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    effort: int | None = None
    tier: str | None = None
    backend: str | None = None
    local_only: bool = False
    history: tuple[tuple[str, str], ...] = ()  # `aitherctl chat`'s earlier turns: (role, text)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One candidate's fate: skipped (never sent), error (before any text), partial, ok."""

    backend: str
    model: str
    outcome: str
    reason: str | None = None
    ttft_s: float | None = None
    elapsed_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "outcome": self.outcome,
            "reason": self.reason,
            "ttft_s": _round(self.ttft_s),
            "elapsed_s": _round(self.elapsed_s),
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """The routing decision before anything is sent (what `--explain` prints)."""

    profile: str
    effort: EffortScore
    effort_forced: bool
    tier: Tier
    tier_forced: bool
    candidates: tuple[Candidate, ...]
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `--explain` says of one candidate: would it be tried, or why it is skipped."""

    candidate: Candidate
    usable: bool
    reason: str | None  # why it is skipped; None when it would be tried


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a `run` ended: the effort and tier, the backend that answered and its answer, every
    attempt, the tokens, timings and cost, and today's spending against the cap."""

    profile: str
    effort: EffortScore
    tier: str
    backend: str | None
    model: str | None
    answer: str
    outcome: str  # ok, partial, failed, budget
    attempts: tuple[Attempt, ...]
    tokens_in: int | None
    tokens_out: int | None
    ttft_s: float | None
    total_s: float
    cost_usd: float
    spent_today_usd: float
    budget_daily_usd: float
    warning: str | None = None
    last_token_s: float | None = None  # when the last text arrived, from the request's start
    # Why the answer ended (the API's `finish_reason`: `stop`, `length`, ...) and the output
    # limit it was sent with: an answer cut at the limit is said to be cut.
    finish_reason: str | None = None
    max_tokens: int | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Decoding speed: the tokens after the first over the time from the first to the last
        text, or None when that window is too short or too sparse to measure (a burst)."""
        return tokens_per_s(self.tokens_out, self.ttft_s, self.last_token_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "outcome": self.outcome,
            "profile": self.profile,
            "effort": {"score": self.effort.score, "reasons": list(self.effort.reasons)},
            "tier": self.tier,
            "backend": self.backend,
            "model": self.model,
            "attempts": [a.to_json() for a in self.attempts],
            "tokens": {"in": self.tokens_in, "out": self.tokens_out},
            "finish_reason": self.finish_reason,
            "max_tokens": self.max_tokens,
            "ttft_s": _round(self.ttft_s),
            "total_s": _round(self.total_s),
            "tokens_per_s": _round(self.tokens_per_s, 1),
            "cost_usd": round(self.cost_usd, 6),
            "budget": {
                "daily_usd": self.budget_daily_usd,
                "spent_today_usd": round(self.spent_today_usd, 6),
            },
            "warning": self.warning,
            # Through `aitherctl serve` (aitherctl/routing/gateway_client.py): the gateway's URL and
            # how long the request waited for its queue and for its model to load.
            "via": None,
            "queue_wait_s": None,
            "load_wait_s": None,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class _Run:
    """Mutable bookkeeping of one run."""

    attempts: list[Attempt] = field(default_factory=list)
    budget_refused: bool = False
    run_id: str = field(default_factory=lambda: os.urandom(16).hex())  # uuid imports platform
    cost_usd: float = 0.0  # what this run's attempts cost, settled in the ledger

    def skip(self, candidate: Candidate, reason: str) -> None:
        self.attempts.append(Attempt(candidate.name, candidate.model, "skipped", reason))


class Router:
    """Routes one prompt through a profile's table. Built with its I/O passed in."""

    def __init__(
        self,
        profile: Profile,
        table: RoutingTable,
        *,
        clients: HttpClients,
        probe: BackendProbe,
        memory: FailureMemory,
        ledger: Ledger,
        stack: StackView | None = None,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile
        self.table = table
        self.clients = clients
        self.probe = probe
        self.memory = memory
        self.ledger = ledger
        self.stack = stack or UnknownStack()
        self.env = os.environ if env is None else env
        self.clock = clock
        self.wall_clock = wall_clock
        try:
            self.budget: Budget = parse_budget(profile.budget or {})
        except ValueError as exc:
            raise ConfigError(str(exc), source=profile.source) from None
        ledger_section = profile.ledger or {}
        self.store_prompts = bool(
            isinstance(ledger_section, dict) and ledger_section.get("store_prompts", False)
        )

    # -- deciding ------------------------------------------------------------------------------

    def choose(self, options: RunOptions, scored: EffortScore | None = None) -> Choice:
        """The tier and candidates for `options`; `scored`: the prompt's effort, when it was
        scored already (`shared_first`)."""
        if options.effort is not None and not 1 <= options.effort <= 10:
            raise UsageError("--effort must be between 1 and 10")
        if options.effort is not None:
            effort = EffortScore(options.effort, float(options.effort), ("forced by --effort",))
        elif scored is not None:
            effort = scored
        else:
            effort = self.effort_scorer().score(options.prompt, options.system)
        tier = self.table.tier(options.tier) if options.tier else self.table.tier_for(effort.score)
        if options.backend:
            candidates: tuple[Candidate, ...] = (self.table.backend(options.backend),)
        else:
            candidates = tier.candidates
        max_tokens = options.max_tokens or self.table.default_max_tokens
        if max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        return Choice(
            profile=self.profile.name,
            effort=effort,
            effort_forced=options.effort is not None,
            tier=tier,
            tier_forced=options.tier is not None,
            candidates=candidates,
            max_tokens=max_tokens,
        )

    def shared_first(self, options: RunOptions) -> Candidate | None:
        """The candidate `run` tries first whatever the effort, when there is one: the first of
        every tier, with the same per-read timeout in every tier and no queue threshold. Then the
        prompt is sent before its effort is scored (the learned scorer's start-up, tens of
        milliseconds, overlaps the server's prompt processing); the score still picks the tier,
        its fallbacks and the ledger row. None when a choice is forced or a model grades."""
        if options.effort is not None or options.tier or options.backend:
            return None
        tiers = self.table.tiers
        if self.table.classifier == "model" or not tiers or not tiers[0].candidates:
            return None
        first = tiers[0].candidates[0]
        for tier in tiers:
            if (
                not tier.candidates
                or tier.candidates[0].name != first.name
                or tier.max_queue is not None
                or tier.timeout_s != tiers[0].timeout_s
            ):
                return None
        return first

    def effort_scorer(self) -> EffortScorer:
        """The profile's `EffortScorer`: the learned scorer, or with `routing.classifier: model`
        a free local model grading the prompt (aitherctl/routing/grader.py)."""
        # The scorer's loader (and its weights) only when a prompt is scored: not for --effort,
        # --tier or --backend, and for a shared first candidate after the prompt is sent.
        from aitherctl.routing.static_embedding import learned_scorer

        if self.table.classifier != "model":
            return learned_scorer()
        from aitherctl.routing.grader import ModelGradedScorer, pick_grader

        grader = pick_grader(self.table, self.stack.running_services(self.profile.name))
        return ModelGradedScorer(self.clients, grader, fallback=learned_scorer())

    def context(self, choice: Choice, options: RunOptions) -> RouteContext:
        return RouteContext(
            running=self.stack.running_services(self.profile.name),
            env_keys=frozenset(k for k, v in self.env.items() if v),
            local_only=options.local_only,
            remembered_failures=self.memory.recent(
                list(choice.candidates), self.table.health_memory_s
            ),
        )

    def day_start(self) -> float:
        from aitherctl.routing.ledger import start_of_local_day

        return start_of_local_day(self.wall_clock())

    def _committed_today(self) -> float:
        """Spent plus reserved today (read only: nothing is written)."""
        return self.ledger.committed_since(self.day_start(), self.wall_clock()).total_usd

    def _prompt_bound(self, options: RunOptions) -> int:
        """The request-cost model's input bound for the messages `run` sends (a chat's earlier
        turns included)."""
        from aitherctl.routing.chat import ChatRequest

        messages = ChatRequest(
            prompt=options.prompt, system=options.system, history=tuple(options.history)
        ).messages()
        return request_bound(CHAT_ROUTE, {"messages": messages}, 0).input_tokens

    def worst_case(self, candidate: Candidate, options: RunOptions, max_tokens: int) -> float:
        """The request's worst case at the candidate's prices: the request-cost model's bound
        on the messages `run` sends and the output limit it sends (`max_tokens`)."""
        if candidate.price is None or candidate.price.is_free:
            return 0.0
        return candidate.price.cost_usd(self._prompt_bound(options), max_tokens)

    def _verdict(  # noqa: PLR0917
        self,
        candidate: Candidate,
        choice: Choice,
        options: RunOptions,
        ctx: RouteContext,
        committed: Callable[[], float],
        record: bool,
    ) -> tuple[str | None, bool]:
        """(why skipped or None, whether the budget was the reason). The budget check here is a
        cheap early look; the binding one is the reservation made right before sending.
        `record`: remember a failed health probe (never for --explain)."""
        reason = static_skip_reason(candidate, ctx)
        if reason:
            return reason, False
        if candidate.price is not None and not candidate.price.is_free:
            verdict = check_budget(
                self.budget,
                committed(),
                candidate.price,
                self._prompt_bound(options),
                choice.max_tokens,
            )
            if not verdict.allowed:
                return verdict.reason, True
        if record and candidate.origin == "service" and ctx.running is not None:
            # Docker says its container runs: the request itself is the probe (refused, 503
            # while loading, a stall: each fails before any text and falls back the same way,
            # and is remembered). `--explain` still probes, to show the state.
            health = None
        else:
            health = self.probe.health(candidate)
        if health:
            if candidate.on_demand:
                health += " (on-demand service; run does not start it)"
            if record:
                self.memory.remember(candidate, health)
            return health, False
        if not options.backend and choice.tier.max_queue is not None:
            waiting = self.probe.queue_waiting(candidate)
            reason = queue_skip_reason(candidate, waiting, choice.tier)
            if reason:
                return reason, False
        return None, False

    def explain(self, options: RunOptions) -> tuple[Choice, list[Verdict]]:
        """The decision and every candidate's verdict, probing but sending no prompt and
        recording nothing (no ledger row, no reservation, no failure memory)."""
        choice = self.choose(options)
        ctx = self.context(choice, options)
        committed = _once(self._committed_today)
        verdicts = []
        for candidate in choice.candidates:
            reason, _ = self._verdict(candidate, choice, options, ctx, committed, record=False)
            verdicts.append(Verdict(candidate, reason is None, reason))
        return choice, verdicts

    # -- running -------------------------------------------------------------------------------

    def reserve(
        self, run_id: str, candidate: Candidate, worst: float, timeout_s: float
    ) -> tuple[int | None, str | None]:
        """(reservation id, None) or (None, why the budget refuses). Free: (None, None)."""
        if worst <= 0:
            return None, None
        answer = self.ledger.reserve(
            run_id,
            worst,
            self.budget.daily_usd,
            since_ts=self.day_start(),
            now=self.wall_clock(),
            ttl_s=max(RESERVATION_MIN_TTL_S, 10 * timeout_s),
            backend=candidate.name,
        )
        if answer.granted:
            return answer.reservation_id, None
        left = max(0.0, self.budget.daily_usd - answer.committed.total_usd)
        in_flight = (
            f", ${answer.committed.reserved_usd:.4f} of it reserved by requests in flight"
            if answer.committed.reserved_usd
            else ""
        )
        return None, (
            f"budget: worst case ${worst:.4f} > ${left:.4f} left of "
            f"${self.budget.daily_usd:g} today{in_flight}"
        )

    def settle(self, state: _Run, reservation: int | None, cost: float) -> None:
        state.cost_usd += cost
        if reservation is not None:
            self.ledger.settle(reservation, cost)

    def run(self, options: RunOptions, on_text: Callable[[str], None]) -> RunResult:
        """Send the prompt; `on_text` receives the answer as it streams. Raises BackendFailedError
        (every candidate failed, or one failed mid-answer) or BudgetExceededError."""
        from aitherctl.routing.chat import ChatError, ChatRequest, stream_chat

        started = self.clock()
        started_wall = self.wall_clock()
        shared = self.shared_first(options)
        scoring: _Scoring | None = None
        if shared is None:
            choice = self.choose(options)
        else:
            scoring = _Scoring(lambda: self.effort_scorer().score(options.prompt, options.system))
            choice = Choice(  # until the score is in: the one candidate every tier starts with
                profile=self.profile.name,
                effort=EffortScore(0, 0.0, ()),
                effort_forced=False,
                tier=self.table.tiers[0],
                tier_forced=False,
                candidates=(shared,),
                max_tokens=options.max_tokens or self.table.default_max_tokens,
            )
            if choice.max_tokens < 1:
                raise UsageError("--max-tokens must be at least 1")
        ctx = self.context(choice, options)

        def scored() -> Choice:
            """The real choice, once the effort score is in."""
            nonlocal choice, ctx, scoring
            if scoring is not None:
                choice = self.choose(options, scoring.result())
                ctx = self.context(choice, options)
                scoring = None
            return choice

        def candidates() -> Iterator[Candidate]:
            yield from choice.candidates
            if scoring is not None:  # the shared first candidate did not answer
                tried = choice.candidates
                yield from (c for c in scored().candidates if c not in tried)

        request = ChatRequest(
            prompt=options.prompt,
            system=options.system,
            history=options.history,
            max_tokens=choice.max_tokens,
            temperature=options.temperature,
        )
        state = _Run()
        committed = _once(self._committed_today)

        for candidate in candidates():
            reason, by_budget = self._verdict(
                candidate, choice, options, ctx, committed, record=True
            )
            if not reason:
                worst = self.worst_case(candidate, options, choice.max_tokens)
                reservation, reason = self.reserve(
                    state.run_id, candidate, worst, choice.tier.timeout_s
                )
                by_budget = reason is not None
            if reason:
                state.skip(candidate, reason)
                state.budget_refused |= by_budget
                continue
            try:
                result = stream_chat(
                    self.clients,
                    candidate,
                    request,
                    on_text,
                    read_timeout_s=choice.tier.timeout_s,
                    on_sent=scoring.start if scoring is not None else None,
                )
            except ChatError as exc:
                # Sent but no usage came back: charged its worst case (never undercount), unless
                # it never reached the server or the server refused it with an error status.
                self.settle(state, reservation, worst if exc.billable else 0.0)
                if not exc.partial:
                    if exc.kind in REMEMBERED_FAILURES:
                        self.memory.remember(candidate, exc.message)
                    state.attempts.append(
                        Attempt(
                            candidate.name,
                            candidate.model,
                            "error",
                            exc.message,
                            exc.ttft_s,
                            exc.elapsed_s,
                        )
                    )
                    continue
                # Text has arrived: stop here, report what came and from whom.
                state.attempts.append(
                    Attempt(
                        candidate.name,
                        candidate.model,
                        "partial",
                        exc.message,
                        exc.ttft_s,
                        exc.elapsed_s,
                    )
                )
                outcome = self._finish(
                    scored(),
                    options,
                    state,
                    candidate,
                    started,
                    started_wall,
                    "partial",
                    exc.partial_text,
                    None,
                    None,
                    exc.ttft_s,
                    None,
                )
                error = BackendFailedError(
                    partial_message(candidate.name, candidate.model, exc.message),
                    detail=_attempt_lines(outcome.attempts),
                )
                error.result = outcome
                raise error from None
            except BaseException:
                # Interrupted (Ctrl-C, SIGTERM) while the request was out: charge the worst case.
                self.settle(state, reservation, worst)
                raise
            state.attempts.append(
                Attempt(candidate.name, candidate.model, "ok", None, result.ttft_s, result.total_s)
            )
            self.settle(
                state,
                reservation,
                self.cost(
                    candidate, options, result.tokens_in, result.tokens_out, choice.max_tokens
                ),
            )
            return self._finish(
                scored(),
                options,
                state,
                candidate,
                started,
                started_wall,
                "ok",
                result.text,
                result.tokens_in,
                result.tokens_out,
                result.ttft_s,
                result.last_token_s,
                result.finish_reason,
            )

        skipped_all = all(a.outcome == "skipped" for a in state.attempts)
        outcome_name = "budget" if state.budget_refused and skipped_all else "failed"
        outcome = self._finish(
            scored(),
            options,
            state,
            None,
            started,
            started_wall,
            outcome_name,
            "",
            None,
            None,
            None,
            None,
        )
        lines = _attempt_lines(outcome.attempts)
        failure: BackendFailedError | BudgetExceededError
        if outcome_name == "budget":
            failure = BudgetExceededError(
                budget_message(choice.tier.name, outcome.spent_today_usd, self.budget.daily_usd),
                detail=lines,
            )
        else:
            failure = BackendFailedError(
                no_backend_message(choice.tier.name, len(outcome.attempts)), detail=lines
            )
        failure.result = outcome
        raise failure

    def cost(
        self,
        candidate: Candidate,
        options: RunOptions,
        tokens_in: int | None,
        tokens_out: int | None,
        max_tokens: int,
    ) -> float:
        """From the server's usage; without it, the worst case (never undercount spending)."""
        if candidate.price is None or candidate.price.is_free:
            return 0.0
        used_in = tokens_in if tokens_in is not None else self._prompt_bound(options)
        used_out = tokens_out if tokens_out is not None else max_tokens
        return candidate.price.cost_usd(used_in, used_out)

    def _finish(  # noqa: PLR0917 (one call site per outcome; names at each)
        self,
        choice: Choice,
        options: RunOptions,
        state: _Run,
        candidate: Candidate | None,
        started: float,
        started_wall: float,
        outcome: str,
        answer: str,
        tokens_in: int | None,
        tokens_out: int | None,
        ttft_s: float | None,
        last_token_s: float | None,
        finish_reason: str | None = None,
    ) -> RunResult:
        from aitherctl.routing.ledger import LedgerRow, prompt_hash

        total = self.clock() - started
        last = candidate or (
            next((c for c in choice.candidates if c.name == state.attempts[-1].backend), None)
            if state.attempts
            else None
        )
        row = LedgerRow(
            ts=started_wall,
            profile=self.profile.name,
            effort=choice.effort.score,
            tier=choice.tier.name,
            backend=last.name if last else None,
            model=last.model if last else None,
            local=last.local if last else None,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=state.cost_usd,
            ttft_s=ttft_s,
            total_s=total,
            outcome=outcome,
            attempts=len(state.attempts),
            prompt_sha256=prompt_hash(options.system, options.prompt),
            prompt=options.prompt if self.store_prompts else None,
        )
        self.ledger.record(row, state.run_id)
        spent_after = self.ledger.committed_since(self.day_start(), self.wall_clock()).spent_usd
        return RunResult(
            profile=self.profile.name,
            effort=choice.effort,
            tier=choice.tier.name,
            backend=candidate.name if candidate else None,
            model=candidate.model if candidate else None,
            answer=answer,
            outcome=outcome,
            attempts=tuple(state.attempts),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            ttft_s=ttft_s,
            total_s=total,
            cost_usd=state.cost_usd,
            spent_today_usd=spent_after,
            budget_daily_usd=self.budget.daily_usd,
            warning=budget_warning(self.budget, spent_after) if spent_after else None,
            last_token_s=last_token_s,
            finish_reason=finish_reason,
            max_tokens=choice.max_tokens,
        )


class _Scoring:
    """The effort score, computed in a thread once the prompt is on its way (`start`), or here
    when asked for first."""

    def __init__(self, score: Callable[[], EffortScore]) -> None:
        self._score = score
        self._value: EffortScore | None = None
        self._error: BaseException | None = None
        self._thread: Any = None

    def start(self) -> None:
        if self._thread is None and self._value is None:
            import sys
            import threading

            # The scorer's start-up is pure Python (imports, regex compiles): while it runs, the
            # thread reading the answer gets the interpreter back only at a switch, every 5 ms by
            # default. 1 ms makes the answer's first byte wait at most that long.
            sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
            self._thread = threading.Thread(target=self._run, name="effort-score", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._score()
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> EffortScore:
        if self._thread is None:
            self._run()
        else:
            while self._thread.is_alive():  # in slices: Ctrl-C given to that thread stops run
                self._thread.join(0.05)
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


def _once(read: Callable[[], float]) -> Callable[[], float]:
    """`read`, called at most once."""
    cache: list[float] = []

    def cached() -> float:
        if not cache:
            cache.append(read())
        return cache[0]

    return cached


def _attempt_lines(attempts: tuple[Attempt, ...] | list[Attempt]) -> str:
    return attempt_lines((a.backend, a.model, a.outcome, a.reason) for a in attempts)


@contextmanager
def open_router(
    profile: Profile,
    stack: StackView | None = None,
    *,
    nodes: Mapping[str, tuple[str, str | None]] | None = None,
) -> Iterator[Router]:
    """A Router with real adapters: keep-alive httpx clients shared by probes and requests,
    the failure memory in the user's state folder, the ledger in the user's data folder.
    `nodes`: the rented nodes that run (node -> (root URL, key); `nodes.records`)."""
    from aitherctl.routing.chat import HttpClients
    from aitherctl.routing.probes import BackendProbe, FailureMemory
    from aitherctl.routing.table import build_routing, with_node_addresses

    table = build_routing(profile)
    if nodes:
        table = with_node_addresses(table, nodes)
    clients = HttpClients()
    try:
        yield Router(
            profile,
            table,
            clients=clients,
            probe=BackendProbe(clients),
            memory=FailureMemory(),
            ledger=cast("Ledger", _LedgerOnFirstUse()),
            stack=stack,
        )
    finally:
        clients.close()


class _LedgerOnFirstUse:
    """The user's ledger, imported and opened when first used. A free local answer is first
    written to it after its first byte, so SQLite and the ledger's module stay off the way to
    that byte; a priced candidate's reservation opens it before sending, as always."""

    def __init__(self) -> None:
        self._ledger: Ledger | None = None

    def __getattr__(self, name: str) -> Any:
        if self._ledger is None:
            from aitherctl.routing.ledger import Ledger

            self._ledger = Ledger()
        return getattr(self._ledger, name)
