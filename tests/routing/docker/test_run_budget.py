"""The daily budget holds whatever runs at once (issue 7 §4).

Real `aitherctl run` processes against a priced endpoint served by the chat contract double
(tests/doubles/chat_server.py, after the OpenAI API reference "Create chat completion": streamed
chunks, then one `usage` chunk for `stream_options.include_usage`). The double holds each answer a
few seconds, so the processes are all in flight together; what the ledger holds at the end must
stay within the cap, and `aitherctl usage` must show the cap `run` enforced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aitherctl.routing.ledger import Ledger
from aitherctl.routing.request_cost import request_bound
from aitherctl.routing.router import RunOptions
from tests.doubles.chat_server import chat_double
from tests.routing.docker.routing_helpers import router_for

PROCESSES = 12
CAP_USD = 0.1
PRICE = 1000.0  # USD per million tokens, in and out: $0.001 a token
MAX_TOKENS = 16
PROMPT = "Say one word."


def _metered(root: str, *, cap: float = CAP_USD) -> dict[str, object]:
    return {
        "services": {},
        "endpoints": {
            "paid": {
                "base_url": f"{root}/v1",
                "model": "cloud-model",
                "price": {"input": PRICE, "output": PRICE},
            },
        },
        "routing": {
            "max_tokens": MAX_TOKENS,
            "tiers": {"all": {"effort": "1-10", "candidates": ["paid"], "timeout_s": 30}},
        },
        "budget": {"daily_usd": cap},
    }


def _worst_case_usd() -> float:
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
    bound = request_bound("/v1/chat/completions", body)
    return (bound.input_tokens + bound.output_tokens) * PRICE / 1e6


def test_concurrent_runs_never_overshoot_the_daily_budget(
    write_profile: Callable[..., Path],
) -> None:
    # One request really costs (3 words + 8 + 5 tokens) x $0.001 = $0.016; its worst case is
    # (13 + 4 bytes + 32 template + 16) x $0.001 = $0.065 (the request-cost model: the prompt
    # and its role at a token a byte, the template, max_tokens). Twelve at once would spend $0.19
    # of $0.1.
    with chat_double(delay_s=4.0) as cloud:
        write_profile("metered", **_metered(cloud.root))
        env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}  # no engine needed
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aitherctl",
                    "run",
                    "--profile",
                    "metered",
                    "--json",
                    PROMPT,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for _ in range(PROCESSES)
        ]
        results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
        sent = len(cloud.state.requests)
    codes = [code for code, _, _ in results]
    rows = Ledger().rows_since(0)
    spent = sum(r.cost_usd for r in rows)
    print(f"{codes.count(0)} answered, {codes.count(10)} refused, ${spent:.4f} of ${CAP_USD}")
    assert spent <= CAP_USD  # the promise
    assert set(codes) <= {0, 10}, results
    answered = codes.count(0)
    assert answered >= 1
    assert codes.count(10) >= 1  # the cap refused some: budget exit code
    assert sent == answered  # a refused run sent nothing
    assert len(rows) == PROCESSES

    committed = Ledger().committed_since(0, 2e9)
    assert committed.reserved_usd == 0  # every reservation settled and replaced by its row
    assert committed.spent_usd == pytest.approx(spent)
    assert sorted(r.outcome for r in rows) == ["budget"] * codes.count(10) + ["ok"] * answered
    for code, stdout, stderr in results:
        data = json.loads(stdout)
        assert data["budget"]["spent_today_usd"] <= CAP_USD
        if code == 10:
            worst = f"budget: worst case ${_worst_case_usd():.4f}"  # $0.0650
            assert worst in data["attempts"][0]["reason"], stderr

    usage = subprocess.run(
        [sys.executable, "-m", "aitherctl", "usage", "--json", "--profile", "metered"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    report = json.loads(usage.stdout)
    assert report["budget"]["daily_usd"] == CAP_USD
    assert report["budget"]["profile"] == "metered"
    assert report["budget"]["spent_today_usd"] == pytest.approx(spent, abs=1e-6)


def test_usage_uses_the_profile_run_uses(write_profile: Callable[..., Path]) -> None:
    """No --profile: both take $AITHER_GPU_PROFILE when there is no active profile."""
    with chat_double() as cloud:
        write_profile("metered", **_metered(cloud.root, cap=0.07))
        env = {
            **os.environ,
            "AITHER_GPU_PROFILE": "metered",
            "DOCKER_HOST": "unix:///nonexistent.sock",
        }
        run = subprocess.run(
            [sys.executable, "-m", "aitherctl", "run", "--json", PROMPT],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        usage = subprocess.run(
            [sys.executable, "-m", "aitherctl", "usage", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
    ran = json.loads(run.stdout)
    report = json.loads(usage.stdout)
    assert ran["budget"]["daily_usd"] == report["budget"]["daily_usd"] == 0.07
    assert report["budget"]["profile"] == "metered"
    assert report["budget"]["spent_today_usd"] == pytest.approx(ran["cost_usd"])


@pytest.mark.parametrize(
    ("settings", "charged"),
    [
        ({"mode": "silent"}, "worst"),  # sent, no answer within the timeout
        ({"include_usage_honoured": False}, "worst"),  # answered, no usage
        ({"mode": "broken_after"}, "worst"),  # answer cut mid-stream
        ({"mode": "http500"}, "none"),  # refused with an error status: not billed
        ({}, "usage"),
    ],
)
def test_a_sent_request_without_usage_is_charged_its_worst_case(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, object],
    charged: str,
) -> None:
    monkeypatch.setenv("AITHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / "state"))
    with chat_double(**settings) as cloud, chat_double() as free:
        text = f"""
            name: charged
            services: {{}}
            routing:
              max_tokens: {MAX_TOKENS}
              tiers:
                all: {{effort: 1-10, candidates: [paid, free], timeout_s: 0.5}}
            endpoints:
              paid: {{base_url: "{cloud.root}/v1", model: m,
                      price: {{input: {PRICE}, output: {PRICE}}}}}
              free: {{base_url: "{free.root}/v1", model: m}}
            budget: {{daily_usd: 5}}
        """
        with router_for(tmp_path, "charged", text) as router:
            try:
                result = router.run(RunOptions(PROMPT), lambda _: None)
                cost = result.cost_usd
            except Exception as exc:  # broken_after: a partial answer raises
                cost = exc.result.cost_usd  # type: ignore[attr-defined]
    expected = {"worst": _worst_case_usd(), "none": 0.0, "usage": (3 + 8 + 5) * PRICE / 1e6}
    assert cost == pytest.approx(expected[charged])
    (row,) = Ledger().rows_since(0)
    assert row.cost_usd == pytest.approx(expected[charged])


def test_a_priced_endpoint_never_grades_the_effort(tmp_path: Path) -> None:
    """`classifier: model` asks a free local model only: a priced one would spend outside the
    budget's reservations."""
    with chat_double() as paid:
        text = f"""
            name: graded
            services: {{}}
            routing:
              classifier: model
              tiers:
                all: {{effort: 1-10, candidates: [paid]}}
            endpoints:
              paid: {{base_url: "{paid.root}/v1", model: m, price: {{input: 1, output: 1}}}}
        """
        with router_for(tmp_path, "graded", text) as router:
            result = router.run(RunOptions(PROMPT), lambda _: None)
        sent = len(paid.state.requests)
    assert sent == 1  # the answer only, no grading request
    assert result.effort.reasons[-1] == "classifier: no local model to grade; heuristic used"
    (row,) = Ledger().rows_since(0)
    assert row.cost_usd == pytest.approx(result.cost_usd)
