"""`aitherctl serve` in front of real llama.cpp servers (SmolLM2 on the CPU), as users reach it:
the official `openai` client and curl, never only our own code.

The gateway runs as its own process (`python -m aitherctl serve`), services are real containers
on the test engine, memory is the host-RAM pool (`ram:` budgets, `ram.limit`), so swapping and
eviction happen for real. llama.cpp's own `GET /slots` shows whether a server is still working.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, llama_service, run_cli
from tests.serve.docker.serve_helpers import serving

pytestmark = pytest.mark.docker

openai = pytest.importorskip("openai")

MIB = 1024**2


def _service(port: int, *, slots: int = 1, **extra: object) -> dict[str, object]:
    return llama_service(
        port,
        args=["--ctx-size", str(512 * slots), "--threads", "1", "--parallel", str(slots)],
        ram="256MiB",
        **extra,
    )


def _status(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(url + "/status", timeout=5).json()
    return data


def _states(url: str) -> dict[str, str]:
    return {b["backend"]: b["state"] for b in _status(url)["backends"]}


def _running(ps_json: str) -> set[str]:
    services = json.loads(ps_json)["services"]
    return {item["service"] for item in services if item["state"] == "running"}


def _ps() -> set[str]:
    result = run_cli("ps", "--json")
    assert result.returncode == 0, result.stderr
    return _running(result.stdout)


def _client(url: str, **kwargs: Any) -> Any:
    return openai.OpenAI(
        base_url=url + "/v1",
        api_key=kwargs.pop("api_key", "unused"),
        max_retries=0,
        timeout=120,
        **kwargs,
    )


def _slow_stream(url: str, model: str, tokens: int = 400) -> threading.Thread:
    """A streaming request that keeps its backend busy for a few seconds (llama.cpp's
    `ignore_eos` makes it generate exactly `tokens`). Its text ends up in `.result`."""
    result: dict[str, Any] = {}

    def go() -> None:
        client = _client(url)
        pieces = []
        stream = client.chat.completions.create(
            model=model,
            stream=True,
            max_tokens=tokens,
            messages=[{"role": "user", "content": "Count to one thousand."}],
            extra_body={"ignore_eos": True},
        )
        finish = None
        for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        result.update(text="".join(pieces), finish=finish)

    thread = threading.Thread(target=go, daemon=True)
    thread.result = result  # type: ignore[attr-defined]
    thread.start()
    return thread


def _wait_busy(url: str, backend: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in _status(url)["backends"]:
            if item["backend"] == backend and item["in_flight"] >= 1:
                return
        time.sleep(0.05)
    raise AssertionError(f"{backend} never got busy")


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _ask(url: str, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={
            "model": model,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "Say hi."}],
            **extra,
        },
        timeout=120,
    )


def _ledger(data_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()


@pytest.fixture
def trio(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> dict[str, int]:
    """Three llama.cpp services of 256 MiB in a 600 MiB RAM pool: two fit, three do not.
    `a` is resident (started by the switch), `b` and `c` on demand."""
    del llama_image
    ports = {name: free_port() for name in "abc"}
    write_profile(
        "trio",
        ram={"limit": "600MiB"},
        services={
            "a": _service(ports["a"]),
            "b": _service(ports["b"], on_demand=True),
            "c": _service(ports["c"], on_demand=True),
        },
        routing={"max_tokens": 8, "tiers": {"all": {"effort": "1-10", "candidates": ["a", "b"]}}},
    )
    result = run_cli("profile", "switch", "trio", "--yes")
    assert result.returncode == 0, result.stderr
    return ports


def test_openai_client_lists_models_without_loading_and_a_stopped_service_starts_on_request(
    trio: dict[str, int],
) -> None:
    with serving("trio") as (url, _process):
        client = _client(url)
        ids = {model.id for model in client.models.list()}
        assert {"a", "b", "c", "all", "auto"} <= ids
        assert _ps() == {"a"}  # listing models loaded nothing

        raw = client.chat.completions.with_raw_response.create(
            model="b", max_tokens=6, messages=[{"role": "user", "content": "Say hi."}]
        )
        answer = raw.parse()
        assert raw.headers["x-aither-backend"] == "b"
        assert float(raw.headers["x-aither-load-wait"]) > 0
        assert answer.choices[0].message.content
        assert _ps() == {"a", "b"}

        stream = client.chat.completions.create(
            model="a",
            stream=True,
            max_tokens=6,
            messages=[{"role": "user", "content": "Say hi."}],
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.strip()

        curl = subprocess.run(
            [
                "curl",
                "-sN",
                "-D",
                "-",
                url + "/v1/chat/completions",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(
                    {
                        "model": "auto",
                        "stream": True,
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "Hi"}],
                    }
                ),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "x-aither-backend: a" in curl.stdout.lower()
        assert "x-aither-tier: all" in curl.stdout.lower()
        assert "data: [DONE]" in curl.stdout
        assert '"usage"' not in curl.stdout  # asked by the gateway for the ledger, not passed on

        unknown = _ask(url, "no-such-model")
        assert unknown.status_code == 404
        assert "a, all, auto" in unknown.json()["error"]["message"]


def test_ram_pool_evicts_the_least_recently_used_idle_service_never_a_busy_one(
    trio: dict[str, int],
) -> None:
    with serving("trio") as (url, _process):
        assert _ask(url, "a").status_code == 200
        assert _ask(url, "b").status_code == 200  # a and b: 512 of 600 MiB
        assert _ps() == {"a", "b"}

        answer = _ask(url, "c")  # needs 256 MiB more: a was used least recently
        assert answer.status_code == 200
        assert answer.headers["x-aither-backend"] == "c"
        assert _ps() == {"b", "c"}
        events = [(e["event"], e["backend"]) for e in _status(url)["events"]]
        assert ("evicted", "a") in events

        # b busy, c idle: a request for a must evict c, never b, and b's answer completes.
        busy = _slow_stream(url, "b", tokens=300)
        _wait_busy(url, "b")
        assert _ask(url, "a").status_code == 200
        busy.join(timeout=120)
        assert busy.result["finish"] == "length"  # type: ignore[attr-defined]
        assert len(busy.result["text"]) > 100  # type: ignore[attr-defined]
        assert _ps() == {"a", "b"}


def test_with_the_slot_busy_an_interactive_request_is_served_before_earlier_batch_ones(
    trio: dict[str, int],
) -> None:
    with serving("trio") as (url, _process):
        busy = _slow_stream(url, "a", tokens=250)
        _wait_busy(url, "a")
        finished: list[str] = []
        lock = threading.Lock()

        def ask(label: str, priority: str) -> None:
            response = httpx.post(
                url + "/v1/chat/completions",
                headers={"x-aither-priority": priority},
                json={
                    "model": "a",
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
                timeout=120,
            )
            assert response.status_code == 200, response.text
            with lock:
                finished.append(label)

        threads = []
        for index in range(3):
            threads.append(threading.Thread(target=ask, args=(f"batch{index}", "batch")))
            threads[-1].start()
            time.sleep(0.3)
        threads.append(threading.Thread(target=ask, args=("interactive", "interactive")))
        threads[-1].start()
        for thread in threads:
            thread.join(timeout=120)
        busy.join(timeout=120)
        assert finished[0] == "interactive", finished


def test_a_full_queue_answers_429_and_a_tier_overflows_to_the_next_candidate(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    del llama_image
    ports = {"a": free_port(), "b": free_port()}
    write_profile(
        "queues",
        services={
            "a": _service(ports["a"], max_concurrency=1, max_queue=1),
            "b": _service(ports["b"]),
        },
        routing={"max_tokens": 8, "tiers": {"all": {"effort": "1-10", "candidates": ["a", "b"]}}},
    )
    assert run_cli("profile", "switch", "queues", "--yes").returncode == 0
    with serving("queues") as (url, _process):
        busy = _slow_stream(url, "a", tokens=300)
        _wait_busy(url, "a")
        waiting = threading.Thread(target=_ask, args=(url, "a"), daemon=True)
        waiting.start()
        _wait_for(
            lambda: any(b["backend"] == "a" and b["queued"] == 1 for b in _status(url)["backends"]),
            10,
            "a queued request",
        )

        curl = subprocess.run(
            [
                "curl",
                "-s",
                "-D",
                "-",
                "-o",
                "/dev/null",
                url + "/v1/chat/completions",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(
                    {"model": "a", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
                ),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert curl.stdout.startswith("HTTP/1.1 429")
        assert "retry-after:" in curl.stdout.lower()

        overflow = _ask(url, "all")
        assert overflow.status_code == 200
        assert overflow.headers["x-aither-backend"] == "b"
        busy.join(timeout=120)
        waiting.join(timeout=120)


COUNT = [{"role": "user", "content": "Count to ten thousand."}]
# One long streamed answer per API serve speaks (llama.cpp's `ignore_eos` keeps it generating);
# each is left as soon as its first event arrives.
LONG_STREAMS = {
    "/v1/chat/completions": {"max_tokens": 2000, "ignore_eos": True, "messages": COUNT},
    "/v1/messages": {"max_tokens": 2000, "ignore_eos": True, "messages": COUNT},
    "/v1/responses": {"max_output_tokens": 2000, "ignore_eos": True, "input": COUNT[0]["content"]},
    "/api/chat": {"options": {"num_predict": 2000}, "messages": COUNT},
}


@pytest.mark.parametrize("route", list(LONG_STREAMS))
def test_a_client_that_disconnects_frees_the_servers_slot(trio: dict[str, int], route: str) -> None:
    with serving("trio") as (url, _process):
        body = {"model": "a", "stream": True, **LONG_STREAMS[route]}

        def slots_idle() -> bool:
            slots = httpx.get(f"http://127.0.0.1:{trio['a']}/slots", timeout=5).json()
            return not any(slot.get("is_processing") for slot in slots)

        with httpx.stream("POST", url + route, json=body, timeout=60) as resp:
            assert resp.status_code == 200, resp.read()
            # Read until the server is generating (its first event may come before the slot
            # takes the task), then leave: the answer has hundreds of tokens still to come.
            generating = False
            for line in resp.iter_lines():
                if line.startswith(("data:", "{")) and not slots_idle():
                    generating = True
                    break
            assert generating, "the stream ended before llama.cpp was seen generating"

        _wait_for(slots_idle, 5, "llama.cpp's slot to be released")
        _wait_for(
            lambda: all(b["in_flight"] == 0 for b in _status(url)["backends"]),
            5,
            "the gateway to release its place",
        )


def test_idle_after_puts_the_on_demand_service_away_and_restores_the_resident_set(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    del llama_image
    ports = {"main": free_port(), "extra": free_port()}
    write_profile(
        "idle",
        ram={"limit": "300MiB"},  # room for one of them
        services={
            "main": _service(ports["main"]),
            "extra": _service(ports["extra"], on_demand=True, idle_after="3s"),
        },
    )
    assert run_cli("profile", "switch", "idle", "--yes").returncode == 0
    with serving("idle") as (url, _process):
        assert _ask(url, "extra").headers["x-aither-backend"] == "extra"
        assert _ps() == {"extra"}  # main was displaced to make room
        _wait_for(
            lambda: _states(url) == {"main": "ready", "extra": "stopped"},
            40,
            "main to be back and extra stopped",
        )
        assert _ps() == {"main"}
        assert _ask(url, "main").status_code == 200


def test_64_streaming_clients_across_two_backends_each_get_their_own_answer(
    clean_namespace: object,
    llama_image: str,
    write_profile: Callable[..., Path],
    tmp_path: Path,
) -> None:
    del llama_image
    ports = {"left": free_port(), "right": free_port()}
    write_profile(
        "wide",
        services={
            "left": _service(ports["left"], slots=4),
            "right": _service(ports["right"], slots=4),
        },
    )
    assert run_cli("profile", "switch", "wide", "--yes").returncode == 0
    with serving("wide") as (url, _process):
        client = openai.AsyncOpenAI(
            base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300
        )

        async def one(index: int) -> tuple[str, str | None, str]:
            model = "left" if index % 2 else "right"
            stream = await client.chat.completions.create(
                model=model,
                stream=True,
                max_tokens=6,
                messages=[{"role": "user", "content": f"Say the number {index}."}],
            )
            text, finish = "", None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            return model, finish, text

        async def everyone() -> list[tuple[str, str | None, str]]:
            try:
                return await asyncio.gather(*(one(i) for i in range(64)))
            finally:
                await client.close()

        answers = asyncio.run(everyone())
        assert len(answers) == 64
        assert all(finish in ("stop", "length") and text for _m, finish, text in answers)
    rows = _ledger(tmp_path / "data")
    assert len(rows) == 64
    assert {row["backend"] for row in rows} == {"left", "right"}
    assert all(row["outcome"] == "ok" and row["tokens_out"] for row in rows)


def test_api_keys_are_required_off_loopback_and_checked(
    trio: dict[str, int], tmp_path: Path
) -> None:
    refused = run_cli(
        "serve", "--host", "0.0.0.0", "--port", str(free_port()), "--profile", "trio", timeout=30
    )
    assert refused.returncode != 0
    assert "API keys" in refused.stderr
    assert "Traceback" not in refused.stderr

    secret = "s3cret-key-for-tests-0123"
    with serving("trio", env={"AITHER_API_KEYS": f"{secret} interactive editor"}) as (url, _p):
        denied = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/v1/models"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert denied.stdout == "401"
        client = _client(url, api_key=secret)
        answer = client.chat.completions.create(
            model="a", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content is not None
    rows = _ledger(tmp_path / "data")
    assert rows[-1]["client"] == "editor"
    assert rows[-1]["priority"] == "interactive"
    assert secret not in json.dumps(rows)


def test_sigterm_lets_the_answer_in_flight_finish_and_leaves_the_containers(
    trio: dict[str, int],
) -> None:
    with serving("trio") as (url, process):
        busy = _slow_stream(url, "a", tokens=200)
        _wait_busy(url, "a")
        process.send_signal(signal.SIGTERM)
        busy.join(timeout=120)
        assert busy.result["finish"] == "length"  # type: ignore[attr-defined]
        process.wait(timeout=60)
    assert _ps() == {"a"}


def test_run_goes_through_the_gateway_and_direct_bypasses_it(trio: dict[str, int]) -> None:
    direct = run_cli("run", "--direct", "--backend", "c", "Say hi.", "--max-tokens", "4")
    assert direct.returncode == 9  # c is on demand and stopped: run alone does not start it
    with serving("trio") as (url, _process):
        result = run_cli("run", "--json", "--backend", "c", "Say hi.", "--max-tokens", "4")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["backend"] == "c"
        assert data["via"] == url
        assert data["load_wait_s"] > 0
        assert data["answer"]
        assert "c" in _ps()


def test_a_streamed_request_after_another_reuses_a_connection(
    trio: dict[str, int], tmp_path: Path
) -> None:
    """llama.cpp closes its connection after every streamed answer: serve opens a spare one
    (a GET of its health path, which keeps the connection), so the next request does not
    connect on its first token's way. serve's own timeline (AITHER_SERVE_TIMELINE) says which
    connection each request used."""
    del trio
    timeline = tmp_path / "timeline.jsonl"
    with serving("trio", env={"AITHER_SERVE_TIMELINE": str(timeline)}) as (url, _process):
        client = _client(url)
        for _ in range(3):
            stream = client.chat.completions.create(
                model="a",
                stream=True,
                max_tokens=4,
                messages=[{"role": "user", "content": "Say hi."}],
            )
            assert "".join(
                chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
            )
    stages = [
        {stage for stage, _ns in json.loads(line)} for line in timeline.read_text().splitlines()
    ]
    assert len(stages) == 3
    assert "upstream_conn_create_start" in stages[0]  # the first one connects
    for later in stages[1:]:
        assert "upstream_conn_reused" in later
        assert "upstream_conn_create_start" not in later


def test_metrics_and_events_report_the_schedulers_decisions(trio: dict[str, int]) -> None:
    with serving("trio") as (url, _process):
        assert _ask(url, "b").status_code == 200
        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert 'aither_loads_total{backend="b"} 1.0' in metrics
        assert 'aither_queue_depth{backend="a"} 0.0' in metrics
        assert 'aither_requests_total{backend="b",outcome="ok"} 1.0' in metrics
        assert "aither_ttft_seconds_bucket" in metrics
        seen = []
        with httpx.stream("GET", url + "/events", timeout=10) as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:])["event"])
                if "served" in seen:
                    break
        assert seen.index("loading") < seen.index("loaded") < seen.index("served")


def test_serve_follows_the_active_profile_across_a_switch(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    del llama_image
    write_profile("first", services={"one": _service(free_port())})
    write_profile("second", services={"two": _service(free_port())})
    assert run_cli("profile", "switch", "first", "--yes").returncode == 0
    with serving(None) as (url, _process):
        assert _ask(url, "one").status_code == 200
        assert run_cli("profile", "switch", "second", "--yes").returncode == 0
        _wait_for(
            lambda: httpx.get(url + "/health", timeout=5).json()["profile"] == "second",
            30,
            "serve to follow the switch",
        )
        answer = _ask(url, "two")
        assert answer.status_code == 200
        assert answer.headers["x-aither-backend"] == "two"
        assert _ask(url, "one").status_code == 404
        events = [e["event"] for e in _status(url)["events"]]
        assert "profile_changed" in events


def test_concurrent_requests_through_serve_stay_within_the_daily_budget(
    trio: dict[str, int], write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    """Twelve requests at once through the gateway, a priced endpoint (the real llama.cpp server
    of service `a`, $0.001 a token) first and the free service after it: the priced answers
    together stay within the cap, the rest fall back, and what `usage` reports is exactly the
    ledger rows' cost (reservations are replaced by the rows, never counted twice)."""
    write_profile(
        "metered",
        services={"a": _service(trio["a"])},
        endpoints={
            "paid": {
                "base_url": f"http://127.0.0.1:{trio['a']}/v1",
                "model": "smollm2",
                "engine": "llamacpp",
                "price": {"input": 1000, "output": 1000},
            }
        },
        routing={
            "max_tokens": 8,
            "tiers": {"all": {"effort": "1-10", "candidates": ["paid", "a"]}},
        },
        budget={"daily_usd": 0.2},
    )
    with serving("metered") as (url, _process):
        client = openai.AsyncOpenAI(
            base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300
        )

        async def one() -> tuple[str, Any]:
            raw = await client.chat.completions.with_raw_response.create(
                model="all", max_tokens=8, messages=[{"role": "user", "content": "Say hi."}]
            )
            return raw.headers["x-aither-backend"], raw.parse()

        async def everyone() -> list[tuple[str, Any]]:
            try:
                return await asyncio.gather(*(one() for _ in range(12)))
            finally:
                await client.close()

        answers = asyncio.run(everyone())
        backends = [backend for backend, _answer in answers]
        assert "paid" in backends
        assert "a" in backends
    rows = _ledger(tmp_path / "data")
    spent = sum(row["cost_usd"] for row in rows)
    assert 0 < spent <= 0.2
    assert all(row["cost_usd"] > 0 for row in rows if row["backend"] == "paid")
    usage = json.loads(run_cli("usage", "--json", "--profile", "metered").stdout)
    assert usage["budget"]["spent_today_usd"] == pytest.approx(spent, abs=1e-6)


