"""OpenAI's Responses API and Anthropic's Messages API through `aitherctl serve`, passed through
to a real llama.cpp server (SmolLM2 on the CPU), as Codex CLI and Claude Code reach it: the
official `openai` and `anthropic` clients, never only our own code."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, llama_service, run_cli, web_service
from tests.serve.docker.serve_helpers import Served, ledger_rows, serving

pytestmark = pytest.mark.docker

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

SECRET = "s3cret-key-for-passthrough-0123"


@pytest.fixture
def llama_port(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> int:
    """Profile `apis`: one llama.cpp service `chat`, in tier `all`; running."""
    del llama_image
    port = free_port()
    write_profile(
        "apis",
        services={"chat": llama_service(port)},
        routing={"max_tokens": 8, "tiers": {"all": {"effort": "1-10", "candidates": ["chat"]}}},
    )
    result = run_cli("profile", "switch", "apis", "--yes")
    assert result.returncode == 0, result.stderr
    return port


def test_responses_and_messages_pass_through_with_usage_in_theledger_rows(
    llama_port: int, tmp_path: Path
) -> None:
    with serving("apis", env={"AITHER_API_KEYS": f"{SECRET} interactive coder"}) as (url, _p):
        client = openai.OpenAI(base_url=url + "/v1", api_key=SECRET, max_retries=0, timeout=120)
        raw = client.responses.with_raw_response.create(
            model="chat", input="Say hi.", max_output_tokens=5
        )
        assert raw.headers["x-aither-backend"] == "chat"
        response = raw.parse()
        # Cut at the limit: llama.cpp itself says `completed` here; serve says what happened.
        assert response.status == "incomplete"
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.output_text
        assert response.usage.output_tokens == 5
        events = list(
            client.responses.create(
                model="all", input="Say hi.", max_output_tokens=3, stream=True, temperature=0
            )
        )
        assert events[-1].type == "response.incomplete"
        assert events[-1].response.incomplete_details.reason == "max_output_tokens"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta")
        streamed_usage = events[-1].response.usage

        claude = anthropic.Anthropic(base_url=url, api_key=SECRET, max_retries=0, timeout=120)
        message = claude.messages.create(
            model="chat",
            max_tokens=5,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hi."}],
        )
        assert message.type == "message"
        assert message.content[0].text
        assert message.usage.output_tokens == 5
        with claude.messages.stream(
            model="auto",
            max_tokens=4,
            extra_body={"temperature": 0},
            messages=[{"role": "user", "content": "Say hi."}],
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text
        assert final.stop_reason == "max_tokens"
        counted = claude.messages.count_tokens(
            model="chat", messages=[{"role": "user", "content": "Say hi."}]
        )
        assert counted.input_tokens > 0

        models = {m.id: m for m in client.models.list()}
        assert models["chat"].model_extra["aither"]["apis"] == [
            "chat.completions",
            "responses",
            "messages",
        ]
    rows = ledger_rows(tmp_path / "data")
    assert [(r["backend"], r["outcome"], r["client"]) for r in rows] == [
        ("chat", "ok", "coder")
    ] * 5
    cache = lambda u: u.cache_read_input_tokens or 0  # noqa: E731 - llama.cpp's prompt cache
    assert [(r["tokens_in"], r["tokens_out"]) for r in rows] == [
        (response.usage.input_tokens, 5),
        (streamed_usage.input_tokens, 3),
        (message.usage.input_tokens + cache(message.usage), 5),
        (final.usage.input_tokens + cache(final.usage), 4),
        (None, None),  # count_tokens answers a count, not a usage: nothing was generated
    ]
    assert SECRET not in str(rows)


def test_a_priced_messages_request_over_budget_is_refused_and_an_unserved_route_is_a_501(
    llama_port: int, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    """A priced endpoint (the same real llama.cpp server at $1,000 a million tokens) and a
    budget that cannot pay for a 1,000-token answer: 402, nothing sent, a `budget` row. A
    route that no backend serves (a generic web server answers 501 to a POST; an Ollama
    endpoint is known not to serve count_tokens): a 501 that says so."""
    write_profile(
        "metered",
        services={"web": {**web_service(free_port()), "on_demand": True}},
        endpoints={
            "paid": {
                "base_url": f"http://127.0.0.1:{llama_port}/v1",
                "model": "smollm2",
                "engine": "llamacpp",
                "price": {"input": 1000, "output": 1000},
            },
            "olla": {
                "base_url": f"http://127.0.0.1:{llama_port}/v1",
                "model": "smollm2",
                "engine": "ollama",
            },
        },
        routing={"max_tokens": 8},
        budget={"daily_usd": 0.5},
    )
    with serving("metered") as (url, _process):
        claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=120)
        with pytest.raises(anthropic.APIStatusError) as refused:
            claude.messages.create(
                model="paid", max_tokens=1000, messages=[{"role": "user", "content": "Say hi."}]
            )
        assert refused.value.status_code == 402
        assert "daily budget" in str(refused.value)
        small = claude.messages.create(
            model="paid", max_tokens=3, messages=[{"role": "user", "content": "Say hi."}]
        )
        assert small.usage.output_tokens == 3

        with pytest.raises(anthropic.APIStatusError) as unserved:
            claude.messages.create(
                model="web", max_tokens=3, messages=[{"role": "user", "content": "Say hi."}]
            )
        assert unserved.value.status_code == 501
        assert "no backend here serves /v1/messages" in str(unserved.value)
        with pytest.raises(anthropic.APIStatusError) as known:
            claude.messages.count_tokens(
                model="olla", messages=[{"role": "user", "content": "Say hi."}]
            )
        assert known.value.status_code == 501
        assert "ollama does not serve it" in str(known.value)
    rows = ledger_rows(tmp_path / "data")
    assert [(r["backend"], r["outcome"]) for r in rows][:2] == [("paid", "budget"), ("paid", "ok")]
    assert rows[0]["cost_usd"] == 0
    assert rows[1]["cost_usd"] == pytest.approx(
        (small.usage.input_tokens + (small.usage.cache_read_input_tokens or 0) + 3) * 1000 / 1e6
    )


def test_a_messages_request_falls_back_from_a_dead_backend_before_the_first_byte(
    llama_port: int, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    """A tier whose first candidate is down (nothing listens on its port): the streamed Messages
    request is answered whole by the next one, and its one ledger row counts both attempts."""
    write_profile(
        "fallback",
        endpoints={
            "dead": {
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "model": "smollm2",
                "engine": "llamacpp",
            },
            "live": {
                "base_url": f"http://127.0.0.1:{llama_port}/v1",
                "model": "smollm2",
                "engine": "llamacpp",
            },
        },
        routing={"tiers": {"all": {"effort": "1-10", "candidates": ["dead", "live"]}}},
    )
    # temperature 0: llama.cpp sends `message_start` with the first partial answer that holds
    # text; a sampled answer whose four tokens make one emoji has none, and the stream then
    # starts at `content_block_start` (seen here once in a few runs). Greedy "Say hi." -> "Hello".
    with serving("fallback") as (url, _process):
        claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=120)
        with claude.messages.with_streaming_response.create(
            model="all",
            max_tokens=4,
            stream=True,
            extra_body={"temperature": 0},
            messages=[{"role": "user", "content": "Say hi."}],
        ) as raw:
            assert raw.headers["x-aither-backend"] == "live"
            events = [event.type for event in raw.parse()]
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    rows = ledger_rows(tmp_path / "data")
    assert [(r["backend"], r["outcome"], r["attempts"], r["tokens_out"]) for r in rows] == [
        ("live", "ok", 2, 4)
    ]


def _access_lines(served: Served, count: int, timeout_s: float = 30.0) -> list[str]:
    """serve's request-log lines, once `count` of them are written (each when its handler
    ends, which for a stream is after the backend closed its side)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [line for line in served.log().splitlines() if " → " in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_client_that_leaves_at_the_last_event_got_a_whole_answer_and_no_traceback(
    llama_port: int, tmp_path: Path
) -> None:
    """A client may close its connection as soon as it reads the API's last event (a script,
    bench_apis.py); the answer was whole. It used to end in `Cannot write to closing
    transport`, a traceback in serve's log per request and a 499 in its request log."""
    del llama_port
    ends = {
        "/v1/messages": b"event: message_stop",
        "/v1/responses": b"event: response.incomplete",
        "/v1/chat/completions": b"data: [DONE]",
    }
    bodies = {
        "/v1/messages": {"max_tokens": 3, "messages": [{"role": "user", "content": "Hi."}]},
        "/v1/responses": {"max_output_tokens": 3, "input": "Hi."},
        "/v1/chat/completions": {"max_tokens": 3, "messages": [{"role": "user", "content": "Hi."}]},
    }
    with serving("apis", env={"AITHER_API_KEYS": f"{SECRET} interactive coder"}) as served:
        with httpx.Client(
            trust_env=False, timeout=120, headers={"Authorization": f"Bearer {SECRET}"}
        ) as client:
            for path, body in bodies.items():
                with client.stream(
                    "POST", served.url + path, json={"model": "chat", "stream": True, **body}
                ) as answer:
                    assert answer.status_code == 200
                    for line in answer.iter_lines():
                        if line.encode().startswith(ends[path]):
                            break  # leave now: the connection closes with the body unread
                    else:
                        raise AssertionError(f"{path}: no {ends[path]!r}")
        lines = _access_lines(served, 3)
        log = served.log()
    assert [line.split(" → ")[1].split()[1] for line in lines] == ["200", "200", "200"], log
    assert "Traceback" not in log
    assert "Error handling request" not in log
    rows = ledger_rows(tmp_path / "data")
    assert [(r["backend"], r["outcome"], r["tokens_out"]) for r in rows] == [("chat", "ok", 3)] * 3
