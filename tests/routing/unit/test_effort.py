"""The effort score: what a user can check in `aitherctl run --explain`.

The learned scorer (aitherctl/routing/effort_model.py) is trained on public data
(scripts/effort/sources.yaml); these tests hold it to bands, never to exact outputs: kinds of prompt
(tests/data/effort_kinds.yaml, phrased here by hand and never trained on) land in their band. Its
accuracy on data it never saw is measured by scripts/effort/train.py's development figure, its
speed by bench/bench_effort.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from aitherctl.routing.effort import (
    MAX_EFFORT,
    MIN_EFFORT,
    EffortScore,
    EffortScorer,
)
from aitherctl.routing.effort_features import extract_features
from aitherctl.routing.effort_heuristic import HeuristicEffortScorer, score_effort_heuristic
from aitherctl.routing.static_embedding import learned_scorer, score_effort
from aitherctl.routing.table import DEFAULT_TIER_EFFORTS, tier_for_effort_default

DATA = Path(__file__).parents[2] / "data" / "effort_labelled.yaml"
HOLDOUT = Path(__file__).parents[2] / "data" / "effort_holdout.yaml"
KINDS = Path(__file__).parents[2] / "data" / "effort_kinds.yaml"
TIERS = [name for name, _ in DEFAULT_TIER_EFFORTS]

GERMAN_PROOF = "Beweisen Sie, dass es unendlich viele Primzahlen gibt."
CHINESE_PROOF = "证明：存在无穷多个素数。"
OLYMPIAD = (
    "Let $n \\geq 2$ be an integer and let $a_1, a_2, \\ldots, a_n$ be positive reals with "
    "$a_1 a_2 \\cdots a_n = 1$. Prove that $\\sum_{i=1}^{n} \\frac{a_i}{\\sqrt{a_i + n - 1}} "
    "\\geq \\frac{n}{\\sqrt{n}}$ and determine all cases of equality."
)
PASSAGE = (
    "The quarterly report was circulated to all regional offices on Monday. " * 12
    + "Sales in the northern region rose by four percent, while the southern region stayed flat. "
    * 8
    + "\n\nAccording to the text, on which day was the report circulated?"
)


def _fired(result: EffortScore, phrase: str) -> bool:
    """A reason names `phrase` as present (not "absent: ...")."""
    return any(phrase in r and "absent:" not in r for r in result.reasons[1:])


def _band(score: int) -> int:
    return 0 if score <= 3 else 1 if score <= 6 else 2


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


def test_agreement_with_the_projects_labelled_sets() -> None:
    # The tuning set is one of the training sources; the hold-out set never is. Measured when
    # this test was written: see scripts/effort/RESULTS.md. Floors, so retraining has room.
    exact, near = _agreement(_labelled())
    assert exact >= 0.6
    assert near >= 0.95
    exact, near = _agreement(_labelled(HOLDOUT))
    assert exact >= 0.6
    assert near >= 0.95


@pytest.mark.parametrize("prompt", [GERMAN_PROOF, CHINESE_PROOF])
def test_a_proof_request_in_another_language_is_not_small_talk(prompt: str) -> None:
    result = score_effort(prompt)
    assert _band(result.score) >= 1, result


def test_a_hard_olympiad_problem_is_in_the_highest_band() -> None:
    result = score_effort(OLYMPIAD)
    assert _band(result.score) == 2, result


@pytest.mark.parametrize("prompt", ["hi, how are you", "hi", "thanks, that worked"])
def test_small_talk_is_in_the_lowest_band(prompt: str) -> None:
    assert _band(score_effort(prompt).score) == 0


def test_a_long_passage_does_not_make_a_lookup_hard() -> None:
    lookup = score_effort(PASSAGE)
    assert _band(lookup.score) <= 1, lookup
    # The same passage with substantial work asked of it scores higher: the passage's length is
    # not what decides.
    work = score_effort(
        PASSAGE.rsplit("\n\n", 1)[0] + "\n\nUsing the text, write a detailed analysis of the "
        "regional sales strategy and a forecast for the next four quarters, with the assumptions "
        "behind each figure."
    )
    assert work.score > lookup.score, (lookup.reasons, work.reasons)


def test_a_small_function_to_complete_is_not_hard_work() -> None:
    # A bare code skeleton is not hard work (HumanEval-style prompts were often scored 7-10 by
    # the fourth round's model, RESULTS.md; this small one was not, so this is a floor).
    skeleton = (
        "Complete the following Python function.\n\n"
        "def count_vowels(text: str) -> int:\n"
        '    """Return how many vowels (a, e, i, o, u, either case) the text contains.\n\n'
        '    >>> count_vowels("Hello World")\n    3\n    >>> count_vowels("")\n    0\n'
        '    """\n'
    )
    result = score_effort(skeleton)
    assert _band(result.score) <= 1, result


