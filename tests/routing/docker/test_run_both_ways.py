"""`aitherctl run` through `aitherctl serve` and `run --direct` are the same command (issue 20):
each case runs both ways, as real processes, against one real llama.cpp server (SmolLM2 on the
CPU), and what a user sees is compared: the `--json` document's keys and values, the status line,
the error messages and the exit codes.

The profile reaches the same llama.cpp container two ways: as its service `llama` (free) and as
the priced endpoint `metered` (so a budget and its warning are real numbers both ways). The
failures no real server here can be made to give (a stream cut mid-answer, a cloud key not set)
run both ways against the chat contract double (tests/doubles/chat_server.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, llama_service, run_cli
from tests.doubles.chat_server import chat_double
from tests.serve.docker.serve_helpers import Served, serving

MAX_TOKENS = 12  # routing.max_tokens: SmolLM2 says more than this to "Tell me a story."
PRICE = 1000.0  # USD per million tokens: $0.001 a token
WAYS = ("direct", "serve")
STATUS = re.compile(
    r"effort \d+ · (?P<tier>\w+) · (?P<backend>\w+) \(smollm2\) · ttft \d+\.\d\ds · "
    r"(?P<rate>\d+ tok/s|tok/s N/A) · \$\d+\.\d{4}(?P<rest>.*)"
)


@pytest.fixture
def llama_port(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> int:
    del llama_image
    port = free_port()
    write_profile(
        "bothways",
        services={"llama": llama_service(port)},
        endpoints={
            "metered": {
                "base_url": f"http://127.0.0.1:{port}/v1",
                "model": "smollm2",
                "price": {"input": PRICE, "output": PRICE},
                "local": False,  # as a cloud endpoint: --local-only skips it
            },
        },
        routing={
            "max_tokens": MAX_TOKENS,
            "tiers": {
                "small": {"effort": "1-5", "candidates": ["llama"]},
                "big": {"effort": "6-10", "candidates": ["metered", "llama"]},
            },
        },
        budget={"daily_usd": 10, "warn_at": 0.0001},
    )
    switched = run_cli("profile", "switch", "bothways", "--yes", timeout=300)
    assert switched.returncode == 0, switched.stderr
    return port


@pytest.fixture
def served(llama_port: int) -> Iterator[Served]:
    del llama_port
    with serving("bothways") as gateway:
        yield gateway


def _run(way: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real console script, as a user types it (`--direct` for the direct way)."""
    extra = ["--direct"] if way == "direct" else []
    return subprocess.run(
        [sys.executable, "-m", "aitherctl", "run", *extra, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


def _both(*args: str) -> dict[str, subprocess.CompletedProcess[str]]:
    return {way: _run(way, *args) for way in WAYS}


@pytest.mark.docker
def test_json_has_the_same_shape_and_values_both_ways(served: Served) -> None:
    results = _both("--json", "--effort", "8", "Name one colour.")
    docs = {}
    for way, result in results.items():
        assert result.returncode == 0, f"{way}: {result.stderr}"
        docs[way] = json.loads(result.stdout)
    direct, via = docs["direct"], docs["serve"]
    assert list(via) == list(direct)  # the same keys, in the same order
    for key in ("outcome", "profile", "effort", "tier", "backend", "model"):
        assert via[key] == direct[key], key
    assert direct["profile"] == "bothways"
    assert direct["effort"] == {"score": 8, "reasons": ["forced by --effort"]}
    assert (direct["tier"], direct["backend"]) == ("big", "metered")
    for doc in (direct, via):
        assert [(a["backend"], a["outcome"]) for a in doc["attempts"]] == [("metered", "ok")]
        assert doc["cost_usd"] > 0
        assert doc["budget"]["daily_usd"] == 10
        assert doc["budget"]["spent_today_usd"] >= doc["cost_usd"]
        assert doc["warning"].endswith(
            f"of today's budget spent (${doc['budget']['spent_today_usd']:.4f} of $10)"
        )
        assert "tokens_per_s" in doc
    assert (direct["via"], direct["queue_wait_s"], direct["load_wait_s"]) == (None, None, None)
    assert via["via"] == served.url
    assert via["queue_wait_s"] is not None


@pytest.mark.docker
def test_the_status_line_is_the_same_both_ways(served: Served) -> None:
    # A long, predictable answer (greedy): a sampled story can end after a few tokens, and a
    # rate needs at least 9 tokens over 0.2 s (run_report.tokens_per_s).
    results = _both(
        "--tier",
        "small",
        "Count from 1 to 200, one number per line.",
        "--max-tokens",
        "80",
        "--temperature",
        "0",
    )
    lines = {}
    for way, result in results.items():
        assert result.returncode == 0, f"{way}: {result.stderr}"
        assert result.stdout.strip()
        (line,) = result.stderr.splitlines()
        match = STATUS.fullmatch(line)
        assert match, f"{way}: {line!r}"
        lines[way] = match
    # 80 tokens of 200 numbers: cut at the limit, which the line says both ways.
    assert lines["direct"]["rest"] == " · stopped at max_tokens 80"
    assert lines["serve"]["rest"] == f" · stopped at max_tokens 80 · via {served.url}"
    for match in lines.values():
        assert (match["tier"], match["backend"]) == ("small", "llama")
        assert match["rate"].endswith(" tok/s"), line  # 80 tokens: a measurable rate
        assert match["rate"] != "tok/s N/A"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tier", "nope"), "error: profile 'bothways' has no tier 'nope' (it has: small, big)\n"),
        (
            ("--backend", "nope"),
            "error: profile 'bothways' has no backend 'nope' (services and endpoints: llama, "
            "metered)\n",
        ),
    ],
)
def test_errors_say_the_same_both_ways(served: Served, args: tuple[str, ...], message: str) -> None:
    del served
    for way, result in _both(*args, "hi").items():
        assert (result.returncode, result.stdout, result.stderr) == (4, "", message), way


