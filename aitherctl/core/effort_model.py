"""The learned effort scorer: boosted trees and word weights over cheap prompt features.

Effort = BIAS + the trees' part + (sum of term weights) / sqrt(number of terms), rounded and
clamped to 1..10. The trees read the named cues of aitherctl/core/effort_features.py (maths
notation, code, asks for a proof, a look-up question, the length...); the term weights read the
words. Weights: aitherctl/core/effort_weights.py, rebuilt by scripts/effort/train.py from the pinned
public sources in scripts/effort/sources.yaml with the labels of scripts/effort/LABELLING.md. Pure
Python, no model download, no embeddings service; scoring one prompt takes well under a millisecond
(bench/bench_effort.py).

The reasons are the contributions that moved the score the most, in words a user can check. Each
tree is walked from its root to a leaf; every step changes the prediction by the difference of the
two nodes' values, and that change is put down to the cue the step tested. So a cue's contribution
is the sum of its steps over all trees (Saabas' attribution), and the contributions plus BIAS add
up to the score exactly: "+1.4 maths notation ($x^2$)", "-0.6 absent: code", "+0.9 length (412
words)", and the words whose learned weights pushed the score up or down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aitherctl.core.effort import MAX_EFFORT, MIN_EFFORT, EffortScore
from aitherctl.core.effort_features import CUE_PHRASES, PromptFeatures, extract_features

# A reason is shown when it moved the score by at least this much.
_SHOWN = 0.25
# A tree node: (cue index or -1 for a leaf, threshold, left child, right child, value).
Node = tuple[int, float, int, int, float]
Tree = Sequence[Node]


def tree_vector(cues: Mapping[str, float], words: int, names: Sequence[str]) -> list[float]:
    """The trees' inputs, in the order of `names`: each cue's value (0 when it did not fire), and
    "length", the log of the word count (one number instead of the linear model's buckets)."""
    return [math.log1p(words) if n == "length" else cues.get(n, 0.0) for n in names]


def _weights() -> tuple[float, tuple[str, ...], tuple[Tree, ...], dict[str, float]]:
    from aitherctl.core import effort_weights

    w = effort_weights
    return w.BIAS, w.CUE_NAMES, w.TREES, w.TERM_WEIGHTS


def _term_label(term: str) -> str:
    kind, text = term.split(":", 1)
    return f"{text}…" if kind == "p" else text


def _cue_label(name: str, words: int, fired: bool) -> str:
    if name == "length":
        return f"length ({words} word{'' if words == 1 else 's'})"
    phrase = CUE_PHRASES.get(name, name)
    return phrase if fired else f"absent: {phrase}"


@dataclass(frozen=True, slots=True)
class LearnedEffortScorer:
    """`EffortScorer` backed by the shipped weights (loaded on first use, then shared)."""

    bias: float
    cue_names: tuple[str, ...]
    trees: tuple[Tree, ...]
    term_weights: dict[str, float]

    @classmethod
    def shipped(cls) -> LearnedEffortScorer:
        return cls(*_weights())

    def score(self, prompt: str, system: str | None = None) -> EffortScore:
        feats = extract_features(prompt, system)
        cues = dict(feats.cues)
        x = tree_vector(cues, feats.words, self.cue_names)
        moved = [0.0] * len(self.cue_names)
        for tree in self.trees:
            node = tree[0]
            while node[0] >= 0:
                step = tree[node[2] if x[node[0]] <= node[1] else node[3]]
                moved[node[0]] += step[4] - node[4]
                node = step
        contributions = [
            (value, name) for name, value in zip(self.cue_names, moved, strict=True) if value
        ]
        term_parts = [
            (self.term_weights[t] * feats.term_scale, t)
            for t in feats.terms
            if t in self.term_weights
        ]
        points = self.bias + sum(moved) + sum(c for c, _ in term_parts)
        score = max(MIN_EFFORT, min(MAX_EFFORT, math.floor(points + 0.5)))
        return EffortScore(score, points, self._reasons(feats, cues, contributions, term_parts))

    def _reasons(
        self,
        feats: PromptFeatures,
        cues: Mapping[str, float],
        contributions: list[tuple[float, str]],
        term_parts: list[tuple[float, str]],
    ) -> tuple[str, ...]:
        examples = dict(feats.examples)
        reasons: list[tuple[float, str]] = []
        for value, name in contributions:
            if abs(value) >= _SHOWN:
                label = _cue_label(name, feats.words, name == "length" or name in cues)
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