def test_substantial_work_outranks_a_fact() -> None:
    fact = score_effort("What is the capital of France?")
    work = score_effort(
        "Write an R Shiny app that loads a CSV, lets the user pick two columns, fits a linear "
        "model and shows the residual plots, with a short report of the coefficients."
    )
    assert work.score > fact.score
    assert _band(fact.score) == 0


@pytest.mark.parametrize(
    "prompt",
    ["when did the berlin wall fall", "Wann fiel die Berliner Mauer?", "who painted the mona lisa"],
)
def test_a_look_up_question_is_in_the_lowest_band(prompt: str) -> None:
    # Search-style questions, with or without a question mark, in English and German.
    assert _band(score_effort(prompt).score) == 0


def test_an_expert_scenario_outranks_a_look_up() -> None:
    lookup = score_effort("who wrote the novel moby dick")
    scenario = score_effort(
        "Suppose a tenant stops paying rent after the landlord refuses to repair the heating. "
        "Under which legal doctrines could each side argue their case, and how would a court "
        "weigh them?"
    )
    assert scenario.score > lookup.score
    assert _band(scenario.score) >= 1, scenario


@pytest.mark.parametrize(
    "prompt",
    [
        "What is the value of \\[1^3 - 2^3 + 3^3 - 4^3 + \\dots + 19^3 - 20^3?\\]",
        "How many ordered pairs of integers $(x, y)$ satisfy $x^2 + 3y^2 = 2024$?",
    ],
)
def test_a_short_contest_problem_is_not_a_look_up(prompt: str) -> None:
    result = score_effort(prompt)
    assert _band(result.score) >= 1, result


def test_reasons_say_what_moved_the_score_and_add_up_to_it() -> None:
    result = score_effort("Prove that the square root of 2 is irrational, step by step.")
    assert result.reasons[0].startswith("base ")
    moved = result.reasons[1:]
    assert moved
    assert all(reason[0] in "+-" for reason in moved), moved
    assert _fired(result, "asks for a proof")
    # Each shown contribution is rounded and the small ones are left out: the shown ones add up
    # to the score's points within what that leaves.
    base = float(result.reasons[0].split()[1])
    shown = sum(float(r.split()[0]) for r in moved)
    assert abs(base + shown - result.points) < 1.5, result


def _kinds() -> list[dict[str, object]]:
    rows = yaml.safe_load(KINDS.read_text(encoding="utf-8"))
    assert isinstance(rows, list)
    return rows


# Kinds the shipped (fifth round) model still misplaces, as the independent check of issue 21
# found: the sixth to eighth rounds' candidates (scripts/effort/train_embedding.py) did not meet
# the rule to ship (RESULTS.md). Strict: a model that places them right makes these fail, and the
# marks come off.
MISPLACED_KINDS = {
    "look up a fact in a given passage",
    "classify a given text",
    "extract fields from a given text",
    "summarise a given text",
    "build an application",
    "deep domain question",
}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, reason="issue 21: misplaced kind"))
        if k["kind"] in MISPLACED_KINDS
        else k
        for k in _kinds()
    ],
    ids=lambda k: str(k["kind"]),
)
def test_each_kind_of_prompt_lands_in_its_band(kind: dict[str, object]) -> None:
    # Hand-phrased prompts of the kinds the independent check found misplaced (issue 21): short
    # tasks on a given passage, hard real-user build and plan requests, maths by level, easy
    # programming. Every prompt of a kind in its band, or (easy programming) not above it.
    prompts = kind["prompts"]
    assert isinstance(prompts, list)
    want = kind["band"]
    got = {p: score_effort(p).score for p in prompts}
    if kind["kind"] == "easy programming problem":
        assert all(_band(s) <= want for s in got.values()), got
    else:
        assert all(_band(s) == want for s in got.values()), got


def test_bounds() -> None:
    for prompt in ("", "?", "Design a complete, production-ready system. " * 2000):
        assert MIN_EFFORT <= score_effort(prompt).score <= MAX_EFFORT


def test_the_shipped_weights_load() -> None:
    scorer = learned_scorer()
    assert scorer is learned_scorer()  # loaded once per process
    assert len(scorer.term_weights) > 1000
    assert {"proof", "maths_notation", "small_talk", "length"} <= set(scorer.cue_names)
    assert len(scorer.trees) >= 50


def test_deterministic() -> None:
    prompt = _labelled()[100]["prompt"]
    assert {score_effort(prompt) for _ in range(20)} == {score_effort(prompt)}


def test_every_scorer_shares_one_interface() -> None:
    scorers: list[EffortScorer] = [learned_scorer(), HeuristicEffortScorer()]
    for scorer in scorers:
        assert isinstance(scorer.score("hello", None), EffortScore)


def test_the_keyword_heuristic_is_kept_for_comparison() -> None:
    # The old scorer stays available (scripts/effort/evaluate.py compares against it).
    assert score_effort_heuristic("hi").score <= 2
    assert score_effort_heuristic("Prove that there are infinitely many primes.").score >= 7


