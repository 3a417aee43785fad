"""`aitherctl run` against real llama.cpp servers (SmolLM2 on the CPU) started through a profile.

One profile, two llama.cpp services: `primary` with a single slot and `backup`. Through the real
CLI process: a real answer from `primary`; overflow to `backup` while `primary`'s one slot is busy
and a request waits (`llamacpp:requests_deferred` from its real `/metrics`); `backup` answers when
`primary` is stopped; a priced endpoint on the real server stops being used once a tiny budget is
spent, without overshooting it, also when eight runs go at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, llama_service, run_cli

pytestmark = pytest.mark.docker


def _routing_profile(primary: int, backup: int) -> dict[str, object]:
    return {
        "services": {
            "primary": llama_service(
                primary, args=["--ctx-size", "2048", "--threads", "1", "--parallel", "1"]
            ),
            "backup": llama_service(backup),
        },
        "routing": {
            "max_tokens": 24,
            "tiers": {
                "all": {"effort": "1-10", "candidates": ["primary", "backup"], "max_queue": 0},
            },
        },
    }


@pytest.fixture
def llama_pair(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> dict[str, int]:
    del llama_image
    ports = {"primary": free_port(), "backup": free_port()}
    write_profile("routepair", **_routing_profile(ports["primary"], ports["backup"]))
    switched = run_cli("profile", "switch", "routepair", "--yes")
    assert switched.returncode == 0, switched.stderr
    return ports


def _run_json(*args: str) -> tuple[int, dict[str, object], str]:
    result = run_cli("run", "--json", *args, timeout=120)
    data = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, data, result.stderr


def _deferred(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("llamacpp:requests_deferred "):
            return float(line.split()[1])
    return 0.0


def _busy(port: int, stop: threading.Event) -> None:
    """Keep one slot generating: a long answer that ignores end-of-sequence."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Count from one to one thousand in words."}],
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    try:
        with httpx.stream(
            "POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120
        ) as response:
            for _ in response.iter_bytes():
                if stop.is_set():
                    return
    except httpx.HTTPError:
        return


