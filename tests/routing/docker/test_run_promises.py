"""What `run` promises beyond answering (issue 7 §3-4), against the chat contract double
(tests/doubles/chat_server.py: OpenAI API reference "Create chat completion", streaming chunks and
OpenAI's parameter rules for gpt-5 and the o-series, 400 on `max_tokens` or a temperature other
than 1).

- `--explain` records nothing: no ledger, no reservation, no failure memory, nothing on disk.
- Tokens per second comes from a real decoding window: a stream that arrives in one burst has no
  rate (None), not thousands of tokens a second.
- The built-in `openai` endpoint's request body is one OpenAI accepts for gpt-5.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.routing.chat import ChatError, ChatRequest, HttpClients, build_body, stream_chat
from aitherctl.routing.router import RunOptions, tokens_per_s
from aitherctl.routing.table import Candidate, build_routing, endpoint_candidate
from tests.doubles.chat_server import chat_double, closed_port
from tests.routing.docker.routing_helpers import router_for

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / "state"))


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_explain_writes_nothing_anywhere(tmp_path: Path) -> None:
    with chat_double() as cloud, closed_port() as dead:
        text = f"""
            name: quiet
            services: {{}}
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [down, paid]}}
            endpoints:
              down: {{base_url: "http://127.0.0.1:{dead}/v1", model: m, engine: llamacpp,
                      health: /health}}
              paid: {{base_url: "{cloud.root}/v1", model: m,
                      price: {{input: 1.0, output: 2.0}}}}
        """
        with router_for(tmp_path, "quiet", text) as router:
            before = _files_under(tmp_path / "data") + _files_under(tmp_path / "state")
            choice, verdicts = router.explain(RunOptions("hi", effort=5))
            after = _files_under(tmp_path / "data") + _files_under(tmp_path / "state")
        assert cloud.state.requests == []
    assert [v.usable for v in verdicts] == [False, True]
    assert (verdicts[0].reason or "").startswith("health: connection refused")
    assert choice.tier.name == "all"
    assert before == after == []  # no ledger, no backend-failures.json


def test_a_burst_has_no_tokens_per_second(tmp_path: Path) -> None:
    words = tuple(f" w{i}" for i in range(40))
    with chat_double(mode="burst", words=words) as server:
        text = f"""
            name: bursty
            services: {{}}
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [proxy]}}
            endpoints:
              proxy: {{base_url: "{server.root}/v1", model: m}}
        """
        with router_for(tmp_path, "bursty", text) as router:
            result = router.run(RunOptions("count", max_tokens=64), lambda _: None)
    assert result.tokens_out == 40
    assert result.answer == "".join(words)
    assert result.tokens_per_s is None  # not 40 tokens over a few microseconds
    assert result.to_json()["tokens_per_s"] is None


def test_tokens_per_second_needs_a_window() -> None:
    # 101 tokens, first at 0.5 s, last at 2.5 s: 100 tokens decoded in 2 s.
    assert tokens_per_s(101, 0.5, 2.5) == pytest.approx(50.0)
    assert tokens_per_s(101, 0.5, 0.55) is None  # 50 ms: too short to measure
    assert tokens_per_s(5, 0.5, 2.5) is None  # too few tokens
    assert tokens_per_s(None, 0.5, 2.5) is None
    assert tokens_per_s(101, None, None) is None


def _builtin_openai() -> Candidate:
    catalog = ProfileCatalog(builtin_dir=REPO / "profiles", user_dir=REPO / "no-such-dir")
    return build_routing(catalog.load("dev")).backend("openai")


def test_builtin_openai_endpoint_body_passes_openais_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builtin = _builtin_openai()
    assert builtin.model == "gpt-5"
    request = ChatRequest(prompt="hi", max_tokens=64, temperature=0.2)
    body = build_body(builtin, request)
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body
    assert "temperature" not in body
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with chat_double(api_key="sk-test") as openai:
        # The built-in endpoint, pointed at the contract double instead of the cloud.
        endpoint = dataclasses.replace(builtin, base_url=f"{openai.root}/v1")
        clients = HttpClients()
        try:
            result = stream_chat(clients, endpoint, request, lambda _: None, read_timeout_s=5)
            # What today's body (max_tokens, temperature 0.2) gets from OpenAI: 400.
            old_style = dataclasses.replace(
                endpoint, max_tokens_field="max_tokens", temperature="pass"
            )
            with pytest.raises(ChatError) as refused:
                stream_chat(clients, old_style, request, lambda _: None, read_timeout_s=5)
            no_temp = dataclasses.replace(old_style, max_tokens_field="max_completion_tokens")
            with pytest.raises(ChatError) as refused_temperature:
                stream_chat(clients, no_temp, request, lambda _: None, read_timeout_s=5)
        finally:
            clients.close()
    assert result.text == "Hello from the double."
    assert refused.value.status == 400
    assert "Use 'max_completion_tokens' instead" in refused.value.message
    assert refused_temperature.value.status == 400
    assert "Only the default (1) value is supported" in refused_temperature.value.message


def test_an_older_model_keeps_max_tokens_and_temperature() -> None:
    old = endpoint_candidate(
        "old", {"base_url": "https://api.openai.com/v1", "model": "gpt-4o"}, "p.yaml"
    )
    body = build_body(old, ChatRequest(prompt="hi", max_tokens=8, temperature=0.2))
    assert body["max_tokens"] == 8
    assert body["temperature"] == 0.2
    assert "max_completion_tokens" not in body


def test_key_is_not_sent_over_plain_http_to_another_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth behind the load-time check: stream_chat itself refuses."""
    monkeypatch.setenv("LAN_KEY", "sk-secret")
    endpoint = dataclasses.replace(
        _builtin_openai(), base_url="http://192.0.2.10:8000/v1", api_key_env="LAN_KEY"
    )
    clients = HttpClients()
    try:
        with pytest.raises(ChatError) as refused:
            stream_chat(
                clients, endpoint, ChatRequest(prompt="hi"), lambda _: None, read_timeout_s=1
            )
    finally:
        clients.close()
    assert refused.value.kind == "insecure"
    assert not refused.value.billable
    assert "sk-secret" not in refused.value.message
