"""`aitherctl serve` in front of cloud-style endpoints, no Docker needed: the OpenAI contract
double (tests/doubles/chat_server.py, after the OpenAI API reference) plays the provider.

What a provider sees (its key, no `priority` field), fallback before the first token and never
after it, and the daily budget, through the real `aitherctl serve` process and the official
`openai` client and curl.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run_cli
from tests.doubles.chat_server import chat_double
from tests.serve.docker.serve_helpers import serving

openai = pytest.importorskip("openai")
KEY = "sk-test-provider-key-0123456789"


@contextmanager
def gateway(profile: str) -> Iterator[str]:
    """A real `aitherctl serve` (tests/serve/docker/serve_helpers.py) with the provider's key in
    its environment."""
    with serving(profile, env={"CLOUD_KEY": KEY}) as served:
        yield served.url


def _endpoint(root: str, **extra: object) -> dict[str, object]:
    return {"base_url": f"{root}/v1", "model": "gpt-double", "api_key_env": "CLOUD_KEY", **extra}


def _rows(data: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(data / "ledger.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()


def _wait_rows(data: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        rows = _rows(data) if (data / "ledger.sqlite3").exists() else []
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_the_provider_gets_its_key_and_no_priority_field(
    write_profile: Callable[..., Path],
) -> None:
    with chat_double(api_key=KEY) as cloud:
        write_profile(
            "cloudy",
            services={},
            endpoints={"cloud": _endpoint(cloud.root)},
            routing={"tiers": {"all": {"effort": "1-10", "candidates": ["cloud"]}}},
        )
        with gateway("cloudy") as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            stream = client.chat.completions.create(
                model="auto",
                stream=True,
                messages=[{"role": "user", "content": "Hi"}],
                extra_body={"priority": "batch"},
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == "Hello from the double."
    sent = cloud.state.requests[-1]
    assert "priority" not in sent
    assert sent["model"] == "gpt-double"
    assert cloud.state.headers[-1]["authorization"] == f"Bearer {KEY}"


def test_fallback_happens_before_the_first_token_and_never_after(
    write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    with (
        chat_double(api_key=KEY, mode="http500") as broken,
        chat_double(api_key=KEY) as spare,
        chat_double(api_key=KEY, mode="broken_after") as flaky,
    ):
        write_profile(
            "fallback",
            services={},
            endpoints={
                "broken": _endpoint(broken.root),
                "spare": _endpoint(spare.root),
                "flaky": _endpoint(flaky.root),
            },
            routing={
                "tiers": {
                    "before": {"effort": "1-5", "candidates": ["broken", "spare"]},
                    "after": {"effort": "6-10", "candidates": ["flaky", "spare"]},
                }
            },
        )
        with gateway("fallback") as url:
            answer = httpx.post(
                url + "/v1/chat/completions",
                timeout=30,
                json={"model": "before", "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert answer.status_code == 200
            assert answer.headers["x-aither-backend"] == "spare"

            spare_calls = len(spare.state.requests)
            curl = subprocess.run(
                [
                    "curl",
                    "-sN",
                    url + "/v1/chat/completions",
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    json.dumps(
                        {
                            "model": "after",
                            "stream": True,
                            "messages": [{"role": "user", "content": "Hi"}],
                        }
                    ),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert '"content": "Hello"' in curl.stdout.replace('":"', '": "')
            assert "failed after the answer had started" in curl.stdout
            assert len(spare.state.requests) == spare_calls  # never completed by another
    rows = _wait_rows(tmp_path / "data", 2)
    assert [(row["backend"], row["outcome"]) for row in rows] == [
        ("spare", "ok"),
        ("flaky", "partial"),
    ]


def test_the_daily_budget_refuses_with_402_and_the_provider_is_never_called(
    write_profile: Callable[..., Path],
) -> None:
    with chat_double(api_key=KEY) as cloud:
        write_profile(
            "broke",
            services={},
            endpoints={"cloud": _endpoint(cloud.root, price={"input": 1000, "output": 1000})},
            routing={
                "max_tokens": 64,
                "tiers": {"all": {"effort": "1-10", "candidates": ["cloud"]}},
            },
            budget={"daily_usd": 0.0001},
        )
        with gateway("broke") as url:
            answer = httpx.post(
                url + "/v1/chat/completions",
                timeout=30,
                json={"model": "all", "messages": [{"role": "user", "content": "Hi"}]},
            )
    assert answer.status_code == 402
    assert "budget" in answer.json()["error"]["message"]
    assert cloud.state.requests == []


def test_a_priced_endpoint_gets_the_profiles_output_limit_when_the_client_sets_none(
    write_profile: Callable[..., Path],
) -> None:
    """The reservation is an upper bound only if the provider is told where to stop: without a
    limit from the client, `routing.max_tokens` goes to a priced endpoint under the field it
    accepts; a free one gets the body as the client sent it, and `run` through serve sends its
    limit to every backend as `run --direct` does."""
    with chat_double(api_key=KEY) as paid, chat_double(api_key=KEY) as free:
        write_profile(
            "limits",
            services={},
            endpoints={
                "paid": _endpoint(
                    paid.root,
                    price={"input": 1, "output": 1},
                    max_tokens_field="max_completion_tokens",
                ),
                "free": _endpoint(free.root),
            },
            routing={
                "max_tokens": 3,
                "tiers": {
                    "priced": {"effort": "1-5", "candidates": ["paid"]},
                    "local": {"effort": "6-10", "candidates": ["free"]},
                },
            },
        )
        with gateway("limits") as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            for model in ("priced", "local"):
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "Hi"}]
                )
            client.chat.completions.create(
                model="priced", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
            )
            run = run_cli("run", "--tier", "local", "Hi", env={"CLOUD_KEY": KEY})
            assert run.returncode == 0, run.stderr
    assert paid.state.requests[0]["max_completion_tokens"] == 3
    assert "max_tokens" not in paid.state.requests[0]
    assert paid.state.requests[1]["max_completion_tokens"] == 5  # the client's own limit
    assert "max_tokens" not in free.state.requests[0]
    assert "max_completion_tokens" not in free.state.requests[0]
    assert free.state.requests[1]["max_tokens"] == 3  # `run`, through serve
