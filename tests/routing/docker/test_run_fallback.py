"""Fallback against real HTTP servers started in the test: 500, 429, broken streams, silence,
refused connections, queue overflow, remembered failures, budget, ledger and the --json shape.

The servers are `tests/doubles/chat_server.py` (real sockets, real SSE); no Docker needed.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from aitherctl.errors import BackendFailedError, BudgetExceededError
from aitherctl.routing.ledger import Ledger
from aitherctl.routing.router import RunOptions
from aitherctl.routing.static_embedding import score_effort
from tests.doubles.chat_server import chat_double, closed_port
from tests.routing.docker.routing_helpers import FixedStack, router_for


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / "state"))


def _two_endpoints(first: str, second: str, *, timeout: float = 2.0, extra: str = "") -> str:
    return f"""
        name: duo
        services: {{}}
        routing:
          tiers:
            all: {{effort: 1-10, candidates: [first, second], timeout_s: {timeout}}}
        endpoints:
          first: {{base_url: "{first}/v1", model: m1, engine: llamacpp, health: /health}}
          second: {{base_url: "{second}/v1", model: m2, engine: llamacpp, health: /health}}
        {extra}
    """


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("http500", "HTTP 500"),
        ("http429", "HTTP 429"),
        ("garbage", "malformed stream"),
        ("json", "not an event stream"),
    ],
)
def test_error_before_first_token_falls_back(tmp_path: Path, mode: str, why: str) -> None:
    with (
        chat_double(mode=mode) as bad,
        chat_double() as good,
        router_for(tmp_path, "duo", _two_endpoints(bad.root, good.root)) as router,
    ):
        pieces: list[str] = []
        result = router.run(RunOptions("hello there"), pieces.append)
    assert result.outcome == "ok"
    assert result.backend == "second"
    assert result.answer == "Hello from the double." == "".join(pieces)
    first, second = result.attempts
    assert (first.backend, first.outcome) == ("first", "error")
    assert why in (first.reason or "")
    assert (second.backend, second.outcome) == ("second", "ok")


def test_silent_server_falls_back_within_timeout(tmp_path: Path) -> None:
    with (
        chat_double(mode="silent") as bad,
        chat_double() as good,
        router_for(tmp_path, "duo", _two_endpoints(bad.root, good.root, timeout=0.5)) as router,
    ):
        start = time.perf_counter()
        result = router.run(RunOptions("hello"), lambda _: None)
        elapsed = time.perf_counter() - start
    assert result.backend == "second"
    assert "no answer within 0.5s" in (result.attempts[0].reason or "")
    assert elapsed < 2.0


def test_refused_is_remembered_and_skipped_next_time(tmp_path: Path) -> None:
    with closed_port() as port, chat_double() as good:
        text = _two_endpoints(f"http://127.0.0.1:{port}", good.root)
        with router_for(tmp_path, "duo", text) as router:
            first_run = router.run(RunOptions("hi"), lambda _: None)
            second_run = router.run(RunOptions("hi"), lambda _: None)
    assert first_run.attempts[0].outcome == "skipped"
    assert "connection refused" in (first_run.attempts[0].reason or "")
    assert second_run.attempts[0].outcome == "skipped"
    assert "failed recently" in (second_run.attempts[0].reason or "")
    assert second_run.backend == "second"


def test_error_after_tokens_stops_and_never_splices(tmp_path: Path) -> None:
    with (
        chat_double(mode="broken_after") as bad,
        chat_double() as good,
        router_for(tmp_path, "duo", _two_endpoints(bad.root, good.root)) as router,
    ):
        pieces: list[str] = []
        with pytest.raises(BackendFailedError) as caught:
            router.run(RunOptions("hi"), pieces.append)
        assert not good.state.requests, "the second backend must not be asked"
    err = caught.value
    assert err.exit_code == 9
    assert "first" in err.message
    assert "after the answer had started" in err.message
    assert err.result is not None
    assert err.result.answer == "Hello from" == "".join(pieces)
    assert err.result.outcome == "partial"
    assert [a.outcome for a in err.result.attempts] == ["partial"]


def test_all_fail_lists_every_attempt(tmp_path: Path) -> None:
    with (
        chat_double(mode="http500") as one,
        chat_double(mode="http429") as two,
        router_for(tmp_path, "duo", _two_endpoints(one.root, two.root)) as router,
        pytest.raises(BackendFailedError) as caught,
    ):
        router.run(RunOptions("hi"), lambda _: None)
    err = caught.value
    assert err.exit_code == 9
    assert err.detail is not None
    assert "first (m1) error: HTTP 500" in err.detail
    assert "second (m2) error: HTTP 429" in err.detail
    rows = Ledger().rows_since(0)
    assert [(r.outcome, r.attempts) for r in rows] == [("failed", 2)]


def test_queue_above_threshold_overflows(tmp_path: Path) -> None:
    with chat_double(deferred=3) as busy, chat_double() as idle:
        text = _two_endpoints(busy.root, idle.root).replace(
            "timeout_s: 2.0}", "timeout_s: 2.0, max_queue: 1}"
        )
        with router_for(tmp_path, "duo", text) as router:
            result = router.run(RunOptions("hi"), lambda _: None)
            busy.state.deferred = 0
            calm = router.run(RunOptions("hi"), lambda _: None)
    assert result.backend == "second"
    assert result.attempts[0].reason == (
        "queue 3 waiting > max_queue 1 (llamacpp:requests_deferred)"
    )
    assert calm.backend == "first"


def test_tiny_budget_is_never_overshot(tmp_path: Path) -> None:
    # Each answer costs $0.14 (9 + 5 tokens); the worst case counts the prompt's bytes plus chat
    # template overhead (34 tokens) and max_tokens=5: $0.39. So 5 requests fit under $1.
    with chat_double() as paid, chat_double(words=("free",)) as free:
        text = f"""
            name: budget
            services: {{}}
            routing:
              max_tokens: 5
              tiers:
                all: {{effort: 1-10, candidates: [paid, free]}}
            endpoints:
              paid: {{base_url: "{paid.root}/v1", model: p, engine: llamacpp,
                      price: {{input: 10000, output: 10000}}}}
              free: {{base_url: "{free.root}/v1", model: f, engine: llamacpp}}
            budget: {{daily_usd: 1.0, warn_at: 60%}}
        """
        backends = []
        with router_for(tmp_path, "budget", text) as router:
            for _ in range(12):
                result = router.run(RunOptions("hi"), lambda _: None)
                backends.append(result.backend)
                assert result.spent_today_usd <= 1.0 + 1e-9
            last = result
        paid_requests = len(paid.state.requests)
    assert backends[0] == "paid"
    assert "free" in backends
    # Once the paid endpoint was refused it stays refused: spending never passes the cap.
    first_free = backends.index("free")
    assert set(backends[first_free:]) == {"free"}
    spent = Ledger().spent_since(0)
    assert 0.6 < spent <= 1.0
    assert paid_requests == first_free
    budget_skip = last.attempts[0]
    assert budget_skip.outcome == "skipped"
    assert (budget_skip.reason or "").startswith("budget: worst case")
    assert last.warning is not None  # 80% line passed


def test_budget_refusing_everything_exits_10(tmp_path: Path) -> None:
    with chat_double() as paid:
        text = f"""
            name: broke
            services: {{}}
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [paid]}}
            endpoints:
              paid: {{base_url: "{paid.root}/v1", model: p, price: {{input: 5, output: 5}}}}
            budget: {{daily_usd: 0.001}}
        """
        with (
            router_for(tmp_path, "broke", text) as router,
            pytest.raises(BudgetExceededError) as caught,
        ):
            router.run(RunOptions("hi", max_tokens=1000), lambda _: None)
        assert not paid.state.requests
    assert caught.value.exit_code == 10


def test_local_only_and_missing_key_skip_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOUBLE_CLOUD_KEY", raising=False)
    with chat_double(api_key="sk-secret-123") as cloud, chat_double() as local:
        text = f"""
            name: mixed
            services: {{}}
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [cloud, local]}}
            endpoints:
              cloud: {{base_url: "{cloud.root}/v1", model: gpt, local: false,
                       api_key_env: DOUBLE_CLOUD_KEY, price: {{input: 1, output: 2}}}}
              local: {{base_url: "{local.root}/v1", model: smol}}
            ledger: {{store_prompts: true}}
        """
        with router_for(tmp_path, "mixed", text) as router:
            no_key = router.run(RunOptions("hi"), lambda _: None)
            monkeypatch.setenv("DOUBLE_CLOUD_KEY", "sk-secret-123")
            local_only = router.run(RunOptions("hi", local_only=True), lambda _: None)
            with_key = router.run(RunOptions("hi"), lambda _: None)
        sent_auth = cloud.state.headers[-1]["authorization"]
    assert no_key.attempts[0].reason == "$DOUBLE_CLOUD_KEY is not set"
    assert local_only.attempts[0].reason == "--local-only: endpoint leaves the machine"
    assert with_key.backend == "cloud"
    assert with_key.cost_usd > 0
    assert sent_auth == "Bearer sk-secret-123"
    ledger = Ledger()
    stored = ledger.path.read_bytes()
    assert b"sk-secret-123" not in stored
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600
    assert [r.prompt for r in ledger.rows_since(0)] == ["hi", "hi", "hi"]


def test_ollama_double_through_openai_compat(tmp_path: Path) -> None:
    with chat_double(flavour="ollama") as ollama:
        text = f"""
            name: oll
            services: {{}}
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [ollama]}}
            endpoints:
              ollama: {{base_url: "{ollama.root}", model: "llama3.2:1b", engine: ollama,
                        health: /api/version}}
        """
        with router_for(tmp_path, "oll", text) as router:
            result = router.run(RunOptions("hi", system="be brief", temperature=0.2), print)
        body = ollama.state.requests[0]
    assert result.answer == "Hello from the double."
    assert result.tokens_out == 5
    assert result.tokens_in is not None
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["temperature"] == 0.2
    assert body["model"] == "llama3.2:1b"


def test_json_shape_and_ledger_row(tmp_path: Path) -> None:
    with (
        chat_double() as good,
        router_for(tmp_path, "duo", _two_endpoints(good.root, good.root)) as router,
    ):
        result = router.run(RunOptions("Write a haiku about rain.", effort=2), lambda _: None)
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) >= {
        "answer",
        "effort",
        "tier",
        "backend",
        "model",
        "attempts",
        "tokens",
        "ttft_s",
        "total_s",
        "cost_usd",
        "outcome",
    }
    assert data["effort"]["score"] == 2
    assert data["tier"] == "all"
    assert data["attempts"][0]["outcome"] == "ok"
    assert data["tokens"] == {"in": result.tokens_in, "out": 5}
    assert data["ttft_s"] > 0
    assert data["total_s"] >= data["ttft_s"]
    (row,) = Ledger().rows_since(0)
    assert (row.profile, row.effort, row.tier, row.backend, row.model) == (
        "duo",
        2,
        "all",
        "first",
        "m1",
    )
    assert row.outcome == "ok"
    assert row.tokens_out == 5
    assert row.prompt is None
    assert row.prompt_sha256
    assert len(row.prompt_sha256) == 64


def test_service_not_running_is_skipped(tmp_path: Path) -> None:
    with chat_double() as good:
        text = f"""
            name: svc
            services:
              fast:
                engine: llamacpp
                image: aither-test/llamacpp:latest
                port: {good.port}
                model: /models/smol.gguf
              lazy:
                engine: llamacpp
                image: aither-test/llamacpp:latest
                port: 1
                model: /models/smol.gguf
                on_demand: true
            routing:
              tiers:
                all: {{effort: 1-10, candidates: [lazy, fast]}}
        """
        with router_for(tmp_path, "svc", text, stack=FixedStack({"fast"})) as router:
            choice, verdicts = router.explain(RunOptions("hi"))
            result = router.run(RunOptions("hi"), lambda _: None)
        assert len(good.state.requests) == 1  # explain sent nothing
    assert not verdicts[0].usable
    assert "on-demand" in (verdicts[0].reason or "")
    assert verdicts[1].usable
    assert choice.tier.name == "all"
    assert result.backend == "fast"


def test_model_classifier_grades_and_falls_back(tmp_path: Path) -> None:
    with chat_double(words=("7",)) as grader, chat_double() as main:
        text = f"""
            name: graded
            services: {{}}
            routing:
              classifier: model
              tiers:
                low: {{effort: 1-5, candidates: [grader, main]}}
                high: {{effort: 6-10, candidates: [main]}}
            endpoints:
              grader: {{base_url: "{grader.root}/v1", model: tiny}}
              main: {{base_url: "{main.root}/v1", model: big}}
        """
        with router_for(tmp_path, "graded", text) as router:
            graded = router.run(RunOptions("hi"), lambda _: None)
            grader.state.mode = "http500"
            fallback = router.run(RunOptions("hi"), lambda _: None)
        grading_request = grader.state.requests[0]
    assert graded.effort.score == 7
    assert graded.tier == "high"
    assert graded.effort.reasons[0] == "graded 7 by grader (tiny)"
    assert grading_request["max_tokens"] == 4
    assert grading_request["temperature"] == 0.0
    assert fallback.effort.score == score_effort("hi").score  # the heuristic stands
    assert "classifier: grader failed (HTTP 500" in fallback.effort.reasons[-1]
    assert fallback.backend == "main"
