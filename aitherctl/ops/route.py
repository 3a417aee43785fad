"""`aitherctl run`: score the prompt, pick the tier, try its candidates in order, record the result.

Per candidate, in order, cheapest check first: the static reasons (not running, `--local-only`,
missing API key, failed recently), the budget (worst case against what is left today), the health
probe, the queue. Then the request: an error before the first token moves on to the next
candidate (and is remembered); an error after it stops the run with the partial answer, which is
never completed by another model. Every request ends as one ledger row.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aitherctl.core.cost import (
    Budget,
    budget_warning,
    check_budget,
    parse_budget,
    prompt_tokens_upper_bound,
)
from aitherctl.core.effort import EffortScore, score_effort
from aitherctl.core.routing import (
    Candidate,
    RouteContext,
    RoutingTable,
    Tier,
    queue_skip_reason,
    static_skip_reason,
)
from aitherctl.errors import (
    AitherError,
    BackendFailedError,
    BudgetExceededError,
    ConfigError,
    UsageError,
)

if TYPE_CHECKING:
    from aitherctl.adapters.backend_probe import BackendProbe, FailureMemory
    from aitherctl.adapters.chat import HttpClients
    from aitherctl.adapters.docker_engine import DockerEngine
    from aitherctl.adapters.ledger import Ledger
    from aitherctl.adapters.profile_store import ProfileCatalog
    from aitherctl.core.profile import Profile


CLASSIFIER_TIMEOUT_S = 3.0
CLASSIFIER_PROMPT = (
    "Rate how much model capability the user's request needs, from 1 (a greeting or a one-fact "
    "answer) to 10 (long, research-level or high-stakes work). Reply with the number only."
)

# Failures that say something about the backend, not about this request: remembered so the next
# run skips it at once. A 4xx (a bad key, an unknown model, a prompt too long) is not.
REMEMBERED_FAILURES = frozenset({"refused", "timeout", "http_5xx", "http_429", "bad_stream"})


class StackView(Protocol):
    """Which of a profile's services have a running container; None when that is unknown."""

    def running_services(self, profile: str) -> frozenset[str] | None: ...


class UnknownStack:
    """No container state (no Docker engine): health probes decide."""

    def running_services(self, profile: str) -> frozenset[str] | None:  # noqa: ARG002
        return None


class ObservedStack:
    """Running services as Docker reports them (`aitherctl.ops.state.observe`).

    Matched by service name, not by the container's profile label: a switch keeps a container
    whose spec did not change, and that container still carries the old profile's label.
    """

    def __init__(self, running: frozenset[str]) -> None:
        self.running = running

    def running_services(self, profile: str) -> frozenset[str] | None:  # noqa: ARG002
        return self.running


def resolve_profile(
    explicit: str | None,
    catalog: ProfileCatalog,
    connect: Callable[[], DockerEngine],
) -> tuple[Profile, StackView]:
    """The profile to route with (`--profile`, else the active one, else $AITHER_GPU_PROFILE) and
    what Docker says is running. Without a Docker engine, a named profile still works: its
    services are then judged by their health probes alone."""
    from aitherctl.ops.state import observe

    stack: StackView = UnknownStack()
    active: str | None = None
    docker_problem: str | None = None
    try:
        engine = connect()
        try:
            state = observe(engine)
        finally:
            engine.close()
        active = state.active_profile
        stack = ObservedStack(frozenset(item.service for item in state.running))
    except AitherError as exc:
        docker_problem = exc.message
    name = explicit or active or os.environ.get("AITHER_GPU_PROFILE")
    if not name:
        why = f" ({docker_problem})" if docker_problem else ""
        raise UsageError(
            "no active profile: run `aitherctl profile switch NAME`, pass --profile NAME or set "
            f"AITHER_GPU_PROFILE{why}"
        )
    return catalog.load(name), stack


@dataclass(frozen=True, slots=True)
class RunOptions:
    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    effort: int | None = None
    tier: str | None = None
    backend: str | None = None
    local_only: bool = False


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
    candidate: Candidate
    usable: bool
    reason: str | None  # why it is skipped; None when it would be tried


