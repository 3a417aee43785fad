"""The request read apart from the material it is given (aitherctl/routing/request_split.py): the
split the eighth round's effort candidate makes at training and at scoring time."""

from __future__ import annotations

import time

from aitherctl.routing.request_split import MIN_MATERIAL, split_request

ARTICLE = (
    "The Harbour Bridge opened in March 1932 after eight years of construction. It carries rail, "
    "vehicle and pedestrian traffic and was the city's tallest structure until 1967. Its steel "
    "arch spans 503 metres, and about 160,000 vehicles cross it every day. "
) * 2


def test_a_question_after_a_passage_is_the_request() -> None:
    split = split_request(ARTICLE + "\n\nAccording to the passage, when did the bridge open?")
    assert split.request == "According to the passage, when did the bridge open?"
    assert split.material == ARTICLE.strip()
    assert (split.how, split.kind) == ("paragraph", "prose")
    assert split.material_words >= MIN_MATERIAL
    assert split.cues()["material_prose"] == 1.0


def test_an_opening_instruction_and_a_closing_question_are_both_the_request() -> None:
    split = split_request("Read the article below:\n\n" + ARTICLE + "\n\nWhat does the arch span?")
    assert split.request == "Read the article below:\nWhat does the arch span?"
    assert split.material == ARTICLE.strip()


def test_labelled_material_and_fenced_code() -> None:
    labelled = split_request(f"Context: {ARTICLE}\nQuestion: How long is the arch?")
    assert labelled.request == "Question: How long is the arch?"
    assert labelled.how == "label"
    code = "\n".join(f"def f{i}(x):\n    return x + {i}" for i in range(15))
    fenced = split_request(f"What does this module do?\n```python\n{code}\n```")
    assert fenced.request == "What does this module do?"
    assert (fenced.how, fenced.kind) == ("fence", "code")


def test_a_prompt_without_material_stays_one_piece() -> None:
    for prompt in (
        "Prove that there are infinitely many primes.",
        "Build me a web app where members book classes and pay by card, with an admin view.",
        # A maths problem's set-up is not a passage: no split, even with a short last paragraph.
        "Let $a_1 = 1$ and $a_{n+1} = a_n^2 + \\frac{1}{n}$ for $n \\ge 1$. " * 6
        + "\n\nFind $\\lim_{n \\to \\infty} a_n$.",
        ARTICLE,  # an article with no request apart from it
    ):
        split = split_request(prompt)
        assert (split.request, split.material, split.how) == (prompt.strip(), "", ""), prompt
        assert split.cues() == {}


def test_splitting_a_long_prompt_stays_fast() -> None:
    prompt = ARTICLE * 200 + "\n\nSummarise the decisions in three bullet points."
    start = time.perf_counter()
    for _ in range(20):
        split = split_request(prompt)
    assert split.request == "Summarise the decisions in three bullet points."
    assert (time.perf_counter() - start) / 20 < 0.002
