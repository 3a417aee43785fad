"""The request-cost model (pure): every part of the wire body counts, and the bound is never below
what a provider could bill (a byte-level tokenizer's worst case: one token per byte)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aitherctl.routing.cost import Price
from aitherctl.routing.request_cost import (
    IMAGE_TOKENS_MAX,
    RequestBound,
    output_limit,
    request_bound,
)

CHAT = "/v1/chat/completions"
HISTORY = "The quick brown fox jumps over the lazy dog. " * 40  # 1,800 bytes


def _chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **extra}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


USER = {"role": "user", "content": "What is the weather in Paris?"}


@pytest.mark.parametrize(
    ("part", "extra"),
    [
        ("system prompt", {"messages": [{"role": "system", "content": HISTORY}, USER]}),
        (
            "history",
            {
                "messages": [
                    {"role": "user", "content": HISTORY},
                    {"role": "assistant", "content": HISTORY},
                    USER,
                ]
            },
        ),
        (
            "tool call",
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "weather",
                                    "arguments": json.dumps({"city": HISTORY}),
                                },
                            }
                        ],
                    },
                ]
            },
        ),
        (
            "tool result",
            {"messages": [USER, {"role": "tool", "tool_call_id": "call_1", "content": HISTORY}]},
        ),
        (
            "tool definitions",
            {
                "messages": [USER],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "weather",
                            "description": HISTORY,
                            "parameters": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                            },
                        },
                    }
                ],
            },
        ),
        (
            "response schema",
            {
                "messages": [USER],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "w", "schema": {"description": HISTORY}},
                },
            },
        ),
    ],
)
def test_each_part_of_the_body_counts_at_least_its_bytes(part: str, extra: dict[str, Any]) -> None:
    del part
    base = request_bound(CHAT, _chat(USER), 100)
    bigger = request_bound(CHAT, {"model": "m", **extra}, 100)
    assert bigger.input_tokens >= base.input_tokens + len(HISTORY)
    assert bigger.output_tokens == 100


def test_an_image_counts_the_most_any_provider_bills_for_one_whatever_its_url() -> None:
    image = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
    two = {"role": "user", "content": [*image["content"], image["content"][1]]}
    one_image = request_bound(CHAT, _chat(image), 10).input_tokens
    assert one_image >= IMAGE_TOKENS_MAX
    assert request_bound(CHAT, _chat(two), 10).input_tokens >= one_image + IMAGE_TOKENS_MAX


def test_the_output_bound_is_the_limit_sent_times_the_answers_asked_for() -> None:
    assert request_bound(CHAT, _chat(USER), 256).output_tokens == 256
    assert request_bound(CHAT, _chat(USER, n=3), 256).output_tokens == 768
    assert request_bound(CHAT, _chat(USER, max_tokens=50)).output_tokens == 50
    assert request_bound(CHAT, _chat(USER, max_completion_tokens=70)).output_tokens == 70
    completions = {"model": "m", "prompt": ["one", "two"], "best_of": 2, "n": 1}
    assert request_bound("/v1/completions", completions, 16).output_tokens == 64
    assert request_bound("/v1/embeddings", {"input": "hello"}, 16).output_tokens == 0


def test_without_a_limit_there_is_no_output_bound_to_read() -> None:
    assert output_limit(_chat(USER)) is None
    assert output_limit(_chat(USER, max_tokens=0)) is None
    assert output_limit(_chat(USER, max_tokens=True)) is None
    assert output_limit(_chat(USER, max_tokens=12, max_completion_tokens=40)) == 40


@pytest.mark.parametrize(
    "body",
    [
        _chat({"role": "system", "content": "Ты — помощник. 你好 🙂"}, USER),
        _chat({"role": "user", "content": [{"type": "text", "text": HISTORY}]}, name="x"),
        _chat(
            USER,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        ),
    ],
)
def test_the_input_bound_is_never_below_one_token_per_byte_of_text(body: dict[str, Any]) -> None:
    """A byte-level BPE tokenizer (GPT, Llama 3, Qwen, DeepSeek) never emits more tokens than
    the bytes it encodes; the template's special tokens come on top."""
    text_bytes = sum(len(s.encode()) for s in _strings(body["messages"]))
    text_bytes += sum(len(s.encode()) for s in _strings(body.get("tools")))
    bound = request_bound(CHAT, body, 1)
    assert bound.input_tokens >= text_bytes + 16 * len(body["messages"]) + 16


def test_completions_and_embeddings_count_text_and_token_arrays() -> None:
    assert request_bound("/v1/completions", {"prompt": "héllo"}, 1).input_tokens >= 6
    tokens = request_bound("/v1/completions", {"prompt": [1, 2, 3, 4]}, 1)
    assert tokens.input_tokens >= 4
    assert tokens.output_tokens == 1  # one prompt given as tokens
    assert request_bound("/v1/embeddings", {"input": ["ab", "cd"]}).input_tokens >= 4


def test_the_worst_case_is_the_bound_at_the_price() -> None:
    bound = RequestBound(1000, 500)
    assert bound.cost_usd(Price(1.0, 2.0)) == pytest.approx((1000 + 1000) / 1e6)
    assert bound.cost_usd(Price(0, 0)) == 0.0
    assert bound.cost_usd(None) == 0.0
