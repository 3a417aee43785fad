"""The Responses and Messages APIs' pieces that `serve` reads (pure): the request-cost bound of
their bodies, their usage fields, and the end of their event streams (the event texts are as the
real llama.cpp server streams them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aitherctl.routing.request_cost import (
    IMAGE_TOKENS_MAX,
    TOOLS_PREAMBLE_TOKENS,
    output_limit,
    request_bound,
)
from aitherctl.serve.apis import (
    EventWatcher,
    FormFile,
    ModelApis,
    apis_of,
    chat_usage,
    encode_multipart,
    incomplete_answer,
    known_not_served,
    stream_error,
)
from aitherctl.serve.dispatcher import error_body

HISTORY = "The quick brown fox jumps over the lazy dog. " * 40  # 1,800 bytes
TOOL = {
    "name": "weather",
    "description": "The weather in a city. " * 10,
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def test_a_responses_body_is_bounded_by_its_input_instructions_and_max_output_tokens() -> None:
    body = {"model": "m", "instructions": HISTORY, "input": HISTORY, "max_output_tokens": 70}
    bound = request_bound("/v1/responses", body)
    assert bound.input_tokens >= 2 * len(HISTORY)
    assert bound.output_tokens == 70
    assert output_limit(body) == 70


def test_a_responses_item_list_counts_every_item_and_an_image_at_its_bound() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": HISTORY}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": HISTORY},
        {"type": "function_call_output", "call_id": "c1", "output": HISTORY},
        {"role": "user", "content": [{"type": "input_image", "image_url": "data:,x"}]},
    ]
    bound = request_bound("/v1/responses", {"input": items, "max_output_tokens": 1})
    assert bound.input_tokens >= 3 * len(HISTORY) + IMAGE_TOKENS_MAX


def test_a_messages_body_counts_system_messages_tools_and_max_tokens() -> None:
    plain = {"model": "m", "max_tokens": 90, "messages": [{"role": "user", "content": "hi"}]}
    full = {
        **plain,
        "system": [{"type": "text", "text": HISTORY}],
        "tools": [TOOL, TOOL],
        "messages": [
            {"role": "user", "content": HISTORY},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": HISTORY}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}],
                    }
                ],
            },
        ],
    }
    small, large = request_bound("/v1/messages", plain), request_bound("/v1/messages", full)
    assert small.output_tokens == large.output_tokens == 90
    assert large.input_tokens - small.input_tokens >= (
        3 * len(HISTORY) + 2 * _bytes(TOOL) + TOOLS_PREAMBLE_TOKENS + IMAGE_TOKENS_MAX
    )


def test_count_tokens_generates_nothing() -> None:
    body = {"model": "m", "max_tokens": 90, "messages": [{"role": "user", "content": HISTORY}]}
    bound = request_bound("/v1/messages/count_tokens", body)
    assert bound.output_tokens == 0
    assert bound.input_tokens >= len(HISTORY)


def test_usage_of_each_api_reads_as_chat_usage_with_cache_hits_as_input() -> None:
    assert chat_usage({"input_tokens": 33, "output_tokens": 5, "total_tokens": 38}) == {
        "prompt_tokens": 33,
        "completion_tokens": 5,
    }
    assert chat_usage({"cache_read_input_tokens": 32, "input_tokens": 1, "output_tokens": 5}) == {
        "prompt_tokens": 33,
        "completion_tokens": 5,
    }
    assert chat_usage({"output_tokens": 3}) == {"completion_tokens": 3}
    assert chat_usage({"prompt_tokens": 4, "completion_tokens": 2}) == {
        "prompt_tokens": 4,
        "completion_tokens": 2,
    }


MESSAGES_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"x","type":"message",'
    b'"role":"assistant","content":[],"usage":{"cache_read_input_tokens":32,"input_tokens":1,'
    b'"output_tokens":0}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"message_stop usage"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
    b'"usage":{"output_tokens":3}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
RESPONSES_STREAM = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"delta":"response.completed"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r",'
    b'"status":"completed","usage":{"input_tokens":33,"output_tokens":3,"total_tokens":36}}}\n\n'
)


def _watch(
    route: str, stream: bytes, size: int, limit: int | None = None
) -> tuple[EventWatcher, bytes, list[bool]]:
    watcher = EventWatcher(route, limit)
    out, done = b"", []
    for start in range(0, len(stream), size):
        out += watcher.feed(stream[start : start + size])
        done.append(watcher.done)
    return watcher, out + watcher.flush(), done


def test_a_messages_stream_passes_unchanged_its_usage_is_read_and_it_ends_at_message_stop() -> None:
    for size in (1, 7, 64, len(MESSAGES_STREAM)):
        watcher, out, done = _watch("/v1/messages", MESSAGES_STREAM, size)
        assert out == MESSAGES_STREAM
        assert watcher.usage == {"prompt_tokens": 33, "completion_tokens": 3}
        assert done[-1]
        assert not any(done[:-1])  # not at the text that names the event


def test_a_responses_stream_ends_at_response_completed_with_its_usage() -> None:
    for size in (1, 5, len(RESPONSES_STREAM)):
        watcher, out, done = _watch("/v1/responses", RESPONSES_STREAM, size)
        assert out == RESPONSES_STREAM
        assert watcher.usage == {"prompt_tokens": 33, "completion_tokens": 3}
        assert done[-1]
        assert not any(done[:-1])


def test_a_responses_stream_cut_at_max_output_tokens_ends_at_response_incomplete() -> None:
    incomplete = RESPONSES_STREAM.replace(b"response.completed", b"response.incomplete")
    watcher, out, done = _watch("/v1/responses", incomplete, 11)
    assert out == incomplete
    assert done[-1]
    assert watcher.usage == {"prompt_tokens": 33, "completion_tokens": 3}


def _events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in stream.strip().split(b"\n\n"):
        name, data = event.split(b"\n")
        out.append((name.removeprefix(b"event: ").decode(), json.loads(data[5:])))
    return out


def test_a_native_responses_stream_that_reached_max_output_tokens_ends_incomplete() -> None:
    """llama.cpp's own /v1/responses ends an answer cut at the limit with `response.completed`
    and `status: "completed"` (RESPONSES_STREAM's last event, as the real server sends it)."""
    for size in (1, 5, 64, len(RESPONSES_STREAM)):
        watcher, out, done = _watch("/v1/responses", RESPONSES_STREAM, size, limit=3)
        events = _events(out)
        assert events[0] == _events(RESPONSES_STREAM)[0]  # the text, named as it was
        name, last = events[-1]
        assert name == "response.incomplete"
        assert last["type"] == "response.incomplete"
        assert last["response"]["status"] == "incomplete"
        assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        assert last["response"]["usage"]["output_tokens"] == 3
        assert done[-1]
        assert not any(done[:-1])
        assert watcher.usage == {"prompt_tokens": 33, "completion_tokens": 3}


def test_vllms_incomplete_response_in_a_completed_event_ends_as_response_incomplete() -> None:
    """vLLM 0.32's own /v1/responses says `incomplete` in the response but names the last
    event `response.completed` (checked on the real server, max_output_tokens 3)."""
    vllm = RESPONSES_STREAM.replace(
        b'"status":"completed"',
        b'"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}',
    )
    for size in (1, len(vllm)):
        _watcher, out, done = _watch("/v1/responses", vllm, size, limit=3)
        name, last = _events(out)[-1]
        assert (name, last["type"]) == ("response.incomplete", "response.incomplete")
        assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        assert done[-1]


def test_a_native_responses_answer_under_its_limit_stays_completed_byte_for_byte() -> None:
    for size in (1, 7, len(RESPONSES_STREAM)):
        _watcher, out, done = _watch("/v1/responses", RESPONSES_STREAM, size, limit=4)
        assert out == RESPONSES_STREAM
        assert done[-1]
    whole = json.dumps({"status": "completed", "usage": {"output_tokens": 3}}).encode()
    assert incomplete_answer(whole, 4) == whole
    assert incomplete_answer(whole, None) == whole
    cut = json.loads(incomplete_answer(whole, 3))
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_stream_cut_before_its_last_event_is_not_done() -> None:
    watcher, _out, done = _watch("/v1/messages", MESSAGES_STREAM[:-40], 9)
    assert not any(done)
    assert watcher.usage == {"prompt_tokens": 33, "completion_tokens": 3}


def test_models_list_the_apis_each_engine_takes() -> None:
    chat_apis = ["chat.completions", "responses", "messages"]
    assert apis_of("llamacpp") == ModelApis(chat_apis, [], ["audio.transcriptions"])
    assert apis_of("llamacpp", ("--reranking",)).apis == [*chat_apis, "rerank"]
    assert apis_of("vllm").tried == ["rerank", "score", "audio.transcriptions"]
    assert apis_of("ollama") == ModelApis(chat_apis, [], [])
    assert apis_of("generic") == ModelApis(
        chat_apis, ["responses", "messages"], ["rerank", "score", "audio.transcriptions"]
    )
    assert apis_of("openai") == apis_of("generic")
    assert known_not_served("llamacpp", "/v1/score")
    assert known_not_served("ollama", "/v1/rerank")
    assert not known_not_served("llamacpp", "/v1/rerank")
    assert known_not_served("ollama", "/v1/messages/count_tokens")
    assert not known_not_served("llamacpp", "/v1/messages/count_tokens")
    assert not known_not_served("generic", "/v1/messages")
    assert not known_not_served("ollama", "/v1/chat/completions")


def _anthropic_reads(stream: bytes) -> str:
    """What the official `anthropic` client makes of a Messages stream with these bytes: the
    text, or the error it raises."""
    anthropic = pytest.importorskip("anthropic")
    httpx = pytest.importorskip("httpx2")  # the HTTP library this client is built on

    def answer(request: Any) -> Any:
        del request
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)

    client = anthropic.Anthropic(
        base_url="http://serve.invalid",
        api_key="k",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    try:
        with client.messages.stream(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            return "".join(events.text_stream)
    except anthropic.APIError as exc:
        return f"error: {exc.message}"


def test_an_error_that_ends_a_messages_stream_is_one_anthropics_client_raises() -> None:
    start, delta = MESSAGES_STREAM.split(b"event: message_delta")[0].split(b"\n\n", 1)
    block = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
    )
    started = start + b"\n\n" + block + delta
    failure = error_body("chat failed after the answer had started: reset", "upstream_error")
    raised = _anthropic_reads(started + stream_error("/v1/messages", failure))
    assert raised.startswith("error: ")
    assert "chat failed after the answer had started: reset" in raised
    # The chat form (a bare `data:` event) is skipped by it: the answer would look whole.
    assert _anthropic_reads(started + b"data: " + failure + b"\n\n") == "message_stop usage"
    assert stream_error("/v1/responses", failure) == b"data: " + failure + b"\n\n"


def test_a_rerank_counts_the_query_once_per_document_and_generates_nothing() -> None:
    one = request_bound("/v1/rerank", {"query": HISTORY, "documents": ["a"]})
    three = request_bound("/v1/rerank", {"query": HISTORY, "documents": ["a", "b", "c"]})
    assert one.output_tokens == three.output_tokens == 0
    assert three.input_tokens - one.input_tokens >= 2 * len(HISTORY)
    score = request_bound("/v1/score", {"text_1": HISTORY, "text_2": ["a", "b"]})
    assert score.input_tokens >= 2 * len(HISTORY)


def test_a_form_is_encoded_with_each_field_and_file_as_its_own_part() -> None:
    body, content_type = encode_multipart(
        {"model": "m", "timestamp_granularities[]": ["word", "segment"]},
        (FormFile("file", 'a"b.wav', "audio/wav", b"RIFF"),),
    )
    boundary = content_type.removeprefix("multipart/form-data; boundary=").encode()
    parts = body.split(b"--" + boundary)
    assert parts[0] == b""
    assert parts[-1] == b"--\r\n"
    assert parts[1:-1] == [
        b'\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n',
        b'\r\nContent-Disposition: form-data; name="timestamp_granularities[]"\r\n\r\nword\r\n',
        b'\r\nContent-Disposition: form-data; name="timestamp_granularities[]"\r\n\r\nsegment\r\n',
        b'\r\nContent-Disposition: form-data; name="file"; filename="a\\"b.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\r\n",
    ]
