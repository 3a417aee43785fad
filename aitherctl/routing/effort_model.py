"""The learned effort scorer: what a prompt means (a static embedding) plus named cues.

Effort = BIAS + the trees' part + HEAD . embedding, rounded and clamped to 1..10.

- The embedding (aitherctl/routing/static_embedding.py) is three mean token vectors of WordLlama's
  static table: the whole prompt, its opening and its closing. It carries what a request asks for
  ("summarise this paragraph", "build me an app with logins and payments", "find the remainder")
  whatever words it uses, which the word weights of the earlier rounds could not.
- The trees read the named cues of aitherctl/routing/effort_features.py (maths notation, code, asks
  for a proof, a look-up question, the length...): boosted regression trees, walked in pure Python.
- HEAD is a ridge regression on the embedding, fitted on what the trees left.

Weights: routing/effort_weights.py, rebuilt by scripts/effort/train.py from the pinned public
sources in scripts/effort/sources.yaml with the labels of scripts/effort/LABELLING.md.

The reasons (`--explain`) are contributions that add up to the score, in words a user can check:
each tree step's change is put down to the cue it tested (Saabas' attribution), the embedding's part
is split by segment, and the nearest kinds of task (the training sources whose mean embedding is
closest, with the effort their label gives) say what the scorer took the prompt for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aitherctl.routing.effort import MAX_EFFORT, MIN_EFFORT, EffortScore
from aitherctl.routing.effort_features import CUE_PHRASES, extract_features

if TYPE_CHECKING:
    from types import ModuleType

    import numpy as np
    from numpy.typing import NDArray

# A reason is shown when it moved the score by at least this much.
_SHOWN = 0.25
_NEAREST = 2
# A tree node: (cue index or -1 for a leaf, threshold, left child, right child, value).
Node = tuple[int, float, int, int, float]
Tree = Sequence[Node]
SEGMENT_PHRASES = ("its text as a whole", "its opening words", "its closing words")
# The material a request is given, as the trees read it (weights with SPLIT: eighth round,
# routing/request_split.py): its size (log of its words) and its kind.
MATERIAL_CUES = (
    "material_words",
    "material_prose",
    "material_code",
    "material_table",
    "material_maths",
)
_MATERIAL_KIND = {"prose": "prose", "code": "code", "table": "a table", "maths": "maths"}


class Embedding(Protocol):
    """What the scorer needs of the embedding: the segments' vectors, one after the other."""

    def vector(self, text: str) -> NDArray[np.float32]: ...


def tree_vector(cues: Mapping[str, float], words: int, names: Sequence[str]) -> list[float]:
    """The trees' inputs, in the order of `names`: each cue's value (0 when it did not fire), and
    "length", the log of the word count."""
    return [math.log1p(words) if n == "length" else cues.get(n, 0.0) for n in names]


def _term_label(term: str) -> str:
    kind, text = term.split(":", 1)
    return f"{text}…" if kind == "p" else text