def test_run_real_llamacpp_overflow_and_fallback(
    llama_pair: dict[str, int], clean_namespace: object
) -> None:
    # 1. The active profile (from the containers' labels) answers with real text.
    code, data, stderr = _run_json("What is the capital of France?")
    assert code == 0, stderr
    assert data["profile"] == "routepair"
    assert data["backend"] == "primary"
    assert data["model"] == "smollm2"
    assert isinstance(data["answer"], str)
    assert data["answer"].strip()
    assert data["tokens"]["out"] > 0  # type: ignore[index]
    assert data["ttft_s"] > 0  # type: ignore[operator]

    # Plain mode: the answer on stdout, one status line on stderr.
    plain = run_cli("run", "Say hi.", timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip()
    (status,) = plain.stderr.strip().splitlines()
    assert " · all · primary (smollm2) · ttft " in status

    # 2. One slot busy and one request waiting: the next run overflows to the backup.
    stop = threading.Event()
    threads = [
        threading.Thread(target=_busy, args=(llama_pair["primary"], stop), daemon=True)
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while _deferred(llama_pair["primary"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _deferred(llama_pair["primary"]) >= 1
        code, data, stderr = _run_json("Name a colour.")
    finally:
        stop.set()
    assert code == 0, stderr
    assert data["backend"] == "backup"
    first = data["attempts"][0]  # type: ignore[index]
    assert first["outcome"] == "skipped"
    assert first["reason"].startswith("queue ")
    assert first["reason"].endswith("> max_queue 0 (llamacpp:requests_deferred)")
    for thread in threads:
        thread.join(timeout=60)

    # 3. Primary stopped: Docker says it is not running, the backup answers.
    engine = clean_namespace
    (primary,) = [c for c in engine.list_managed() if c.service == "primary"]  # type: ignore[attr-defined]
    engine.stop(primary.id, timeout=2)  # type: ignore[attr-defined]
    code, data, stderr = _run_json("Name a fruit.")
    assert code == 0, stderr
    assert data["backend"] == "backup"
    assert data["attempts"][0] == {  # type: ignore[index]
        "backend": "primary",
        "model": "smollm2",
        "outcome": "skipped",
        "reason": "service not running in the active profile",
        "ttft_s": None,
        "elapsed_s": None,
    }


def write_metered(
    write_profile: Callable[..., Path],
    llama_pair: dict[str, int],
    *,
    daily_usd: float,
    timeout_s: float | None = None,
) -> None:
    """Profile `metered`: the backup server as a priced endpoint ($0.001 per token) first, the
    primary one free after it, under a daily cap of `daily_usd`."""
    tier: dict[str, object] = {"effort": "1-10", "candidates": ["paid", "free"]}
    if timeout_s is not None:
        tier["timeout_s"] = timeout_s
    write_profile(
        "metered",
        services={},
        endpoints={
            "paid": {
                "base_url": f"http://127.0.0.1:{llama_pair['backup']}/v1",
                "model": "smollm2",
                "engine": "llamacpp",
                "price": {"input": 1000, "output": 1000},
            },
            "free": {
                "base_url": f"http://127.0.0.1:{llama_pair['primary']}/v1",
                "model": "smollm2",
                "engine": "llamacpp",
            },
        },
        routing={"max_tokens": 24, "tiers": {"all": tier}},
        budget={"daily_usd": daily_usd},
    )


def test_priced_llamacpp_endpoint_stops_at_tiny_budget(
    llama_pair: dict[str, int], write_profile: Callable[..., Path]
) -> None:
    # The backup server declared a second time as a priced endpoint: $0.001 per token, so one
    # request costs about $0.05 and its worst case (prompt bytes + 24 tokens) about $0.1.
    write_metered(write_profile, llama_pair, daily_usd=0.25)
    backends = []
    for _ in range(6):
        code, data, stderr = _run_json("--profile", "metered", "Say one word.")
        assert code == 0, stderr
        backends.append(data["backend"])
        spent = data["budget"]["spent_today_usd"]  # type: ignore[index]
        assert spent <= 0.25
    assert backends[0] == "paid"
    assert "free" in backends
    switch_at = backends.index("free")
    assert set(backends[switch_at:]) == {"free"}
    usage = json.loads(run_cli("usage", "--json", "--profile", "metered").stdout)
    assert 0 < usage["budget"]["spent_today_usd"] <= 0.25
    assert usage["budget"]["daily_usd"] == 0.25


def test_concurrent_runs_on_a_priced_llamacpp_endpoint_stay_within_the_budget(
    llama_pair: dict[str, int], write_profile: Callable[..., Path]
) -> None:
    """Eight real `aitherctl run` processes at once, a priced endpoint on the real server first
    and a free one after it: the priced answers together stay within the cap (each run reserves
    its worst case in the ledger before sending), the others fall back to the free server."""
    write_metered(write_profile, llama_pair, daily_usd=0.2, timeout_s=120)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aitherctl",
                "run",
                "--json",
                "--profile",
                "metered",
                "Say one word.",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, [err for _, err in outputs]
    answers = [json.loads(out) for out, _ in outputs]
    paid = [a for a in answers if a["backend"] == "paid"]
    spent = sum(a["cost_usd"] for a in answers)
    assert 0 < spent <= 0.2
    assert paid  # the cap leaves room for at least one
    assert any(a["backend"] == "free" for a in answers)
    for answer in paid:
        assert answer["tokens"]["in"] > 0  # priced from the real server's usage
    usage = json.loads(run_cli("usage", "--json", "--profile", "metered").stdout)
    assert usage["budget"]["spent_today_usd"] == pytest.approx(spent, abs=1e-6)
    assert usage["budget"]["daily_usd"] == 0.2
