"""Responses and Messages requests as chat completions and chat answers back as each API's own
(pure): what is translated, what is refused by name, and a chat stream (as the real llama.cpp
server and OpenAI's reference send it) read in pieces of any size."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aitherctl.serve.translate import Untranslatable, messages_to_chat, responses_to_chat
from aitherctl.serve.translate_answers import ChatStreamTranslator, from_chat

FUNCTION = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_a_responses_conversation_becomes_chat_messages_with_tools() -> None:
    chat = responses_to_chat(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Weather? "},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                    ],
                },
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": "rain"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": FUNCTION}],
            "tool_choice": {"type": "function", "name": "weather"},
            "max_output_tokens": 30,
            "text": {
                "format": {"type": "json_schema", "name": "w", "schema": FUNCTION},
                "verbosity": "low",
            },
            "reasoning": {"effort": "low", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "store": False,
            "stream": True,
        }
    )
    assert [m["role"] for m in chat["messages"]] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
    ]
    assert chat["messages"][2]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA"},
    }
    assert [c["id"] for c in chat["messages"][3]["tool_calls"]] == ["c1", "c2"]
    assert chat["messages"][5] == {"role": "tool", "tool_call_id": "c2", "content": "rain"}
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": FUNCTION}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["max_tokens"] == 30
    assert chat["response_format"]["json_schema"]["schema"] == FUNCTION
    assert chat["reasoning_effort"] == "low"
    assert chat["verbosity"] == "low"
    assert "include" not in chat
    assert chat["stream"] is True


def test_a_messages_conversation_puts_tool_results_right_after_the_call() -> None:
    chat = messages_to_chat(
        {
            "model": "m",
            "max_tokens": 20,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {}}],
            "stop_sequences": ["END"],
            "tools": [{"name": "weather", "input_schema": FUNCTION}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "metadata": {"user_id": "u1"},
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Looking."},
                        {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "P"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": "x",
                            "is_error": True,
                        },
                        {"type": "text", "text": "Thanks."},
                    ],
                },
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "P"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: x"},
        {"role": "user", "content": "Thanks."},
    ]
    assert chat["tool_choice"] == "required"
    assert chat["parallel_tool_calls"] is False
    assert (chat["stop"], chat["user"], chat["max_tokens"]) == (["END"], "u1", 20)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("r", {"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ("r", {"input": "x", "previous_response_id": "r1"}, "previous_response_id"),
        ("r", {"input": "x", "background": True}, "background"),
        ("r", {"input": [{"type": "reasoning", "summary": []}]}, "input[0]"),  # no text
        ("r", {"input": "x", "reasoning": {"summary": "detailed"}}, "reasoning.summary"),
        ("r", {"input": "x", "include": ["message.output_text.logprobs"]}, "include[0]"),
        (
            "r",
            {"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]},
            "tools[0].type",
        ),
        (
            "r",
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ("m", {"messages": [], "thinking": {"type": "enabled", "budget_tokens": 9}}, "thinking"),
        ("m", {"messages": [], "top_k": 5}, "top_k"),
        (
            "m",
            {"messages": [], "tools": [{"type": "web_search_20250305", "name": "s"}]},
            "tools[0].type",
        ),
        (
            "m",
            {"messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages[0].content[0].type",
        ),
        (
            "m",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image"}],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0]",
        ),
    ],
)
def test_what_chat_cannot_express_is_refused_by_name(
    route: str, body: dict[str, Any], field: str
) -> None:
    translate = responses_to_chat if route == "r" else messages_to_chat
    with pytest.raises(Untranslatable) as refused:
        translate({"model": "m", **body})
    assert refused.value.field == field
    assert f"`{field}` cannot be translated to chat completions" in refused.value.message


WHOLE_TOOL_CALL = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
).encode()


def test_a_whole_chat_answer_reads_as_a_message_and_as_a_response() -> None:
    message = json.loads(from_chat("/v1/messages", WHOLE_TOOL_CALL, {"model": "alias"}))
    assert message["model"] == "alias"
    assert message["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
    ]
    assert (message["stop_reason"], message["usage"]) == (
        "tool_use",
        {"input_tokens": 12, "output_tokens": 9},
    )
    response = json.loads(from_chat("/v1/responses", WHOLE_TOOL_CALL, {"model": "alias"}))
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]
    assert response["output"][0]["content"][0]["text"] == "Let me look."
    assert response["output"][1]["call_id"] == "call_1"
    assert response["status"] == "completed"
    assert response["usage"]["total_tokens"] == 21


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


CHAT_STREAM = (
    _chunk({"role": "assistant", "content": None})
    + _chunk({"content": "Hel"})
    + _chunk({"content": "lo"})
    + _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": ""},
                }
            ]
        }
    )
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})
    + _chunk({}, "tool_calls")
    + b'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9}}\n\n'
    + b"data: [DONE]\n\n"
)


def _events(route: str, size: int) -> tuple[ChatStreamTranslator, list[dict[str, Any]]]:
    translator = ChatStreamTranslator(route, {"model": "alias"})
    out = b""
    for start in range(0, len(CHAT_STREAM), size):
        out += translator.feed(CHAT_STREAM[start : start + size])
    out += translator.flush()
    events = []
    for event in out.split(b"\n\n"):
        if event:
            name, data = event.split(b"\n")
            assert name == b"event: " + json.loads(data[6:])["type"].encode()
            events.append(json.loads(data[6:]))
    return translator, events


@pytest.mark.parametrize("size", [1, 13, len(CHAT_STREAM)])
def test_a_chat_stream_reads_as_messages_events(size: int) -> None:
    translator, events = _events("/v1/messages", size)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "weather",
        "input": {},
    }
    assert "".join(e["delta"].get("partial_json", "") for e in events[6:8]) == '{"city":"Paris"}'
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {"input_tokens": 12, "output_tokens": 9}
    assert translator.done
    assert translator.usage == {"prompt_tokens": 12, "completion_tokens": 9}


@pytest.mark.parametrize("size", [1, 13, len(CHAT_STREAM)])
def test_a_chat_stream_reads_as_responses_events(size: int) -> None:
    translator, events = _events("/v1/responses", size)
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    completed = events[-1]["response"]
    assert [item["type"] for item in completed["output"]] == ["message", "function_call"]
    assert completed["output"][0]["content"][0]["text"] == "Hello"
    assert completed["output"][1]["arguments"] == '{"city":"Paris"}'
    assert completed["usage"]["input_tokens"] == 12
    assert translator.done


def test_a_chat_stream_cut_before_done_is_not_done() -> None:
    translator = ChatStreamTranslator("/v1/messages", {})
    translator.feed(CHAT_STREAM[: CHAT_STREAM.index(b"data: [DONE]")])
    translator.flush()
    assert not translator.done


# llama.cpp and vLLM send a reasoning model's thinking as `reasoning_content` in chat deltas
# (vLLM's newer name: `reasoning`), before the answer's `content`.
REASONING_STREAM = (
    _chunk({"role": "assistant", "content": None})
    + _chunk({"reasoning_content": "The user greets."})
    + _chunk({"reasoning_content": " Greet back."})
    + _chunk({"content": "Hello"})
    + _chunk({"content": "!"})
    + _chunk({}, "stop")
    + b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n'
    + b"data: [DONE]\n\n"
)


def _mock_http_client(stream: bytes, content_type: str = "text/event-stream") -> Any:
    """An HTTP client (the one the official clients are built on) whose every answer is
    `stream`: what translate_answers wrote, read by the official client's own parser."""
    httpx = pytest.importorskip("httpx2")

    def answer(request: Any) -> Any:
        del request
        return httpx.Response(200, headers={"content-type": content_type}, content=stream)

    return httpx.Client(transport=httpx.MockTransport(answer))


