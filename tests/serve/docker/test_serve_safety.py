"""`aitherctl serve` on a workstation, against real llama.cpp servers (SmolLM2 on the CPU): the
budget holds for long chats sent without `max_tokens`, a web page cannot use the endpoint,
`--drain` bounds the shutdown, and the ledger stays usable while another process reads it.

The gateway runs as its own process; clients are the official `openai` client, curl and httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aitherctl.routing.request_cost import request_bound
from tests.conftest import free_port, llama_service, run_cli
from tests.serve.docker.serve_helpers import serving

pytestmark = pytest.mark.docker

openai = pytest.importorskip("openai")

PRICE = 1000.0  # USD per million tokens, in and out: $0.001 a token
CAP_USD = 12.0  # four worst cases (~$2.8 each: ~2,750 tokens bound) at once
LIMIT = 16  # routing.max_tokens


def _ledger(data_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()


def _llama(port: int) -> dict[str, object]:
    """SmolLM2 with 1,024 tokens of context in one slot (room for the history and an answer)."""
    return llama_service(
        port, ram="256MiB", args=["--ctx-size", "1024", "--threads", "1", "--parallel", "1"]
    )


def _long_chat(index: int) -> list[dict[str, str]]:
    """A chat with about 500 tokens of history (SmolLM2's tokenizer), as an editor sends it."""
    messages = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}]
    for turn in range(6):
        messages.append(
            {
                "role": "user",
                "content": (
                    f"Question {turn} of chat {index}: tell me something about the history of the "
                    "river towns along the valley, their bridges, mills and markets, and how trade "
                    "moved between them over the centuries."
                ),
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": (
                    "The towns grew around fords and later bridges; mills used the river's "
                    "fall, and weekly markets drew farmers from the hills. Trade moved by barge "
                    "downstream and by cart upstream, and tolls at the bridges paid for their "
                    "upkeep."
                ),
            }
        )
    messages.append({"role": "user", "content": "Now write a long story about one of them."})
    return messages


@pytest.fixture
def llama_port(
    clean_namespace: object, llama_image: str, write_profile: Callable[..., Path]
) -> int:
    """One resident llama.cpp service (`a`, 1,024 tokens of context) started by a switch."""
    del llama_image
    port = free_port()
    write_profile("solo", services={"a": _llama(port)}, routing={"max_tokens": LIMIT})
    result = run_cli("profile", "switch", "solo", "--yes")
    assert result.returncode == 0, result.stderr
    return port


def test_twelve_long_chats_without_max_tokens_to_a_priced_endpoint_stay_within_the_cap(
    llama_port: int, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    """The real llama.cpp server plays a priced endpoint ($0.001 a token). Each chat carries a
    system prompt and ~500 tokens of history and no `max_tokens`, and asks llama.cpp to ignore
    its end-of-text token: without a limit sent upstream it would write until its context is
    full. Every chat is answered (within `routing.max_tokens`) or refused by the budget (402),
    and the day's spend stays within the cap."""
    write_profile(
        "metered",
        services={"a": _llama(llama_port)},
        endpoints={
            "paid": {
                "base_url": f"http://127.0.0.1:{llama_port}/v1",
                "model": "smollm2",
                "engine": "llamacpp",
                "price": {"input": PRICE, "output": PRICE},
            }
        },
        routing={
            "max_tokens": LIMIT,
            "tiers": {"all": {"effort": "1-10", "candidates": ["paid"], "timeout_s": 600}},
        },
        budget={"daily_usd": CAP_USD},
    )
    with serving("metered") as served:
        client = openai.AsyncOpenAI(
            base_url=served.v1, api_key="unused", max_retries=0, timeout=300
        )

        async def one(index: int) -> tuple[int, Any]:
            try:
                answer = await client.chat.completions.create(
                    model="all", messages=_long_chat(index), extra_body={"ignore_eos": True}
                )
            except openai.APIStatusError as exc:
                return exc.status_code, exc.message
            return 200, answer

        async def everyone() -> list[tuple[int, Any]]:
            try:
                return await asyncio.gather(*(one(i) for i in range(12)))
            finally:
                await client.close()

        results = asyncio.run(everyone())
    statuses = sorted(status for status, _ in results)
    assert set(statuses) <= {200, 402, 429}, [r for r in results if r[0] != 200]
    answered = [answer for status, answer in results if status == 200]
    assert answered, results
    for index, (status, answer) in enumerate(results):
        if status != 200:
            continue
        assert answer.usage.completion_tokens <= LIMIT
        # The bound is above what the server counted with its own tokenizer.
        bound = request_bound("/v1/chat/completions", {"messages": _long_chat(index)}, LIMIT)
        assert answer.usage.prompt_tokens <= bound.input_tokens
        assert answer.usage.prompt_tokens > 400  # the history really was long
    rows = _ledger(tmp_path / "data")
    spent = sum(row["cost_usd"] for row in rows)
    assert 0 < spent <= CAP_USD
    usage = json.loads(run_cli("usage", "--json", "--profile", "metered").stdout)
    assert usage["budget"]["spent_today_usd"] == pytest.approx(spent, abs=1e-6)


def test_drain_is_the_whole_shutdown_budget_with_an_events_client_and_a_long_stream(
    llama_port: int, tmp_path: Path
) -> None:
    """`serve --drain 2` with an `/events` client connected and a stream that would run for
    long: on SIGTERM the events stream ends, the stream is cut after the drain, its ledger row
    is written, and the process exits 0 within a few seconds (aiohttp's own 60 s shutdown wait,
    applied twice, used to keep it running past systemd's TimeoutStopSec)."""
    del llama_port
    events: list[str] = []
    events_ended = threading.Event()
    streamed = threading.Event()

    def follow_events(url: str) -> None:
        with httpx.stream("GET", url + "/events", timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:])["event"])
        events_ended.set()

    def long_stream(url: str) -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream(
                "POST",
                url + "/v1/chat/completions",
                timeout=120,
                json={
                    "model": "a",
                    "stream": True,
                    "max_tokens": 900,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": "Count to one thousand."}],
                },
            ) as response,
        ):
            for line in response.iter_lines():
                if '"content"' in line:
                    streamed.set()

    with serving("solo", args=["--drain", "2"], expect_exit=None) as served:
        threading.Thread(target=follow_events, args=(served.url,), daemon=True).start()
        threading.Thread(target=long_stream, args=(served.url,), daemon=True).start()
        assert streamed.wait(120), served.log_tail()
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(timeout=20)  # drain 2 s; "a few seconds", generously
        assert code == 0, served.log_tail()
        assert events_ended.wait(5)
        assert "draining" in events
    rows = _ledger(tmp_path / "data")
    assert [row["backend"] for row in rows] == ["a"]
    assert rows[0]["ttft_s"] is not None