def _cue_label(name: str, words: int, fired: bool) -> str:
    if name == "length":
        return f"length ({words} word{'' if words == 1 else 's'})"
    phrase = CUE_PHRASES.get(name, name)
    return phrase if fired else f"absent: {phrase}"


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of task the scorer knows: a training source's description, the effort its label
    gives on average, and its mean embedding (whole prompt, length 1)."""

    description: str
    effort: float


@dataclass(frozen=True, slots=True)
class LearnedEffortScorer:
    """`EffortScorer` backed by the shipped weights and an embedding (loaded once, then shared)."""

    bias: float
    cue_names: tuple[str, ...]
    trees: tuple[Tree, ...]
    head: NDArray[np.float32] | None  # None: weights without an embedding head
    kinds: tuple[Kind, ...]
    centroids: NDArray[np.float32] | None  # one row per kind
    embedding: Embedding | None
    term_weights: Mapping[str, float]  # words' weights (fitted with the head), may be empty
    kind_top: int = 0  # > 0: the trees read "kind_prior", the effort of this many nearest kinds
    kind_temperature: float = 1.0
    split: bool = False  # read the request apart from its material (routing/request_split.py)

    @classmethod
    def from_module(cls, weights: ModuleType, embedding: Embedding | None) -> LearnedEffortScorer:
        """The scorer of a weights module written by scripts/effort/train.py; `embedding` is read
        only when the module has an embedding head (HEAD)."""
        if not hasattr(weights, "HEAD"):
            return cls(
                weights.BIAS,
                weights.CUE_NAMES,
                weights.TREES,
                None,
                (),
                None,
                None,
                weights.TERM_WEIGHTS,
            )
        import numpy as np

        return cls(
            weights.BIAS,
            weights.CUE_NAMES,
            weights.TREES,
            np.asarray(weights.HEAD, dtype=np.float32),
            tuple(Kind(d, e) for d, e in weights.KINDS),
            np.asarray(weights.CENTROIDS, dtype=np.float32),
            embedding,
            getattr(weights, "TERM_WEIGHTS", {}),
            getattr(weights, "KIND_TOP", 0),
            getattr(weights, "KIND_TEMPERATURE", 1.0),
            getattr(weights, "SPLIT", False),
        )

    def score(self, prompt: str, system: str | None = None) -> EffortScore:
        split = None
        if self.split:
            from aitherctl.routing.request_split import split_request

            split = split_request(prompt)
            prompt = split.request
        feats = extract_features(prompt, system)
        cues = dict(feats.cues)
        if split is not None:
            cues.update(split.cues())
        vector = None
        prior = ""
        if self.embedding is not None and self.head is not None:
            vector = self.embedding.vector(prompt)
            if self.kind_top:
                dim = len(vector) // len(SEGMENT_PHRASES)
                cues["kind_prior"], prior = self._kind_prior(vector[:dim])
        x = tree_vector(cues, feats.words, self.cue_names)
        moved = [0.0] * len(self.cue_names)
        for tree in self.trees:
            node = tree[0]
            while node[0] >= 0:
                step = tree[node[2] if x[node[0]] <= node[1] else node[3]]
                moved[node[0]] += step[4] - node[4]
                node = step
        parts: list[float] = []
        nearest: tuple[str, ...] = ()
        if vector is not None and self.head is not None:
            dim = len(vector) // len(SEGMENT_PHRASES)
            parts = [
                float(vector[i * dim : (i + 1) * dim] @ self.head[i * dim : (i + 1) * dim])
                for i in range(len(SEGMENT_PHRASES))
            ]
            nearest = (self._nearest(vector[:dim]),)
        term_parts = [
            (self.term_weights[t] * feats.term_scale, t)
            for t in feats.terms
            if t in self.term_weights
        ]
        points = self.bias + sum(moved) + sum(parts) + sum(c for c, _ in term_parts)
        score = max(MIN_EFFORT, min(MAX_EFFORT, math.floor(points + 0.5)))
        reasons: list[tuple[float, str]] = []
        examples = dict(feats.examples)
        read_as: tuple[str, ...] = ()
        given = sum(v for n, v in zip(self.cue_names, moved, strict=True) if n in MATERIAL_CUES)
        if split is not None and not split.material and abs(given) >= _SHOWN:
            reasons.append((given, "no material given (the whole prompt read as the request)"))
        if split is not None and split.material:
            shown = " ".join(split.request.split())
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            read_as = (
                f"read as the request: '{shown}' (found by {split.how}); the rest, "
                f"{split.material_words} words of {_MATERIAL_KIND[split.kind]}, as material "
                f"given to it (its size and kind: {given:+.1f})",
            )
        for name, value in zip(self.cue_names, moved, strict=True):
            if name in MATERIAL_CUES:
                continue  # said once, with the request it was given to
            if abs(value) >= _SHOWN:
                if name == "kind_prior":
                    reasons.append((value, prior))
                    continue
                label = _cue_label(name, feats.words, name == "length" or name in cues)
                if name in examples:
                    label += f" ({examples[name]})"
                reasons.append((value, label))
        meaning = sum(parts)
        if abs(meaning) >= _SHOWN:
            by_segment = ", ".join(
                f"{p:+.1f} {s}" for p, s in zip(parts, SEGMENT_PHRASES, strict=True)
            )
            reasons.append((meaning, f"what it asks, read as meaning ({by_segment})"))
        for sign, word in ((1.0, "raised"), (-1.0, "lowered")):
            part = sorted((p for p in term_parts if p[0] * sign > 0), key=lambda p: -abs(p[0]))
            total = sum(p[0] for p in part)
            if abs(total) >= _SHOWN:
                shown = ", ".join(f"'{_term_label(t)}'" for _, t in part[:4])
                reasons.append((total, f"wording that {word} it: {shown}"))
        reasons.sort(key=lambda r: -abs(r[0]))
        return EffortScore(
            score,
            points,
            (
                f"base {self.bias:.1f} (learned from public data, scripts/effort/sources.yaml)",
                *read_as,
                *nearest,
                *(f"{value:+.1f} {label}" for value, label in reasons),
            ),
        )

    def _kind_prior(self, whole: NDArray[np.float32]) -> tuple[float, str]:
        """The effort of the kind_top nearest kinds of task (a softmax of their similarity), and
        how --explain says it."""
        assert self.centroids is not None
        similarity = [float(s) for s in self.centroids @ whole]
        order = sorted(range(len(self.kinds)), key=lambda i: -similarity[i])[: self.kind_top]
        weights = [
            math.exp((similarity[i] - similarity[order[0]]) / self.kind_temperature) for i in order
        ]
        prior = sum(w * self.kinds[i].effort for w, i in zip(weights, order, strict=True)) / sum(
            weights
        )
        return prior, f"the nearest kinds of task, whose effort is ~{prior:.1f}"

    def _nearest(self, whole: NDArray[np.float32]) -> str:
        assert self.centroids is not None
        similarity = self.centroids @ whole
        order = sorted(range(len(self.kinds)), key=lambda i: -float(similarity[i]))[:_NEAREST]
        shown = "; ".join(
            f"{self.kinds[i].description} (effort ~{self.kinds[i].effort:.0f}, "
            f"similarity {float(similarity[i]):.2f})"
            for i in order
        )
        return f"nearest kinds of task: {shown}"