def _translated(route: str, stream: bytes, size: int) -> bytes:
    translator = ChatStreamTranslator(route, {"model": "alias"})
    out = b""
    for start in range(0, len(stream), size):
        out += translator.feed(stream[start : start + size])
    return out + translator.flush()


@pytest.mark.parametrize("size", [1, 17, len(REASONING_STREAM)])
def test_reasoning_in_a_chat_stream_is_a_thinking_block_for_anthropics_client(size: int) -> None:
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(
        base_url="http://serve.invalid",
        api_key="k",
        max_retries=0,
        http_client=_mock_http_client(_translated("/v1/messages", REASONING_STREAM, size)),
    )
    with client.messages.stream(
        model="m", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello!"
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "The user greets. Greet back."
    assert final.content[1].text == "Hello!"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7


@pytest.mark.parametrize("size", [1, 17, len(REASONING_STREAM)])
def test_reasoning_in_a_chat_stream_is_a_reasoning_item_for_openais_client(size: int) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(
        base_url="http://serve.invalid/v1",
        api_key="k",
        max_retries=0,
        http_client=_mock_http_client(_translated("/v1/responses", REASONING_STREAM, size)),
    )
    events = list(client.responses.create(model="m", input="hi", stream=True))
    deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert deltas == ["The user greets.", " Greet back."]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "The user greets. Greet back."
    assert final.output_text == "Hello!"


def test_reasoning_in_a_whole_chat_answer_is_read_by_both_clients() -> None:
    whole = json.dumps(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": "Hello!",
                        "reasoning_content": "Greet back.",
                    },
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7},
        }
    ).encode()
    anthropic = pytest.importorskip("anthropic")
    openai = pytest.importorskip("openai")
    claude = anthropic.Anthropic(
        base_url="http://serve.invalid",
        api_key="k",
        max_retries=0,
        http_client=_mock_http_client(
            from_chat("/v1/messages", whole, {"model": "m"}), "application/json"
        ),
    )
    message = claude.messages.create(
        model="m", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert [
        (b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in message.content
    ] == [("thinking", "Greet back."), ("text", "Hello!")]
    gpt = openai.OpenAI(
        base_url="http://serve.invalid/v1",
        api_key="k",
        max_retries=0,
        http_client=_mock_http_client(
            from_chat("/v1/responses", whole, {"model": "m"}), "application/json"
        ),
    )
    response = gpt.responses.create(model="m", input="hi")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == "Greet back."
    assert response.output_text == "Hello!"


def test_reasoning_given_back_on_the_next_turn_is_the_assistant_turns_reasoning_content() -> None:
    """Claude Code sends the thinking blocks and Codex CLI the reasoning items of an answer
    back with the next turn; they were a 400 (once serve gave them, every next turn failed)."""
    answer = json.loads(
        from_chat(
            "/v1/responses",
            json.dumps(
                {
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "tool_calls",
                            "message": {
                                "role": "assistant",
                                "content": "Looking.",
                                "reasoning_content": "Need weather.",
                                "tool_calls": [
                                    {
                                        "id": "call_1",
                                        "type": "function",
                                        "function": {"name": "weather", "arguments": "{}"},
                                    }
                                ],
                            },
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 7},
                }
            ).encode(),
            {"model": "m"},
        )
    )
    chat = responses_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Weather?"},
                *answer["output"],
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
        }
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Looking.",
        "reasoning_content": "Need weather.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        ],
    }
    assert chat["messages"][2]["role"] == "tool"
    only = responses_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Hi"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "Hmm."}],
                },
            ],
        }
    )
    assert only["messages"][1] == {"role": "assistant", "content": "", "reasoning_content": "Hmm."}
    with pytest.raises(Untranslatable) as encrypted:
        responses_to_chat(
            {
                "model": "m",
                "input": [
                    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}
                ],
            }
        )
    assert encrypted.value.field == "input[0]"

    message = json.loads(
        from_chat(
            "/v1/messages",
            json.dumps(
                {
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {
                                "role": "assistant",
                                "content": "Hello!",
                                "reasoning_content": "Greet back.",
                            },
                        }
                    ],
                }
            ).encode(),
            {"model": "m"},
        )
    )
    chat = messages_to_chat(
        {
            "model": "m",
            "max_tokens": 9,
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": message["content"]},
                {"role": "user", "content": "Again"},
            ],
        }
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Hello!",
        "reasoning_content": "Greet back.",
    }
