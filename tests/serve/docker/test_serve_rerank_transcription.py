"""`/v1/rerank`, `/v1/score` and `/v1/audio/transcriptions` through `aitherctl serve`: rerank on a
real llama.cpp server started with `--reranking` (SmolLM2 is not a reranking model and no small
one is available here: its scores mean nothing, but the route, the answer's shape, the usage and
the ledger are the real server's); llama.cpp's own refusals for what it does not serve; a
transcription with the official `openai` client to the cloud endpoint's contract double."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, llama_service, run_cli
from tests.doubles.chat_server import chat_double
from tests.serve.docker.serve_helpers import ledger_rows, serving

openai = pytest.importorskip("openai")

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)  # a (silent, empty) WAV header


@pytest.mark.docker
def test_rerank_reaches_a_llamacpp_started_with_reranking_and_the_rest_get_its_refusals(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    del llama_image
    service = llama_service(free_port())
    service["args"] = [*service["args"], "--reranking"]
    write_profile(
        "ranks",
        services={
            "ranker": service,
            "chat": llama_service(free_port(), on_demand=True),
        },
    )
    assert run_cli("profile", "switch", "ranks", "--yes").returncode == 0
    with serving("ranks") as served:
        models = {
            m["id"]: m["aither"]
            for m in httpx.get(served.v1 + "/models", trust_env=False).json()["data"]
        }
        assert models["ranker"]["apis"] == ["chat.completions", "responses", "messages", "rerank"]
        assert models["ranker"]["apis_tried"] == ["audio.transcriptions"]
        assert "rerank" not in models["chat"]["apis"]

        answer = httpx.post(
            served.v1 + "/rerank",
            trust_env=False,
            timeout=120,
            json={
                "model": "ranker",
                "query": "What is a panda?",
                "top_n": 2,
                "documents": ["hi", "The giant panda is a bear species endemic to China."],
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-aither-backend"] == "ranker"
        ranked = answer.json()
        assert sorted(r["index"] for r in ranked["results"]) == [0, 1]
        assert all(isinstance(r["relevance_score"], float) for r in ranked["results"])

        # llama.cpp has no /v1/score: known, passed over, a 501 that says so.
        score = httpx.post(
            served.v1 + "/score",
            trust_env=False,
            timeout=60,
            json={"model": "ranker", "text_1": "a", "text_2": "b"},
        )
        assert score.status_code == 501
        assert score.json()["error"]["message"] == (
            "no backend here serves /v1/score (ranker unsupported: llamacpp does not serve it)"
        )
        # Without an audio model the real server answers 501 itself: passed on as a 501.
        client = openai.OpenAI(base_url=served.v1, api_key="x", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as unheard:
            client.audio.transcriptions.create(model="ranker", file=("a.wav", WAV))
        assert unheard.value.status_code == 501
        assert "The current model does not support audio input." in str(unheard.value)
        # A service started without --reranking is known not to rerank: a 501 that says why,
        # and the on-demand service is not started for it.
        plain = httpx.post(
            served.v1 + "/rerank",
            trust_env=False,
            timeout=120,
            json={"model": "chat", "query": "q", "documents": ["a"]},
        )
        assert plain.status_code == 501
        assert plain.json()["error"]["message"] == (
            "no backend here serves /v1/rerank (chat unsupported: a llama.cpp service reranks "
            "only when started with --reranking)"
        )
        assert served.backend("chat")["state"] == "stopped"
    rows = ledger_rows(tmp_path / "data")
    assert (rows[0]["backend"], rows[0]["outcome"]) == ("ranker", "ok")
    assert rows[0]["tokens_in"] == ranked["usage"]["prompt_tokens"]


def test_a_transcription_goes_to_an_endpoint_as_the_same_form_and_a_priced_one_is_refused(
    write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    with chat_double(words=("hello", "world")) as double:
        write_profile(
            "voice",
            endpoints={
                "whisper": {"base_url": double.root + "/v1", "model": "whisper-1"},
                "paid": {
                    "base_url": double.root + "/v1",
                    "model": "whisper-1",
                    "price": {"input": 1, "output": 1},
                },
            },
        )
        with serving("voice") as served:
            client = openai.OpenAI(base_url=served.v1, api_key="x", max_retries=0, timeout=60)
            text = client.audio.transcriptions.create(
                model="whisper",
                file=("speech.wav", WAV, "audio/wav"),
                language="en",
                timestamp_granularities=["word", "segment"],
                response_format="verbose_json",
            )
            assert text.text == "hello world"
            with pytest.raises(openai.APIStatusError) as priced:
                client.audio.transcriptions.create(model="paid", file=("speech.wav", WAV))
            assert priced.value.status_code == 402
            assert "the cost of transcribing audio has no upper bound" in str(priced.value)
            refused = httpx.post(
                served.v1 + "/audio/transcriptions", trust_env=False, json={"model": "whisper"}
            )
            assert refused.status_code == 415
        sent = double.state.requests
    assert sent == [
        {
            "model": "whisper-1",
            "language": "en",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"],
            "file": {"filename": "speech.wav", "bytes": len(WAV), "content_type": "audio/wav"},
        }
    ]
    rows = ledger_rows(tmp_path / "data")
    assert [(r["backend"], r["outcome"]) for r in rows] == [("whisper", "ok"), ("paid", "budget")]