@pytest.mark.docker
def test_a_refusal_says_the_same_both_ways(
    served: Served, write_profile: Callable[..., Path], llama_port: int
) -> None:
    """No backend answers: the same first line and exit code 9 both ways (the reasons differ:
    `run --direct` probes health, the gateway sends)."""
    del served, llama_port
    for way, result in _both("--backend", "metered", "--local-only", "hi").items():
        assert result.returncode == 9, way
        assert result.stderr.splitlines() == [
            "error: no backend answered (tier small, 1 candidate(s))",
            "  metered (smollm2) skipped: --local-only: endpoint leaves the machine",
        ], way


@pytest.mark.docker
@pytest.mark.parametrize("way", ["direct", "serve"])
def test_routing_max_tokens_bounds_the_answer(served: Served, way: str) -> None:
    del served
    result = _run(way, "--json", "--tier", "small", "Tell me a long story about a dragon.")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["tokens"]["out"] <= MAX_TOKENS
    # llama.cpp's own word for it, read from the stream both ways; and the limit it was sent.
    assert (doc["finish_reason"], doc["max_tokens"]) == ("length", MAX_TOKENS)


@pytest.fixture
def failing(write_profile: Callable[..., Path]) -> Iterator[Served]:
    """A profile whose every tier fails a different way, served; no Docker engine needed."""
    with chat_double(mode="broken_after") as flaky, chat_double() as fine:
        write_profile(
            "failing",
            services={},
            endpoints={
                "flaky": {"base_url": f"{flaky.root}/v1", "model": "m1"},
                "paid": {
                    "base_url": f"{fine.root}/v1",
                    "model": "m2",
                    "price": {"input": 100, "output": 100},
                },
                "keyed": {
                    "base_url": "https://api.example.invalid/v1",
                    "model": "m3",
                    "api_key_env": "BOTHWAYS_UNSET_KEY",
                },
            },
            routing={
                "tiers": {
                    "cut": {"effort": "1-8", "candidates": ["flaky"]},
                    "pricey": {"effort": 9, "candidates": ["paid"]},
                    "keyless": {"effort": 10, "candidates": ["keyed"]},
                }
            },
            budget={"daily_usd": 0.01},
        )
        with serving("failing", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}) as s:
            yield s


@pytest.mark.parametrize(
    ("args", "code", "stdout", "stderr"),
    [
        (
            ("--tier", "cut"),
            9,
            "Hello from\n",
            [
                "error: flaky (m1) failed after the answer had started: stream ended without "
                "[DONE]; the partial answer is all there is",
                "  flaky (m1) partial: stream ended without [DONE]",
            ],
        ),
        (
            ("--tier", "pricey", "--max-tokens", "500"),
            10,
            "",
            [
                "error: the daily budget forbids this request (tier pricey): "
                "$0.0000 of $0.01 spent",
                "  paid (m2) skipped: budget: worst case $0.0538 > $0.0100 left of $0.01 today",
            ],
        ),
        (
            ("--tier", "keyless"),
            9,
            "",
            [
                "error: no backend answered (tier keyless, 1 candidate(s))",
                "  keyed (m3) skipped: $BOTHWAYS_UNSET_KEY is not set",
            ],
        ),
    ],
)
def test_failures_say_the_same_both_ways(  # noqa: PLR0917
    failing: Served,
    args: tuple[str, ...],
    code: int,
    stdout: str,
    stderr: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del failing
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    for way, result in _both("-p", "failing", *args, "hi").items():
        assert (result.returncode, result.stdout, result.stderr.splitlines()) == (
            code,
            stdout,
            stderr,
        ), way
    docs = {
        way: json.loads(result.stdout)
        for way, result in _both("-p", "failing", "--json", "--tier", "keyless", "hi").items()
    }
    assert list(docs["serve"]) == list(docs["direct"])
    assert docs["serve"]["error"] == docs["direct"]["error"]
    assert docs["serve"]["attempts"] == docs["direct"]["attempts"]
    cut = {
        way: json.loads(result.stdout)
        for way, result in _both("-p", "failing", "--json", "--tier", "cut", "hi").items()
    }
    assert list(cut["serve"]) == list(cut["direct"])
    for doc in cut.values():
        assert (doc["outcome"], doc["answer"], doc["backend"]) == ("partial", "Hello from", "flaky")
        assert doc["error"].startswith("flaky (m1) failed after the answer had started")