def test_completions_and_embeddings_through_the_openai_client(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    """The two other OpenAI routes: legacy completions (stream and not) from a chat service,
    embeddings from a llama.cpp server started with --embeddings (on demand)."""
    del llama_image
    write_profile(
        "routes",
        services={
            "chat": _service(free_port()),
            "vectors": llama_service(
                free_port(),
                on_demand=True,
                served_name="vectors",
                args=["--ctx-size", "512", "--threads", "1", "--embeddings", "--pooling", "mean"],
            ),
        },
    )
    assert run_cli("profile", "switch", "routes", "--yes").returncode == 0
    with serving("routes") as (url, _process):
        client = _client(url)
        completion = client.completions.create(
            model="chat", prompt="Once upon a time", max_tokens=5
        )
        assert completion.choices[0].text
        streamed = client.completions.create(
            model="chat", prompt="Once upon a time", max_tokens=5, stream=True
        )
        assert "".join(c.choices[0].text for c in streamed if c.choices)
        vectors = client.embeddings.with_raw_response.create(
            model="vectors", input=["hello", "world"]
        )
        assert vectors.headers["x-aither-backend"] == "vectors"
        data = vectors.parse().data
        assert len(data) == 2
        assert len(data[0].embedding) > 10
        assert data[0].embedding != data[1].embedding


def test_a_client_that_leaves_the_queue_gives_its_place_up(
    trio: dict[str, int], tmp_path: Path
) -> None:
    """With `a`'s one slot busy, a queued request whose client disconnects leaves the queue at
    once (the next waiter moves up), and its ledger row says `cancelled`."""
    with serving("trio") as (url, _process):
        busy = _slow_stream(url, "a", tokens=300)
        _wait_busy(url, "a")
        leaving = subprocess.Popen(
            [
                "curl",
                "-sN",
                url + "/v1/chat/completions",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(
                    {
                        "model": "a",
                        "stream": True,
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "Hi"}],
                    }
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(
            lambda: any(b["backend"] == "a" and b["queued"] == 1 for b in _status(url)["backends"]),
            10,
            "the request to queue",
        )
        leaving.kill()
        leaving.wait()
        _wait_for(
            lambda: all(b["queued"] == 0 for b in _status(url)["backends"]),
            10,
            "the queue to empty",
        )
        events = [(e["event"], e["backend"]) for e in _status(url)["events"]]
        assert ("abandoned", "a") in events
        busy.join(timeout=120)
        assert _ask(url, "a").status_code == 200  # nothing left waiting in front
    rows = _ledger(tmp_path / "data")
    assert "cancelled" in [row["outcome"] for row in rows]


def test_a_client_that_leaves_while_its_model_loads_frees_its_place_and_the_load_finishes(
    trio: dict[str, int],
) -> None:
    with serving("trio") as (url, _process):
        leaving = subprocess.Popen(
            [
                "curl",
                "-sN",
                url + "/v1/chat/completions",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(
                    {
                        "model": "b",
                        "stream": True,
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "Hi"}],
                    }
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: _states(url)["b"] == "loading", 10, "b to start loading")
        leaving.kill()
        leaving.wait()
        _wait_for(lambda: _states(url)["b"] == "ready", 60, "b's load to finish")
        backend = next(b for b in _status(url)["backends"] if b["backend"] == "b")
        assert backend["in_flight"] == 0
        assert backend["queued"] == 0
        events = [(e["event"], e["backend"]) for e in _status(url)["events"]]
        assert ("abandoned", "b") in events
        assert _ask(url, "b").status_code == 200


def test_a_load_that_fails_falls_back_and_a_direct_request_gets_the_reason(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> None:
    """`broken` points at a model file that does not exist: its container exits at start. Three
    requests at once for it start one load; the tier's requests fall back to `a`, a request
    naming it gets 503 with the reason, and no container of it is left running."""
    del llama_image
    ports = {"a": free_port(), "broken": free_port()}
    write_profile(
        "faulty",
        services={
            "a": _service(ports["a"]),
            "broken": llama_service(
                ports["broken"], on_demand=True, model="/models/no-such-model.gguf"
            ),
        },
        routing={
            "max_tokens": 8,
            "tiers": {"all": {"effort": "1-10", "candidates": ["broken", "a"]}},
        },
    )
    assert run_cli("profile", "switch", "faulty", "--yes").returncode == 0
    with serving("faulty") as (url, _process):
        answers: list[httpx.Response] = []

        def ask(model: str) -> None:
            answers.append(_ask(url, model))

        threads = [
            threading.Thread(target=ask, args=(model,)) for model in ("all", "all", "broken")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        by_status = sorted((a.status_code, a.headers.get("x-aither-backend")) for a in answers)
        assert by_status == [(200, "a"), (200, "a"), (503, None)]
        failed = next(a for a in answers if a.status_code == 503)
        assert "broken could not be loaded" in failed.json()["error"]["message"]
        events = [(e["event"], e["backend"]) for e in _status(url)["events"]]
        assert events.count(("loading", "broken")) == 1  # one load for the three requests
        assert ("load_failed", "broken") in events
        assert _states(url)["broken"] == "stopped"
        assert "broken" not in _ps()


def test_sigterm_while_a_model_loads_rolls_the_load_back_and_exits(
    clean_namespace: object, base_image: str, write_profile: Callable[..., Path]
) -> None:
    """A service whose readiness never comes (600 s allowed): SIGTERM during its load ends the
    wait, the transaction removes what it created, serve exits 0 long before the timeout."""
    from tests.conftest import web_service

    del base_image
    never = web_service(free_port(), health="/never-ready", timeout=600)
    never["on_demand"] = True
    write_profile("stuck", services={"never": never})
    assert run_cli("profile", "switch", "stuck", "--yes").returncode == 0
    with serving("stuck") as (url, process):
        asking = threading.Thread(target=lambda: _ask(url, "never"), daemon=True)
        asking.start()
        _wait_for(lambda: _states(url)["never"] == "loading", 30, "the load to start")
        time.sleep(1.0)  # the container is created and being waited for
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=90)
        assert time.monotonic() - sent < 60
    listing = run_cli("ps", "--json")
    # Rolled back: the container the load created is gone, not merely stopped.
    assert "never" not in {row["service"] for row in json.loads(listing.stdout)["services"]}
