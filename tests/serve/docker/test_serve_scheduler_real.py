"""The scheduler's promises on the real engine with real llama.cpp containers (SmolLM2 on the
CPU), through `aitherctl serve` in its own process: what the effects fake stands in for in
tests/serve/unit/ happens here for real."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, llama_service, run_cli, sdk_of
from tests.serve.docker.serve_helpers import serving

pytestmark = pytest.mark.docker

openai = pytest.importorskip("openai")

IDLE_AFTER_S = 12


def _service(port: int, **extra: object) -> dict[str, object]:
    return llama_service(port, args=["--ctx-size", "512", "--threads", "1"], **extra)


def _running() -> set[str]:
    import json

    result = run_cli("ps", "--json")
    assert result.returncode == 0, result.stderr
    return {i["service"] for i in json.loads(result.stdout)["services"] if i["state"] == "running"}


def _chat(url: str, model: str) -> Any:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    return client.chat.completions.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "Say hi."}]
    )


def test_idle_after_counts_from_when_serve_knew_the_service(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    """A resident service with `idle_after`, already running when `serve` starts (the switch
    started it long before, by the engine's clock): it is put away `idle_after` after serve
    knew it, not at serve's first tick."""
    del llama_image
    write_profile("lazy", services={"main": _service(free_port(), idle_after=f"{IDLE_AFTER_S}s")})
    assert run_cli("profile", "switch", "lazy", "--yes").returncode == 0
    with serving("lazy") as served:
        health = httpx.get(served.url + "/health", timeout=10, trust_env=False).json()
        serve_started = time.time() - health["uptime_s"]
        served.wait_state("main", "stopped", timeout_s=IDLE_AFTER_S + 60)
        (evicted,) = [e for e in served.events() if e["event"] == "evicted"]
        assert evicted["backend"] == "main"
        assert evicted["ts"] - serve_started >= IDLE_AFTER_S
        assert _running() == set()


def test_a_container_killed_behind_the_schedulers_back_is_noticed_and_started_again(
    clean_namespace: Any, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    del llama_image
    write_profile("killed", services={"chat": _service(free_port(), on_demand=True)})
    assert run_cli("profile", "switch", "killed", "--yes").returncode == 0
    with serving("killed") as served:
        assert _chat(served.url, "chat").choices[0].message.content
        served.wait_state("chat", "ready")
        (item,) = [i for i in clean_namespace.list_managed() if i.service == "chat"]
        sdk_of(clean_namespace).api.kill(item.id)  # an OOM kill, as far as serve can tell
        served.wait_state("chat", "stopped", timeout_s=30)
        assert "gone" in [e["event"] for e in served.events() if e["backend"] == "chat"]
        assert _chat(served.url, "chat").choices[0].message.content
        assert served.backend("chat")["state"] == "ready"
        assert _running() == {"chat"}


def test_a_request_right_after_a_container_died_starts_it_instead_of_failing(
    clean_namespace: Any, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    """A resident service killed (an OOM kill, a crash) and asked for before serve's next
    reading of what Docker runs (every 5 s): its server refuses the connection, serve reads what
    runs at once and starts it for this request. It used to answer 503 ("cannot connect") to
    every request until the next reading."""
    del llama_image
    write_profile("fragile", services={"chat": _service(free_port())})
    assert run_cli("profile", "switch", "fragile", "--yes").returncode == 0
    with serving("fragile") as served:
        served.wait_state("chat", "ready")
        (item,) = [i for i in clean_namespace.list_managed() if i.service == "chat"]
        sdk_of(clean_namespace).api.kill(item.id)
        assert _chat(served.url, "chat").choices[0].message.content
        assert served.backend("chat")["state"] == "ready"
        assert _running() == {"chat"}
        events = [e["event"] for e in served.events() if e["backend"] == "chat"]
        assert "gone" in events
