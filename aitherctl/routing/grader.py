"""`routing.classifier: model`: a free local model grades the prompt's effort.

An `EffortScorer` like the learned one (routing/effort.py), so the router and the scheduler
can take either. The grader is the first candidate of the lowest tier that is local, running and
free (a priced grader would spend outside the budget's reservations); it gets one short, greedy
request and CLASSIFIER_TIMEOUT_S to answer. On any failure the fallback scorer's score stands, with
a reason saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aitherctl.routing.effort import EffortScore, EffortScorer
from aitherctl.routing.table import Candidate, RouteContext, RoutingTable, static_skip_reason

if TYPE_CHECKING:
    from aitherctl.routing.chat import HttpClients

CLASSIFIER_TIMEOUT_S = 3.0
CLASSIFIER_PROMPT = (
    "Rate how much model capability the user's request needs, from 1 (a greeting or a one-fact "
    "answer) to 10 (long, research-level or high-stakes work). Reply with the number only."
)
_GRADE = re.compile(r"\b(10|[1-9])\b")


def pick_grader(table: RoutingTable, running: frozenset[str] | None) -> Candidate | None:
    """The first local, running, free candidate of the lowest tier, or None."""
    ctx = RouteContext(running=running, env_keys=frozenset(), local_only=True)
    return next(
        (
            c
            for c in table.tiers[0].candidates
            if static_skip_reason(c, ctx) is None and (c.price is None or c.price.is_free)
        ),
        None,
    )


def _with_reason(effort: EffortScore, reason: str) -> EffortScore:
    return EffortScore(effort.score, effort.points, (*effort.reasons, reason))


@dataclass(frozen=True, slots=True)
class ModelGradedScorer:
    """`EffortScorer` that asks `grader` for a grade 1-10; `fallback` scores when it cannot."""

    clients: HttpClients
    grader: Candidate | None
    fallback: EffortScorer
    timeout_s: float = CLASSIFIER_TIMEOUT_S

    def score(self, prompt: str, system: str | None = None) -> EffortScore:
        from aitherctl.routing.chat import ChatError, ChatRequest, stream_chat

        # The reasons keep the words "heuristic used" for the built-in scorer (now learned), as
        # `routing.classifier: heuristic` names it.
        base = self.fallback.score(prompt, system)
        if self.grader is None:
            return _with_reason(base, "classifier: no local model to grade; heuristic used")
        request = ChatRequest(
            prompt=prompt[:4000], system=CLASSIFIER_PROMPT, max_tokens=4, temperature=0.0
        )
        try:
            answer = stream_chat(
                self.clients, self.grader, request, lambda _: None, read_timeout_s=self.timeout_s
            )
        except ChatError as exc:
            return _with_reason(
                base, f"classifier: {self.grader.name} failed ({exc.message}); heuristic used"
            )
        match = _GRADE.search(answer.text)
        if match is None:
            return _with_reason(
                base, f"classifier: {self.grader.name} gave no grade; heuristic used"
            )
        score = int(match.group(1))
        return EffortScore(
            score,
            float(score),
            (
                f"graded {score} by {self.grader.name} ({self.grader.model})",
                f"built-in scorer would say {base.score}",
            ),
        )
