"""Ollama's API on `aitherctl serve`, spoken to with the official `ollama` Python client (as an
editor plugin or a chat UI that speaks only Ollama does), in front of a real llama.cpp server
(SmolLM2 on the CPU) that `serve` starts on demand for the first `/api/chat`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, llama_service
from tests.doubles.chat_server import TOOL_ARGUMENTS, chat_double
from tests.serve.docker.serve_helpers import ledger_rows, serving

ollama = pytest.importorskip("ollama")

SECRET = "s3cret-key-for-the-ollama-api-01"
SAY_HI = [{"role": "user", "content": "Say hi."}]


def _status(url: str) -> dict[str, Any]:
    """`GET /status` (the scheduler's backends and events), with the key."""
    answer = httpx.get(
        url + "/status", headers={"Authorization": f"Bearer {SECRET}"}, trust_env=False, timeout=10
    )
    answer.raise_for_status()
    status: dict[str, Any] = answer.json()
    return status


def _state(url: str, backend: str) -> str:
    return next(b["state"] for b in _status(url)["backends"] if b["backend"] == backend)


@pytest.mark.docker
def test_an_ollama_client_chats_and_generates_through_serve_starting_the_service_on_demand(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    del llama_image
    write_profile(
        "olla",
        services={"chat": llama_service(free_port(), on_demand=True)},
        routing={"max_tokens": 8, "tiers": {"all": {"effort": "1-10", "candidates": ["chat"]}}},
    )
    env = {"AITHER_API_KEYS": f"{SECRET} batch editor"}
    with serving("olla", env=env) as served:
        assert _state(served.url, "chat") == "stopped"
        client = ollama.Client(host=served.url, headers={"Authorization": f"Bearer {SECRET}"})
        assert [m.model for m in client.list().models] == ["chat", "smollm2", "all", "auto"]
        assert client.ps().models == []

        # The first request starts the on-demand service, as any chat request does.
        answer = client.chat(
            model="chat:latest",
            messages=SAY_HI,
            stream=False,
            options={"num_predict": 5, "temperature": 0},
        )
        assert _state(served.url, "chat") == "ready"
        events = [e["event"] for e in _status(served.url)["events"] if e["backend"] == "chat"]
        assert "started" in events or "loaded" in events, events
        assert answer.done
        assert answer.done_reason == "length"
        assert answer.message.role == "assistant"
        assert answer.message.content
        assert answer.eval_count == 5
        assert answer.prompt_eval_count > 0

        parts = list(
            client.chat(
                model="all",
                messages=SAY_HI,
                stream=True,
                options={"num_predict": 4, "temperature": 0},
            )
        )
        assert all(not p.done for p in parts[:-1])
        assert parts[-1].done
        assert "".join(p.message.content for p in parts[:-1])
        assert parts[-1].eval_count == 4

        generated = client.generate(
            model="chat",
            prompt="Say hi.",
            system="Be brief.",
            stream=False,
            options={"num_predict": 3},
        )
        assert generated.response
        assert generated.eval_count == 3
        pieces = list(
            client.generate(model="chat", prompt="Say hi.", stream=True, options={"num_predict": 3})
        )
        assert "".join(p.response for p in pieces)
        assert pieces[-1].done

        assert [m.model for m in client.ps().models] == ["chat"]
        shown = client.show("chat")
        assert shown.details.family == "llamacpp"
        assert "completion" in shown.capabilities
        with pytest.raises(ollama.ResponseError) as unknown:
            client.chat(model="nonesuch", messages=SAY_HI, stream=False)
        assert unknown.value.status_code == 404
        assert "unknown model 'nonesuch'" in unknown.value.error
        with pytest.raises(ollama.ResponseError) as refused:
            client.chat(model="chat", messages=SAY_HI, stream=False, options={"top_k": 5})
        assert refused.value.status_code == 400
        assert "`options.top_k` cannot be translated to chat completions" in refused.value.error
        assert httpx.get(served.url + "/api/version", trust_env=False).status_code == 401
        version = httpx.get(
            served.url + "/api/version",
            trust_env=False,
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        assert version.json() == {"version": "0.12.0"}
    rows = ledger_rows(tmp_path / "data")
    # The four answers, then the refused request (nothing sent: no tokens); the unknown model
    # was never routed.
    assert [(r["backend"], r["outcome"], r["client"], r["priority"]) for r in rows] == [
        ("chat", "ok", "editor", "batch")
    ] * 4 + [("chat", "failed", "editor", "batch")]
    assert [r["tokens_out"] for r in rows] == [5, 4, 3, 3, None]
    assert rows[0]["tokens_in"] == answer.prompt_eval_count
    assert rows[0]["load_wait_s"] > 0  # the first one waited for the start


def test_an_ollama_tool_call_comes_back_with_its_arguments_as_an_object(
    write_profile: Callable[..., Path],
) -> None:
    with chat_double(mode="tool_call") as double:
        write_profile(
            "cloud", endpoints={"cloud": {"base_url": double.root + "/v1", "model": "gpt-4.1"}}
        )
        tool = {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
        with serving("cloud") as served:
            client = ollama.Client(host=served.url)
            history = [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "weather", "arguments": {"city": "Rome"}}}
                    ],
                },
                {"role": "tool", "content": "sunny", "tool_name": "weather"},
                {"role": "user", "content": "And Paris?"},
            ]
            whole = client.chat(model="cloud", messages=history, tools=[tool], stream=False)
            streamed = [
                p
                for p in client.chat(model="cloud", messages=history, tools=[tool], stream=True)
                if p.message.tool_calls
            ]
        sent = double.state.requests
    call = whole.message.tool_calls[0].function
    assert (call.name, dict(call.arguments)) == ("weather", {"city": "Paris"})
    assert dict(streamed[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert TOOL_ARGUMENTS == '{"city": "Paris"}'
    # The history went as chat completions: the call with an id, the answer naming it.
    messages = sent[0]["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city": "Rome"}',
    }
    assert messages[2] == {
        "role": "tool",
        "tool_call_id": messages[1]["tool_calls"][0]["id"],
        "content": "sunny",
    }
    assert sent[0]["tools"] == [tool]
