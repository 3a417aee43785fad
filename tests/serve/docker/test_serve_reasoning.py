"""A reasoning model's thinking through `serve`'s translation: a real llama.cpp server (SmolLM2,
a chat template that opens `<think>`, `--reasoning-format deepseek`) streams it as chat's
`reasoning_content`; a backend reached as chat completions (an endpoint with `engine: openai`)
gives it to the official `anthropic` client as `thinking` blocks and to the `openai` client as
`reasoning` items."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, free_port, llama_service, run_cli
from tests.serve.docker.serve_helpers import serving

pytestmark = pytest.mark.docker

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

TEMPLATES = Path(__file__).resolve().parents[2] / "fixtures" / "templates"
HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture
def thinker(clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]) -> None:
    """Profile `think`: the llama.cpp service `thinker`, running, and the endpoint `via-chat`
    on the same server as a chat-only backend."""
    del llama_image
    port = free_port()
    service = llama_service(port, pinned=True)
    service["args"] = [
        *service["args"],
        "--jinja",
        "--chat-template-file",  # type: ignore[misc]
        "/tpl/think.jinja",
        "--reasoning-format",
        "deepseek",
    ]
    service["volumes"] = {MODELS_DIR: "/models:ro", str(TEMPLATES): "/tpl:ro"}
    write_profile(
        "think",
        services={"thinker": service},
        endpoints={
            "via-chat": {
                "base_url": f"http://127.0.0.1:{port}/v1",
                "model": "smollm2",
                "engine": "openai",
            }
        },
        routing={"max_tokens": 8},
    )
    result = run_cli("profile", "switch", "think", "--yes")
    assert result.returncode == 0, result.stderr


def test_reasoning_content_reaches_anthropic_as_thinking_and_openai_as_reasoning(
    thinker: None,
) -> None:
    with serving("think") as served:
        claude = anthropic.Anthropic(base_url=served.url, api_key="k", max_retries=0, timeout=120)
        with claude.messages.stream(
            model="via-chat", max_tokens=6, messages=HI, extra_body={"temperature": 0}
        ) as stream:
            final = stream.get_final_message()
        assert final.content[0].type == "thinking"
        assert final.content[0].thinking.strip()
        assert final.stop_reason == "max_tokens"
        # Greedy (temperature 0) throughout: a sampled first token can close the thinking at
        # once (the template opens it), and then no reasoning comes back (seen in CI).
        whole = claude.messages.create(
            model="via-chat", max_tokens=6, messages=HI, extra_body={"temperature": 0}
        )
        assert whole.content[0].type == "thinking"
        assert whole.content[0].thinking.strip()

        client = openai.OpenAI(base_url=served.v1, api_key="k", max_retries=0, timeout=120)
        events = list(
            client.responses.create(
                model="via-chat", input="Say hi.", max_output_tokens=6, stream=True, temperature=0
            )
        )
        assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
        last = events[-1].response
        assert last.output[0].type == "reasoning"
        assert last.output[0].content[0].text.strip()
        answer = client.responses.create(
            model="via-chat", input="Say hi.", max_output_tokens=6, temperature=0
        )
        assert answer.output[0].type == "reasoning"

        # The next turn gives the thinking back (as Claude Code and Codex CLI do): it goes to
        # the engine as the assistant turn's reasoning_content, which its template renders.
        again = [{"role": "user", "content": "Again."}]
        turn = [block.model_dump(exclude_none=True) for block in whole.content]
        second = claude.messages.create(
            model="via-chat",
            max_tokens=4,
            messages=[*HI, {"role": "assistant", "content": turn}, *again],
            extra_body={"temperature": 0},
        )
        assert second.content[0].type == "thinking"
        items = [item.model_dump(exclude_none=True) for item in answer.output]
        follow = client.responses.create(
            model="via-chat", max_output_tokens=4, input=[*HI, *items, *again], temperature=0
        )
        assert follow.output[0].type == "reasoning"