def test_the_model_graded_scorer_falls_back_to_the_learned_score_without_a_grader() -> None:
    # `routing.classifier: model` with no free local model: no request is sent, the learned score
    # stands and the reason says so (the HTTP path is tested against a real llama.cpp server in
    # tests/routing/docker/test_run_fallback.py).
    from aitherctl.routing.grader import ModelGradedScorer

    scorer: EffortScorer = ModelGradedScorer(
        clients=None,  # type: ignore[arg-type]  # never used without a grader
        grader=None,
        fallback=learned_scorer(),
    )
    result = scorer.score(GERMAN_PROOF)
    assert result.score == score_effort(GERMAN_PROOF).score
    assert result.reasons[-1] == "classifier: no local model to grade; heuristic used"


def test_a_run_of_chinese_characters_is_not_a_long_word() -> None:
    # Chinese has no spaces: a sentence is one "token" of the word pattern, not a long word.
    chinese = "请用简单的语言解释一下为什么天空在白天是蓝色的而不是别的颜色"
    cues = dict(extract_features(chinese).cues)
    assert "long_words" not in cues
    assert "word_length" not in cues
    mixed_prompt = "请解释 photosynthesis and chemiosmosis in chloroplasts 的过程"
    mixed = dict(extract_features(mixed_prompt).cues)
    assert mixed["long_words"] > 0


@pytest.mark.parametrize(
    ("prompt", "word"),
    [
        ("Which legal doctrines decide who pays for the repair?", "legal"),
        ("Erkläre die Grundlagen der Thermodynamik.", "thermodyn"),
        ("请解释量子纠缠。", "量子"),
    ],
)
def test_a_specialised_field_is_a_cue_with_the_word_that_fired_it(prompt: str, word: str) -> None:
    feats = extract_features(prompt)
    assert "field" in dict(feats.cues)
    assert dict(feats.examples)["field"].lower().startswith(word.lower())


class _TwoWordEmbedding:
    """A two-dimension stand-in for the static embedding (three segments, each of length 1):
    "summarise" points one way, anything else the other. Drives the kind-prior path of
    LearnedEffortScorer, which the shipped weights do not use yet (RESULTS.md, seventh round)."""

    def vector(self, text: str) -> object:
        import numpy as np

        whole = [1.0, 0.0] if "summarise" in text else [0.0, 1.0]
        return np.array(whole * 3, dtype=np.float32)


@pytest.mark.skipif(
    importlib.util.find_spec("numpy") is None,
    reason="numpy not installed (pip install -r scripts/effort/requirements.txt): the kind prior "
    "is a candidate's, not the shipped weights', so numpy is a training requirement",
)
def test_the_nearest_kinds_of_task_move_the_score_and_say_so() -> None:
    from types import SimpleNamespace

    from aitherctl.routing.effort_model import LearnedEffortScorer

    # One tree on kind_prior: a prompt nearest the easy kind goes left (-2), else right (+2).
    weights = SimpleNamespace(
        BIAS=5.0,
        CUE_NAMES=("kind_prior", "length"),
        TREES=(((0, 4.0, 1, 2, 0.0), (-1, 0.0, -1, -1, -2.0), (-1, 0.0, -1, -1, 2.0)),),
        HEAD=(0.0,) * 6,
        KINDS=(("a summary of a given text (t0)", 2.0), ("building an application (srdd)", 8.0)),
        CENTROIDS=((1.0, 0.0), (0.0, 1.0)),
        KIND_TOP=2,
        KIND_TEMPERATURE=0.05,
        TERM_WEIGHTS={},
    )
    scorer = LearnedEffortScorer.from_module(weights, _TwoWordEmbedding())  # type: ignore[arg-type]
    easy = scorer.score("please summarise this paragraph")
    hard = scorer.score("build me a shop with logins and payments")
    assert (easy.score, hard.score) == (3, 7)
    assert "-2.0 the nearest kinds of task, whose effort is ~2.0" in easy.reasons
    assert "+2.0 the nearest kinds of task, whose effort is ~8.0" in hard.reasons
    assert easy.reasons[1].startswith("nearest kinds of task: a summary of a given text (t0)")


def test_the_cjk_class_is_compiled_only_for_a_text_that_may_hold_cjk() -> None:
    """Compiling the CJK character class is a third of the features' start-up: a prompt in Latin
    script (accents, dashes and curly quotes included) never compiles it; a Chinese one does, and
    its characters become terms."""
    import subprocess
    import sys

    probe = (
        "from aitherctl.routing import effort_features as f\n"
        "f.extract_features('Résumé — “quotes”, naïve café: how many?')\n"
        "print(f._cjk.cache_info().currsize)\n"
        "terms = f.extract_features('证明这个定理').terms\n"
        "print(' '.join(t for t in terms if t.startswith('c:')))\n"
        "print(f._cjk.cache_info().currsize)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    before, terms, after = done.stdout.splitlines()
    assert (before, after) == ("0", "1")
    assert {"c:证", "c:证明", "c:定理"} <= set(terms.split())
