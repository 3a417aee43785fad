"""OpenAI's Responses API and Anthropic's Messages API through `aitherctl serve` to backends that
speak only chat completions, translated both ways: a real llama.cpp server reached as an
OpenAI-compatible endpoint (its own /v1/responses and /v1/messages never used), and the cloud
endpoint's contract double (tests/doubles/chat_server.py) for a tool call, which SmolLM2 on this
llama.cpp build does not make. The official `openai` and `anthropic` clients, their stream
helpers included (they rebuild the answer from the events and fail on an inconsistent stream)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port, llama_service, run_cli
from tests.doubles.chat_server import TOOL_ARGUMENTS, chat_double
from tests.serve.docker.serve_helpers import ledger_rows, serving

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

SAY_HI = [{"role": "user", "content": "Say hi."}]
WEATHER_TOOL = {
    "name": "weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
RESPONSES_TOOL = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": WEATHER_TOOL["input_schema"],
}


@pytest.mark.docker
def test_a_chat_only_backend_answers_responses_and_messages_translated_with_usage_in_theledger_rows(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    del llama_image
    port = free_port()
    write_profile("engine", services={"llm": llama_service(port)})
    assert run_cli("profile", "switch", "engine", "--yes").returncode == 0
    write_profile(
        "chatonly",
        endpoints={"plain": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "smollm2"}},
        routing={"max_tokens": 8},
    )
    with serving("chatonly") as (url, _process):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        raw = client.responses.with_raw_response.create(
            model="plain",
            instructions="Be brief.",
            input="Say hi.",
            max_output_tokens=5,
            temperature=0,
        )
        assert raw.headers["x-aither-backend"] == "plain"
        response = raw.parse()
        # Cut at the limit: OpenAI's `incomplete` (chat's finish_reason `length`).
        assert response.status == "incomplete"
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.output_text
        assert response.usage.output_tokens == 5
        # The stream helper checks each event against what it built so far; an answer cut
        # at the limit ends in `response.incomplete` (its `get_final_response` waits for
        # `response.completed` only, as with OpenAI's own API).
        with client.responses.stream(
            model="plain", input="Say hi.", max_output_tokens=4, temperature=0
        ) as stream:
            seen = list(stream)
        events = [event.type for event in seen]
        assert events[:2] == ["response.created", "response.in_progress"]
        assert events[-1] == "response.incomplete"
        assert "response.output_text.delta" in events
        final = seen[-1].response
        assert final.output_text
        assert final.usage.output_tokens == 4

        claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=120)
        message = claude.messages.create(
            model="plain",
            max_tokens=5,
            system="Be brief.",
            messages=SAY_HI,
            extra_body={"temperature": 0},
        )
        assert message.type == "message"
        assert message.content[0].text
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 5
        # A tool definition and a tool's answer in the history: the real server takes the
        # translated chat body (a tool role message after the assistant's tool call).
        with claude.messages.stream(
            model="plain",
            max_tokens=4,
            extra_body={"temperature": 0},
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": "What is the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny, 21 C"},
                        {"type": "text", "text": "Say it in one word."},
                    ],
                },
            ],
        ) as message_stream:
            text = "".join(message_stream.text_stream)
            streamed = message_stream.get_final_message()
        assert text
        # Greedy: a short answer that ends by itself (chat's `stop`) within the limit.
        assert streamed.stop_reason == "end_turn"
        assert streamed.usage.output_tokens <= 4

        models = {m.id: m.model_extra["aither"] for m in client.models.list()}
        assert models["plain"]["apis"] == ["chat.completions", "responses", "messages"]
        assert models["plain"]["apis_translated"] == ["responses", "messages"]
    rows = ledger_rows(tmp_path / "data")
    assert [(r["backend"], r["outcome"]) for r in rows] == [("plain", "ok")] * 4
    assert [(r["tokens_in"], r["tokens_out"]) for r in rows] == [
        (response.usage.input_tokens, 5),
        (final.usage.input_tokens, 4),
        (message.usage.input_tokens, 5),
        (streamed.usage.input_tokens, streamed.usage.output_tokens),
    ]
    assert all(r["tokens_in"] > 0 for r in rows)


def test_a_tool_call_from_a_chat_only_endpoint_reaches_both_clients_as_their_own_tool_call(
    write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    with chat_double(mode="tool_call", api_key="cloud-key") as double:
        write_profile(
            "cloud",
            endpoints={
                "cloud": {
                    "base_url": double.root + "/v1",
                    "model": "gpt-4.1",
                    "api_key_env": "CLOUD_KEY",
                    "price": {"input": 2, "output": 8},
                }
            },
            budget={"daily_usd": 5},
        )
        with serving("cloud", env={"CLOUD_KEY": "cloud-key"}) as (url, _process):
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
            response = client.responses.create(
                model="cloud",
                input="Weather in Paris?",
                tools=[RESPONSES_TOOL],
                max_output_tokens=50,
            )
            call = response.output[0]
            assert (call.type, call.name, call.arguments) == (
                "function_call",
                "weather",
                TOOL_ARGUMENTS,
            )
            with client.responses.stream(
                model="cloud",
                tools=[RESPONSES_TOOL],
                max_output_tokens=50,
                input=[
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "type": "function_call",
                        "call_id": "c0",
                        "name": "weather",
                        "arguments": "{}",
                    },
                    {"type": "function_call_output", "call_id": "c0", "output": "no city"},
                ],
            ) as stream:
                events = [event.type for event in stream]
                final = stream.get_final_response()
            assert "response.function_call_arguments.delta" in events
            assert events[-1] == "response.completed"
            streamed_call = final.output[0]
            assert (streamed_call.name, streamed_call.arguments) == ("weather", TOOL_ARGUMENTS)

            claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=60)
            message = claude.messages.create(
                model="cloud",
                max_tokens=50,
                tools=[WEATHER_TOOL],
                tool_choice={"type": "any"},
                messages=[{"role": "user", "content": "Weather in Paris?"}],
            )
            assert message.stop_reason == "tool_use"
            use = message.content[0]
            assert (use.type, use.name, use.input) == (
                "tool_use",
                "weather",
                json.loads(TOOL_ARGUMENTS),
            )
            with claude.messages.stream(
                model="cloud",
                max_tokens=50,
                tools=[WEATHER_TOOL],
                messages=[{"role": "user", "content": "Weather in Paris?"}],
            ) as message_stream:
                streamed = message_stream.get_final_message()
            assert streamed.stop_reason == "tool_use"
            assert streamed.content[0].input == json.loads(TOOL_ARGUMENTS)
            assert streamed.usage.output_tokens == 7
        sent = double.state.requests
    # What the cloud endpoint received: chat completions, tools in its shape, the history's
    # call and its output as an assistant tool call and a `tool` message.
    assert all("messages" in body and "input" not in body for body in sent)
    assert sent[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    assert sent[0]["max_tokens"] == 50
    assert [m["role"] for m in sent[1]["messages"]] == ["user", "assistant", "tool"]
    assert sent[1]["messages"][2] == {"role": "tool", "tool_call_id": "c0", "content": "no city"}
    assert sent[2]["tool_choice"] == "required"
    rows = ledger_rows(tmp_path / "data")
    assert [(r["outcome"], r["tokens_in"], r["tokens_out"]) for r in rows] == [("ok", 21, 7)] * 4
    # Priced from chat's usage ($2 / $8 a million tokens), not from the reservation's bound.
    assert [r["cost_usd"] for r in rows] == [pytest.approx((21 * 2 + 7 * 8) / 1e6)] * 4


def test_what_chat_completions_cannot_express_is_refused_with_a_400_naming_the_field(
    write_profile: Callable[..., Path],
) -> None:
    with chat_double() as double:
        write_profile("cloud", endpoints={"cloud": {"base_url": double.root + "/v1", "model": "m"}})
        with serving("cloud") as (url, _process):
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
            with pytest.raises(openai.BadRequestError) as hosted:
                client.responses.create(
                    model="cloud", input="news?", tools=[{"type": "web_search"}]
                )
            assert "`tools[0].type` cannot be translated to chat completions" in str(hosted.value)
            with pytest.raises(openai.BadRequestError) as stored:
                client.responses.create(model="cloud", input="and?", previous_response_id="r1")
            assert "`previous_response_id` cannot be translated" in str(stored.value)
            claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=60)
            with pytest.raises(anthropic.BadRequestError) as thinking:
                claude.messages.create(
                    model="cloud",
                    max_tokens=2000,
                    messages=SAY_HI,
                    thinking={"type": "enabled", "budget_tokens": 1024},
                )
            assert "`thinking` cannot be translated to chat completions" in str(thinking.value)
            assert "cloud speaks only chat completions" in str(thinking.value)
        assert double.state.requests == []  # nothing was sent half-translated


def test_a_translated_stream_falls_back_before_its_first_byte_and_never_after(
    write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    """A tier of two chat-only endpoints (contract doubles): the first answers 500, so the
    streamed Messages request is answered whole by the second; then the second's stream breaks
    after two words: the client has text already, so the answer ends with Anthropic's `error`
    event (the client raises) and the row says `partial`, with no second try."""
    with chat_double(mode="http500") as dead, chat_double() as live:
        write_profile(
            "pair",
            endpoints={
                "dead": {"base_url": dead.root + "/v1", "model": "m"},
                "live": {"base_url": live.root + "/v1", "model": "m"},
            },
            routing={"tiers": {"all": {"effort": "1-10", "candidates": ["dead", "live"]}}},
        )
        with serving("pair") as (url, _process):
            claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=60)
            with claude.messages.stream(model="all", max_tokens=20, messages=SAY_HI) as stream:
                text = "".join(stream.text_stream)
            assert text == "Hello from the double."
            live.state.mode = "broken_after"
            with (
                pytest.raises(anthropic.APIStatusError) as broken,
                claude.messages.stream(model="all", max_tokens=20, messages=SAY_HI) as stream,
            ):
                list(stream.text_stream)
            assert "live failed after the answer had started" in str(broken.value)
    rows = ledger_rows(tmp_path / "data")
    assert [(r["backend"], r["outcome"], r["attempts"]) for r in rows] == [
        ("live", "ok", 2),
        ("live", "partial", 2),
    ]
