"""The effort score: bounds, determinism, speed, and agreement with the hand-labelled set."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from aitherctl.core.effort import MAX_EFFORT, MIN_EFFORT, score_effort
from aitherctl.core.routing import DEFAULT_TIER_EFFORTS, tier_for_effort_default

DATA = Path(__file__).parent.parent / "data" / "effort_labelled.yaml"
HOLDOUT = Path(__file__).parent.parent / "data" / "effort_holdout.yaml"
TIERS = [name for name, _ in DEFAULT_TIER_EFFORTS]


def _labelled(path: Path = DATA) -> list[dict[str, str]]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(rows, list)
    return rows


def _agreement(rows: list[dict[str, str]]) -> tuple[float, float]:
    exact = near = 0
    for row in rows:
        got = tier_for_effort_default(score_effort(row["prompt"]).score)
        exact += got == row["tier"]
        near += abs(TIERS.index(got) - TIERS.index(row["tier"])) <= 1
    return exact / len(rows), near / len(rows)


def test_labelled_set_is_large_and_covers_every_tier() -> None:
    rows = _labelled()
    assert len(rows) >= 150
    counts = {tier: sum(1 for r in rows if r["tier"] == tier) for tier in TIERS}
    assert all(count >= 20 for count in counts.values()), counts
    assert len({r["prompt"] for r in rows}) == len(rows), "duplicate prompts"


def test_agreement_with_labelled_set() -> None:
    exact, near = _agreement(_labelled())
    # Measured 95% exact on this set (which it was tuned on) when this test was written; the
    # floor leaves room for tuning without letting the heuristic silently decay.
    assert exact >= 0.88
    assert near >= 0.99


def test_agreement_with_holdout_set() -> None:
    # Written after tuning and never tuned against: measured 89% exact, 100% within one tier.
    exact, near = _agreement(_labelled(HOLDOUT))
    assert exact >= 0.8
    assert near >= 0.97


@pytest.mark.parametrize(
    ("prompt", "low", "high"),
    [
        ("hi", 1, 2),
        ("What is the capital of France?", 1, 3),
        ("Write a Python function that parses a CSV line with quoted fields.", 4, 6),
        ("Prove that there are infinitely many primes.", 7, 8),
    ],
)
def test_examples(prompt: str, low: int, high: int) -> None:
    assert low <= score_effort(prompt).score <= high


def test_bounds_and_reasons() -> None:
    assert score_effort("").score == MIN_EFFORT
    huge = "Prove rigorously and design a complete production-ready system. " * 400
    result = score_effort(huge)
    assert result.score == MAX_EFFORT
    assert result.reasons
    assert all(reason[0] in "+-" or "capped" in reason for reason in result.reasons)


def test_deterministic() -> None:
    prompt = _labelled()[100]["prompt"]
    assert {score_effort(prompt) for _ in range(20)} == {score_effort(prompt)}


def test_well_under_a_millisecond() -> None:
    prompts = [row["prompt"] for row in _labelled()]
    score_effort(prompts[0])  # warm the regex caches
    start = time.perf_counter()
    for prompt in prompts:
        score_effort(prompt)
    per_prompt_s = (time.perf_counter() - start) / len(prompts)
    assert per_prompt_s < 0.0005, f"{per_prompt_s * 1e6:.0f} µs per prompt"
