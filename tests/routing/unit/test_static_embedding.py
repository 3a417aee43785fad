"""The static embedding the sixth round's effort candidate reads
(aitherctl/routing/static_embedding.py) and the scorer's embedding head (effort_model.py).

The shipped weights have no embedding head, so `wordllama` is a training requirement
(scripts/effort/requirements.txt), not a runtime one: these tests run where it is installed and
skip elsewhere. They use the real table shipped in its wheel, no double.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("wordllama") is None,
    reason="wordllama not installed (pip install -r scripts/effort/requirements.txt)",
)


def test_similar_requests_are_closer_than_unrelated_ones() -> None:
    import numpy as np

    from aitherctl.routing.static_embedding import DIM, StaticEmbedding

    embedding = StaticEmbedding.shipped()
    app = embedding.vector("Build me a web app where members book classes and pay by card.")
    shop = embedding.vector("Create an online shop application with logins, a cart and payments.")
    greeting = embedding.vector("good morning, how are you today?")
    assert app.shape == (3 * DIM,)
    # Each segment has length 1.
    assert np.allclose(
        [np.linalg.norm(app[i * DIM : (i + 1) * DIM]) for i in range(3)], 1.0, atol=1e-4
    )
    assert float(app[:DIM] @ shop[:DIM]) > float(app[:DIM] @ greeting[:DIM])


def test_a_very_long_prompt_is_read_by_its_head_and_tail() -> None:
    from aitherctl.routing.static_embedding import MAX_CHARS, StaticEmbedding

    embedding = StaticEmbedding.shipped()
    long = "The committee met. " * 2000 + "Which day?"
    assert len(long) > MAX_CHARS
    ids = embedding.token_ids(long)
    # About 10,000 tokens in full; only MAX_CHARS characters are read, the question included.
    assert len(ids) < 2000
    assert ids[-3:] == embedding.token_ids("Which day?")[-3:]


def test_a_head_scores_with_the_nearest_kinds_and_the_segments_in_the_reasons() -> None:
    from aitherctl.routing.effort_model import LearnedEffortScorer
    from aitherctl.routing.static_embedding import DIM, StaticEmbedding

    embedding = StaticEmbedding.shipped()
    passage = embedding.vector("According to the passage, when did the bridge open?")[:DIM]
    app = embedding.vector("Build a complete application with users, payments and reports.")[:DIM]
    # A head that reads only the opening words, in the direction of the build request: a
    # build request scores higher than a look-up.
    head = [0.0] * (3 * DIM)
    head[DIM : 2 * DIM] = [4.0 * float(v) for v in app - passage]
    weights = SimpleNamespace(
        BIAS=5.0,
        CUE_NAMES=("length",),
        TREES=(((-1, 0.0, -1, -1, 0.0),),),
        HEAD=tuple(head),
        KINDS=(
            ("a question on a given passage (xquad)", 2.0),
            ("building a whole application (srdd)", 8.0),
        ),
        CENTROIDS=(tuple(float(v) for v in passage), tuple(float(v) for v in app)),
        TERM_WEIGHTS={},
    )
    scorer = LearnedEffortScorer.from_module(weights, embedding)  # type: ignore[arg-type]
    build = scorer.score("Build me an application for a gym with bookings and card payments.")
    lookup = scorer.score("According to the text, on which day was the report circulated?")
    assert build.score > lookup.score
    assert build.reasons[1].startswith("nearest kinds of task: building a whole application")
    assert lookup.reasons[1].startswith("nearest kinds of task: a question on a given passage")
    assert any(
        "what it asks, read as meaning" in r and "its opening words" in r for r in build.reasons[2:]
    ), build.reasons


def test_weights_with_split_read_the_request_and_say_what_the_material_gave() -> None:
    from aitherctl.routing.effort_model import MATERIAL_CUES, LearnedEffortScorer
    from aitherctl.routing.static_embedding import DIM, StaticEmbedding

    embedding = StaticEmbedding.shipped()
    question = "According to the passage, when did the bridge open?"
    # One tree on the material's size: with more than 20 words of material, +1.
    names = ("length", *MATERIAL_CUES)
    tree = ((1, 3.0, 1, 2, 0.5), (-1, 0.0, -1, -1, 0.0), (-1, 0.0, -1, -1, 1.0))
    # A head that scores the request's own embedding: the same request scores the same however
    # long the passage before it.
    head = [0.0] * (3 * DIM)
    head[:DIM] = [float(v) for v in embedding.vector(question)[:DIM]]
    weights = SimpleNamespace(
        BIAS=2.0,
        CUE_NAMES=names,
        TREES=(tree,),
        HEAD=tuple(head),
        KINDS=(("a question on a given passage (xquad)", 2.0),),
        CENTROIDS=(tuple(float(v) for v in embedding.vector(question)[:DIM]),),
        TERM_WEIGHTS={},
        SPLIT=True,
    )
    scorer = LearnedEffortScorer.from_module(weights, embedding)  # type: ignore[arg-type]
    passage = "The Harbour Bridge opened in March 1932 after eight years of construction. " * 8
    short = scorer.score(passage + "\n\n" + question)
    longer = scorer.score(passage * 5 + "\n\n" + question)
    assert short.points == longer.points  # the material's size is only a cue, past its threshold
    assert short.reasons[1].startswith(f"read as the request: '{question[:40]}")
    assert "words of prose, as material given to it (its size and kind: +0.5)" in short.reasons[1]
    alone = scorer.score(question)
    assert alone.points == short.points - 1.0  # no material: the tree's other side
    assert not any(r.startswith("read as the request") for r in alone.reasons)
    assert any("no material given" in r for r in alone.reasons), alone.reasons
