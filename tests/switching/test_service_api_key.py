"""A service with `api_key_env` on a real llama.cpp server: the key reaches the server (it
refuses a request without it), `run` sends it and gets an answer, it is in no container label,
and a switch with the variable unset is refused before anything changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, llama_service, run_cli

pytestmark = pytest.mark.docker

KEY = "test-key-4f9a"


def test_the_key_reaches_the_server_and_run_sends_it(
    clean_namespace: object,
    llama_image: str,
    write_profile: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del llama_image
    port = free_port()
    write_profile(
        "keyed",
        services={"chat": llama_service(port, api_key_env="CHAT_KEY")},
        routing={"max_tokens": 8, "tiers": {"all": {"effort": "1-10", "candidates": ["chat"]}}},
    )

    monkeypatch.delenv("CHAT_KEY", raising=False)
    refused = run_cli("profile", "switch", "keyed", "--yes")
    assert refused.returncode != 0
    assert "$CHAT_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert clean_namespace.list_managed() == []  # type: ignore[attr-defined]

    monkeypatch.setenv("CHAT_KEY", KEY)
    done = run_cli("profile", "switch", "keyed", "--yes")
    assert done.returncode == 0, done.stderr
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=60).status_code == 401
    allowed = httpx.post(url, json=body, timeout=60, headers={"Authorization": f"Bearer {KEY}"})
    assert allowed.status_code == 200

    answer = run_cli("run", "--json", "Say hello.")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["backend"] == "chat"

    (item,) = clean_namespace.list_managed()  # type: ignore[attr-defined]
    labels = clean_namespace.inspect(item.id)["Config"]["Labels"]  # type: ignore[attr-defined]
    assert KEY not in json.dumps(labels)