@dataclass(frozen=True, slots=True)
class RunResult:
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

    @property
    def tokens_per_s(self) -> float | None:
        if not self.tokens_out or self.ttft_s is None or self.total_s <= self.ttft_s:
            return None
        return self.tokens_out / (self.total_s - self.ttft_s)

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
            "ttft_s": _round(self.ttft_s),
            "total_s": _round(self.total_s),
            "tokens_per_s": _round(self.tokens_per_s, 1),
            "cost_usd": round(self.cost_usd, 6),
            "budget": {
                "daily_usd": self.budget_daily_usd,
                "spent_today_usd": round(self.spent_today_usd, 6),
            },
            "warning": self.warning,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class _Run:
    """Mutable bookkeeping of one run."""

    attempts: list[Attempt] = field(default_factory=list)
    budget_refused: bool = False

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

    def choose(self, options: RunOptions) -> Choice:
        if options.effort is not None and not 1 <= options.effort <= 10:
            raise UsageError("--effort must be between 1 and 10")
        if options.effort is not None:
            effort = EffortScore(options.effort, float(options.effort), ("forced by --effort",))
        else:
            effort = score_effort(options.prompt, options.system)
            if self.table.classifier == "model":
                effort = self._grade_with_model(options, effort)
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

    def _grade_with_model(self, options: RunOptions, heuristic: EffortScore) -> EffortScore:
        """`routing.classifier: model`: the first local candidate of the lowest tier grades the
        prompt 1-10 (one short, greedy request); on any failure or after CLASSIFIER_TIMEOUT_S the
        heuristic score stands."""
        from aitherctl.adapters.chat import ChatError, ChatRequest, stream_chat

        ctx = RouteContext(
            running=self.stack.running_services(self.profile.name),
            env_keys=frozenset(),
            local_only=True,
        )
        grader = next(
            (c for c in self.table.tiers[0].candidates if static_skip_reason(c, ctx) is None),
            None,
        )
        if grader is None:
            return _with_reason(heuristic, "classifier: no local model to grade; heuristic used")
        request = ChatRequest(
            prompt=options.prompt[:4000], system=CLASSIFIER_PROMPT, max_tokens=4, temperature=0.0
        )
        try:
            answer = stream_chat(
                self.clients, grader, request, lambda _: None,
                read_timeout_s=CLASSIFIER_TIMEOUT_S,
            )
        except ChatError as exc:
            return _with_reason(heuristic, f"classifier: {grader.name} failed ({exc.message}); "
                                           "heuristic used")
        match = re.search(r"\b(10|[1-9])\b", answer.text)
        if match is None:
            return _with_reason(heuristic, f"classifier: {grader.name} gave no grade; "
                                           "heuristic used")
        score = int(match.group(1))
        return EffortScore(
            score, float(score),
            (f"graded {score} by {grader.name} ({grader.model})",
             f"heuristic would say {heuristic.score}"),
        )

    def _context(self, choice: Choice, options: RunOptions) -> RouteContext:
        return RouteContext(
            running=self.stack.running_services(self.profile.name),
            env_keys=frozenset(k for k, v in self.env.items() if v),
            local_only=options.local_only,
            remembered_failures=self.memory.recent(
                list(choice.candidates), self.table.health_memory_s
            ),
        )

    def _spent_today(self) -> float:
        from aitherctl.adapters.ledger import start_of_local_day

        return self.ledger.spent_since(start_of_local_day(self.wall_clock()))

    def _prompt_bound(self, options: RunOptions) -> int:
        texts = [options.prompt] + ([options.system] if options.system else [])
        return prompt_tokens_upper_bound(texts)

    def _verdict(
        self,
        candidate: Candidate,
        choice: Choice,
        options: RunOptions,
        ctx: RouteContext,
        spent: Callable[[], float],
    ) -> tuple[str | None, bool]:
        """(why skipped or None, whether the budget was the reason)."""
        reason = static_skip_reason(candidate, ctx)
        if reason:
            return reason, False
        if candidate.price is not None and not candidate.price.is_free:
            verdict = check_budget(
                self.budget, spent(), candidate.price, self._prompt_bound(options),
                choice.max_tokens,
            )
            if not verdict.allowed:
                return verdict.reason, True
        health = self.probe.health(candidate)
        if health:
            if candidate.on_demand:
                health += " (on-demand service; run does not start it)"
            self.memory.remember(candidate, health)
            return health, False
        if not options.backend and choice.tier.max_queue is not None:
            waiting = self.probe.queue_waiting(candidate)
            reason = queue_skip_reason(candidate, waiting, choice.tier)
            if reason:
                return reason, False
        return None, False

    def explain(self, options: RunOptions) -> tuple[Choice, list[Verdict]]:
        """The decision and every candidate's verdict, probing but sending no prompt."""
        choice = self.choose(options)
        ctx = self._context(choice, options)
        spent_cache: list[float] = []

        def spent() -> float:
            if not spent_cache:
                spent_cache.append(self._spent_today())
            return spent_cache[0]

        verdicts = []
        for candidate in choice.candidates:
            reason, _ = self._verdict(candidate, choice, options, ctx, spent)
            verdicts.append(Verdict(candidate, reason is None, reason))
        return choice, verdicts

    # -- running -------------------------------------------------------------------------------

    def run(self, options: RunOptions, on_text: Callable[[str], None]) -> RunResult:
        """Send the prompt; `on_text` receives the answer as it streams. Raises BackendFailedError
        (every candidate failed, or one failed mid-answer) or BudgetExceededError."""
        from aitherctl.adapters.chat import ChatError, ChatRequest, stream_chat

        started = self.clock()
        started_wall = self.wall_clock()
        choice = self.choose(options)
        ctx = self._context(choice, options)
        request = ChatRequest(
            prompt=options.prompt,
            system=options.system,
            max_tokens=choice.max_tokens,
            temperature=options.temperature,
        )
        state = _Run()
        spent_cache: list[float] = []

        def spent() -> float:
            if not spent_cache:
                spent_cache.append(self._spent_today())
            return spent_cache[0]

        for candidate in choice.candidates:
            reason, by_budget = self._verdict(candidate, choice, options, ctx, spent)
            if reason:
                state.skip(candidate, reason)
                state.budget_refused |= by_budget
                continue
            try:
                result = stream_chat(
                    self.clients, candidate, request, on_text,
                    read_timeout_s=choice.tier.timeout_s,
                )
            except ChatError as exc:
                if not exc.partial:
                    if exc.kind in REMEMBERED_FAILURES:
                        self.memory.remember(candidate, exc.message)
                    state.attempts.append(
                        Attempt(candidate.name, candidate.model, "error", exc.message,
                                exc.ttft_s, exc.elapsed_s)
                    )
                    continue
                # Text has arrived: stop here, report what came and from whom.
                state.attempts.append(
                    Attempt(candidate.name, candidate.model, "partial", exc.message,
                            exc.ttft_s, exc.elapsed_s)
                )
                cost = self._cost(candidate, options, None, None, choice.max_tokens)
                outcome = self._finish(
                    choice, options, state, candidate, started, started_wall, "partial",
                    exc.partial_text, None, None, exc.ttft_s, cost, spent,
                )
                error = BackendFailedError(
                    f"{candidate.name} ({candidate.model}) failed after the answer had started: "
                    f"{exc.message}; the partial answer is all there is",
                    detail=_attempt_lines(outcome.attempts),
                )
                error.result = outcome
                raise error from None
            state.attempts.append(
                Attempt(candidate.name, candidate.model, "ok", None, result.ttft_s, result.total_s)
            )
            cost = self._cost(
                candidate, options, result.tokens_in, result.tokens_out, choice.max_tokens
            )
            return self._finish(
                choice, options, state, candidate, started, started_wall, "ok", result.text,
                result.tokens_in, result.tokens_out, result.ttft_s, cost, spent,
            )

        skipped_all = all(a.outcome == "skipped" for a in state.attempts)
        outcome_name = "budget" if state.budget_refused and skipped_all else "failed"
        outcome = self._finish(
            choice, options, state, None, started, started_wall, outcome_name, "", None, None,
            None, 0.0, spent,
        )
        lines = _attempt_lines(outcome.attempts)
        failure: BackendFailedError | BudgetExceededError
        if outcome_name == "budget":
            failure = BudgetExceededError(
                f"the daily budget forbids this request (tier {choice.tier.name}): "
                f"${outcome.spent_today_usd:.4f} of ${self.budget.daily_usd:g} spent",
                detail=lines,
            )
        else:
            failure = BackendFailedError(
                f"no backend answered (tier {choice.tier.name}, "
                f"{len(outcome.attempts)} candidate(s))",
                detail=lines,
            )
        failure.result = outcome
        raise failure

    def _cost(
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
        cost: float,
        spent: Callable[[], float],
    ) -> RunResult:
        from aitherctl.adapters.ledger import LedgerRow, prompt_hash

        total = self.clock() - started
        last = candidate or (
            next((c for c in choice.candidates if c.name == state.attempts[-1].backend), None)
            if state.attempts else None
        )
        spent_before = spent() if any(
            c.price is not None and not c.price.is_free for c in choice.candidates
        ) else 0.0
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
            cost_usd=cost,
            ttft_s=ttft_s,
            total_s=total,
            outcome=outcome,
            attempts=len(state.attempts),
            prompt_sha256=prompt_hash(options.system, options.prompt),
            prompt=options.prompt if self.store_prompts else None,
        )
        self.ledger.record(row)
        spent_after = spent_before + cost
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
            cost_usd=cost,
            spent_today_usd=spent_after,
            budget_daily_usd=self.budget.daily_usd,
            warning=budget_warning(self.budget, spent_after) if spent_after else None,
        )


def _with_reason(effort: EffortScore, reason: str) -> EffortScore:
    return EffortScore(effort.score, effort.points, (*effort.reasons, reason))


def _attempt_lines(attempts: tuple[Attempt, ...] | list[Attempt]) -> str:
    lines = []
    for attempt in attempts:
        reason = f": {attempt.reason}" if attempt.reason else ""
        lines.append(f"  {attempt.backend} ({attempt.model}) {attempt.outcome}{reason}")
    return "\n".join(lines)


@contextmanager
def open_router(profile: Profile, stack: StackView | None = None) -> Iterator[Router]:
    """A Router with real adapters: keep-alive httpx clients shared by probes and requests,
    the failure memory in the user's state folder, the ledger in the user's data folder."""
    from aitherctl.adapters.backend_probe import BackendProbe, FailureMemory
    from aitherctl.adapters.chat import HttpClients
    from aitherctl.adapters.ledger import Ledger
    from aitherctl.core.routing import build_routing

    table = build_routing(profile)
    clients = HttpClients()
    try:
        yield Router(
            profile,
            table,
            clients=clients,
            probe=BackendProbe(clients),
            memory=FailureMemory(),
            ledger=Ledger(),
            stack=stack,
        )
    finally:
        clients.close()
