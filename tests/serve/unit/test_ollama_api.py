"""Ollama's `/api/chat` and `/api/generate` as chat completions and back (pure): options, images,
tool calls and their answers, the NDJSON stream, and what is refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aitherctl.serve.ollama_api import (
    OllamaStream,
    from_chat,
    from_embeddings,
    is_streaming,
    load_answer,
    load_request,
    model_name,
    to_chat,
    to_embeddings,
)
from aitherctl.serve.translate import Untranslatable

PNG = "iVBORw0KGgo="
HI = [{"role": "user", "content": "hi"}]


def test_a_chat_body_becomes_chat_completions_with_its_options() -> None:
    chat = to_chat(
        "/api/chat",
        {
            "model": "chat:latest",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is this?", "images": [PNG]},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "look", "arguments": {"x": 1}}}],
                },
                {"role": "tool", "content": "a cat", "tool_name": "look"},
            ],
            "options": {"num_predict": 9, "temperature": 0, "stop": ["\n"], "seed": 3},
            "format": "json",
            "keep_alive": "5m",
        },
    )
    assert chat["model"] == "chat"
    assert chat["stream"] is True  # Ollama streams unless told not to
    assert chat["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG}"},
    }
    call = chat["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "look", "arguments": '{"x": 1}'}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": call["id"], "content": "a cat"}
    assert (chat["max_tokens"], chat["temperature"], chat["stop"], chat["seed"]) == (
        9,
        0,
        ["\n"],
        3,
    )
    assert chat["response_format"] == {"type": "json_object"}


def test_a_generate_body_is_a_system_and_a_user_message() -> None:
    chat = to_chat(
        "/api/generate",
        {
            "model": "m",
            "prompt": "Hi",
            "system": "Brief.",
            "stream": False,
            "options": {"num_predict": -1},
        },
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert chat["stream"] is False
    assert "max_tokens" not in chat  # -1: no limit
    assert not is_streaming("/api/generate", {"stream": False})
    assert is_streaming("/api/generate", {})
    assert model_name("a:latest") == "a"
    assert model_name("a:q4") == "a:q4"


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/api/chat", {"messages": HI, "options": {"top_k": 5}}, "options.top_k"),
        ("/api/chat", {"messages": HI, "think": True}, "think"),
        ("/api/chat", {"messages": []}, "messages"),
        ("/api/chat", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ("/api/generate", {"prompt": ""}, "prompt"),
        ("/api/generate", {"prompt": "x", "raw": True}, "raw"),
        ("/api/generate", {"prompt": "x", "suffix": "y"}, "suffix"),
        ("/api/generate", {"prompt": "x", "images": ["AAAA"]}, "images"),
    ],
)
def test_what_chat_cannot_express_is_refused_by_name(route: str, body: dict, field: str) -> None:
    with pytest.raises(Untranslatable) as refused:
        to_chat(route, {"model": "m", **body})
    assert refused.value.field == field


def test_a_whole_answer_reads_as_ollamas() -> None:
    chat = json.dumps(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {"role": "assistant", "content": "Hello"},
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2},
        }
    ).encode()
    answer = json.loads(from_chat("/api/chat", chat, {"model": "chat"}, 5))
    assert answer["message"] == {"role": "assistant", "content": "Hello"}
    assert (answer["done"], answer["done_reason"]) == (True, "length")
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (7, 2)
    generated = json.loads(from_chat("/api/generate", chat, {"model": "chat"}))
    assert generated["response"] == "Hello"


def test_a_chat_stream_reads_as_ndjson_lines_with_the_tool_call_whole() -> None:
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return (
            b"data: "
            + json.dumps(
                {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            ).encode()
            + b"\n\n"
        )

    stream = (
        chunk({"role": "assistant", "content": "Hi"})
        + chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a"'}}
                ]
            }
        )
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
        + chunk({}, "tool_calls")
        + b'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}\n\n'
        + b"data: [DONE]\n\n"
    )
    for size in (1, 7, len(stream)):
        reader = OllamaStream("/api/chat", {"model": "chat"})
        out = b"".join(reader.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["done"] for line in lines] == [False, False, True]
        assert lines[0]["message"]["content"] == "Hi"
        assert lines[1]["message"]["tool_calls"] == [
            {"function": {"name": "f", "arguments": {"a": 1}}}
        ]
        assert (lines[2]["eval_count"], lines[2]["prompt_eval_count"]) == (6, 4)
        assert reader.done


@pytest.mark.parametrize(
    ("route", "body", "what"),
    [
        ("/api/generate", {"model": "m"}, "load"),
        ("/api/generate", {"model": "m", "prompt": ""}, "load"),
        ("/api/generate", {"model": "m", "keep_alive": 0}, "unload"),
        ("/api/generate", {"model": "m", "keep_alive": "0s"}, "unload"),
        ("/api/generate", {"model": "m", "keep_alive": "5m"}, "load"),
        ("/api/chat", {"model": "m", "messages": []}, "load"),
        ("/api/chat", {"model": "m"}, "load"),
        ("/api/chat", {"model": "m", "messages": [], "keep_alive": 0}, "unload"),
        ("/api/generate", {"model": "m", "prompt": "hi", "keep_alive": 0}, None),
        ("/api/chat", {"model": "m", "messages": HI}, None),
    ],
)
def test_a_request_with_nothing_to_answer_is_a_load_or_an_unload(
    route: str, body: dict[str, Any], what: str | None
) -> None:
    assert load_request(route, body) == what


def test_load_and_unload_are_answered_as_ollama_answers_them() -> None:
    generate = json.loads(load_answer("/api/generate", {"model": "m"}, "load"))
    assert {k: generate[k] for k in ("model", "response", "done", "done_reason")} == {
        "model": "m",
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    chat = json.loads(load_answer("/api/chat", {"model": "m"}, "unload"))
    assert chat["message"] == {"role": "assistant", "content": ""}
    assert (chat["done"], chat["done_reason"]) == (True, "unload")


def test_embed_bodies_become_openai_embeddings_and_the_answers_ollama_s() -> None:
    assert to_embeddings("/api/embed", {"model": "m:latest", "input": "a"}) == {
        "model": "m",
        "input": ["a"],
    }
    assert to_embeddings("/api/embeddings", {"model": "m", "prompt": "a"})["input"] == ["a"]
    for body, field in (
        ({"model": "m", "input": "a", "options": {"num_ctx": 8}}, "options.num_ctx"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": "a", "images": []}, "images"),
    ):
        with pytest.raises(Untranslatable) as refused:
            to_embeddings("/api/embed", body)
        assert refused.value.field == field
    answer = json.dumps(
        {
            "data": [{"index": 1, "embedding": [0.5]}, {"index": 0, "embedding": [0.25]}],
            "usage": {"prompt_tokens": 7},
        }
    ).encode()
    embed = json.loads(from_embeddings("/api/embed", answer, {"model": "m"}, 5))
    assert embed == {
        "model": "m",
        "embeddings": [[0.25], [0.5]],
        "total_duration": 5,
        "load_duration": 0,
        "prompt_eval_count": 7,
    }
    assert json.loads(from_embeddings("/api/embeddings", answer, {}, 5)) == {"embedding": [0.25]}
