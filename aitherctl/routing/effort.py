"""The effort score: how much model a prompt deserves, from 1 (a reflex) to 10 (the frontier).

Deterministic and explainable: a handful of signals read from the prompt text, each adding (or, for
small talk, removing) points, every contribution recorded as a reason. It runs in tens of
microseconds, so `aitherctl run` can afford it on every request.

The signals follow the published complexity routers (LiteLLM's and Bifrost's: code presence,
reasoning markers, technical terms, length, simple-query dampener) with three changes that the
labelled set in tests/data/effort_labelled.yaml showed to matter:
- reasoning markers are graded (a proof outweighs "compare"), not one weight for all;
- structure counts: numbered steps, several questions, code blocks and stack traces;
- the dampener only bites on short prompts, so "what is X ... in depth" is not pulled down.

That keyword heuristic is kept as `score_effort_heuristic` (and `HeuristicEffortScorer`, both in
routing/effort_heuristic.py, which `run` never imports: its regular expressions cost start-up): on
prompts from public datasets that nobody here wrote it was barely better than chance (issue 9).
The default is the learned scorer of routing/effort_model.py (a static embedding of what the
prompt means plus named cues, trained on public labelled data, scripts/effort/); it is built from
its shipped files by `learned_scorer()` in aitherctl/routing/static_embedding.py. Every scorer,
including the model-graded one of `routing.classifier: model` (aitherctl/routing/grader.py),
implements `EffortScorer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

MIN_EFFORT = 1
MAX_EFFORT = 10
FRONTIER_FLOOR = 9  # the lowest score that may reach the frontier tier


@dataclass(frozen=True, slots=True)
class EffortScore:
    """A prompt's effort, 1..10, with the contributions that produced it (for `--explain`)."""

    score: int
    points: float  # the unclamped sum the score is rounded from
    reasons: tuple[str, ...]


class EffortScorer(Protocol):
    """Anything that scores a prompt's effort: the learned scorer, the keyword heuristic, or a
    local model asked to grade it (`routing.classifier: model`). The router and the scheduler
    depend on this, not on one implementation."""

    def score(self, prompt: str, system: str | None = None) -> EffortScore: ...
