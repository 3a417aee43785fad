"""The learned effort scorer: a linear model over cheap prompt features, trained on public data.

Effort = BIAS + sum(cue weight x cue value) + (sum of term weights) / sqrt(number of terms),
rounded and clamped to 1..10. Features: aitherctl/core/effort_features.py. Weights:
aitherctl/core/effort_weights.py, rebuilt by scripts/effort/train.py from the pinned public sources
in scripts/effort/sources.yaml with the labels of scripts/effort/LABELLING.md. Pure Python, no
model download, no embeddings service; scoring one prompt takes well under a millisecond
(bench/bench_effort.py).

The reasons are the contributions that moved the score the most, in words a user can check: the
named cues ("maths notation ($x^2$)", "asks for a proof (beweisen)") and the words whose learned
weights pushed the score up or down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aitherctl.core.effort import MAX_EFFORT, MIN_EFFORT, EffortScore
from aitherctl.core.effort_features import CUE_PHRASES, PromptFeatures, extract_features

# A reason is shown when it moved the score by at least this much.
_SHOWN = 0.25


def _weights() -> tuple[float, dict[str, float], dict[str, float]]:
    from aitherctl.core import effort_weights

    return effort_weights.BIAS, effort_weights.CUE_WEIGHTS, effort_weights.TERM_WEIGHTS


def _term_label(term: str) -> str:
    kind, text = term.split(":", 1)
    return f"{text}…" if kind == "p" else text


def _cue_label(name: str, words: int) -> str:
    if name.startswith("len"):
        return f"length ({words} word{'' if words == 1 else 's'})"
    return CUE_PHRASES.get(name, name)


@dataclass(frozen=True, slots=True)
class LearnedEffortScorer:
    """`EffortScorer` backed by the shipped weights (loaded on first use, then shared)."""

    bias: float
    cue_weights: dict[str, float]
    term_weights: dict[str, float]

    @classmethod
    def shipped(cls) -> LearnedEffortScorer:
        bias, cues, terms = _weights()
        return cls(bias, cues, terms)

    def score(self, prompt: str, system: str | None = None) -> EffortScore:
        feats = extract_features(prompt, system)
        contributions: list[tuple[float, str]] = []
        for name, value in feats.cues:
            weight = self.cue_weights.get(name, 0.0)
            if weight:
                contributions.append((weight * value, name))
        term_parts = [
            (self.term_weights[t] * feats.term_scale, t)
            for t in feats.terms
            if t in self.term_weights
        ]
        points = self.bias + sum(c for c, _ in contributions) + sum(c for c, _ in term_parts)
        score = max(MIN_EFFORT, min(MAX_EFFORT, math.floor(points + 0.5)))
        return EffortScore(score, points, self._reasons(feats, contributions, term_parts))

    def _reasons(
        self,
        feats: PromptFeatures,
        contributions: list[tuple[float, str]],
        term_parts: list[tuple[float, str]],
    ) -> tuple[str, ...]:
        examples = dict(feats.examples)
        reasons: list[tuple[float, str]] = []
        for value, name in contributions:
            if abs(value) >= _SHOWN:
                label = _cue_label(name, feats.words)
                if name in examples:
                    label += f" ({examples[name]})"
                reasons.append((value, label))
        for sign, word in ((1.0, "raised"), (-1.0, "lowered")):
            part = sorted((p for p in term_parts if p[0] * sign > 0), key=lambda p: -abs(p[0]))
            total = sum(p[0] for p in part)
            if abs(total) >= _SHOWN:
                shown = ", ".join(f"'{_term_label(t)}'" for _, t in part[:4])
                reasons.append((total, f"wording that {word} it: {shown}"))
        reasons.sort(key=lambda r: -abs(r[0]))
        return (
            f"base {self.bias:.1f} (learned from public data, scripts/effort/sources.yaml)",
            *(f"{value:+.1f} {label}" for value, label in reasons),
        )
