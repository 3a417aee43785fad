"""The monitor's scheduler source against a real `aitherctl serve` (a separate process, as a user
starts it): found through its state file, read over HTTP, with and without API keys, and gone
once it stops. The first tests serve an endpoint-only profile (no Docker needed); the last one
serves a real llama.cpp container with one slot and watches requests queue by priority."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aitherctl.monitor.collect import build_collector, scheduler_source
from aitherctl.monitor.model import SchedulerView
from aitherctl.tui.app import build_monitor_app
from tests.conftest import free_port, llama_service

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-monitor-test-key"


@contextmanager
def serving(profile: str, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """`aitherctl serve --port P --profile NAME` until the block ends; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "serve", "--port", str(port), "--profile", profile],
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(300):
            if server.poll() is not None:
                pytest.fail(f"aitherctl serve exited: {server.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("aitherctl serve did not answer /health within 30 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def read_until(
    read: Callable[[], SchedulerView], done: Callable[[SchedulerView], bool], seconds: float = 10.0
) -> SchedulerView:
    deadline = time.monotonic() + seconds
    view = read()
    while not done(view) and time.monotonic() < deadline:
        time.sleep(0.05)
        view = read()
    return view


@pytest.fixture
def endpoint_profile(write_profile: Callable[..., Path]) -> str:
    write_profile(
        "schedmon",
        endpoints={"cloud": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}},
    )
    return "schedmon"


def test_the_monitor_source_reads_a_real_serve_and_notices_it_stop(endpoint_profile: str) -> None:
    source = scheduler_source(timeout_s=2.0)
    assert source.read() == SchedulerView(url=None)
    with serving(endpoint_profile) as url:
        view = source.read()
        assert (view.url, view.profile, view.error) == (url, "schedmon", None)
        assert [(b.name, b.kind, b.state, b.in_flight, b.queued) for b in view.backends] == [
            ("cloud", "endpoint", "ready", 0, 0)
        ]
        assert [pool.name for pool in view.pools] == ["ram"]
        assert view.events == ()
        # A request to the endpoint (nothing listens there) shows up among the last events.
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            trust_env=False,
            timeout=30,
            json={
                "model": "cloud",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
        )
        assert answer.status_code >= 500
        view = read_until(source.read, lambda v: bool(v.events))
        assert [(e.event, e.backend) for e in view.events] == [("fell_back", "cloud")]

        # The whole monitor path: collector (as `status` and `monitor` build it) and the app.
        snapshot = build_collector(use_docker=False, use_gpu=False)[0].collect()
        assert snapshot.scheduler is not None
        assert snapshot.scheduler.profile == "schedmon"
    assert source.read() == SchedulerView(url=None)  # its state file is gone with it


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_monitor_app_shows_a_real_serve(endpoint_profile: str) -> None:
    from tests.tui.test_monitor_app import plain, settle

    with serving(endpoint_profile) as url:
        app = build_monitor_app(interval_s=10, use_gpu=False, use_docker=False)
        async with app.run_test(size=(130, 42)) as pilot:
            await settle(app, pilot)
            text = plain(app.query_one("#scheduler"))
            assert f"scheduler {url}  profile schedmon  0 in flight, 0 queued" in text
            assert "cloud" in text
            assert "endpoint" in text


def test_with_api_keys_the_monitor_needs_aither_api_key(
    endpoint_profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AITHER_API_KEY", raising=False)
    with serving(endpoint_profile, env={"AITHER_API_KEYS": KEY}) as url:
        view = scheduler_source(timeout_s=2.0).read()
        assert (view.url, view.error) == (url, "needs an API key (set $AITHER_API_KEY)")
        monkeypatch.setenv("AITHER_API_KEY", "sk-not-it")
        assert scheduler_source(timeout_s=2.0).read().error == "API key refused ($AITHER_API_KEY)"
        monkeypatch.setenv("AITHER_API_KEY", KEY)
        view = scheduler_source(timeout_s=2.0).read()
        assert (view.error, view.profile) == (None, "schedmon")


def _chat(url: str, priority: str) -> None:
    body = {
        "model": "llm",
        "max_tokens": 120,
        "priority": priority,
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "Tell a long story about the sea."}],
    }
    httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300, trust_env=False)


@pytest.mark.docker
def test_the_monitor_sees_a_real_llamacpp_queue_by_priority(
    clean_namespace: Any, write_profile: Callable[..., Path], llama_image: str
) -> None:
    write_profile(
        "schedq",
        ram={"limit": "2GiB"},
        services={
            "llm": llama_service(free_port(), on_demand=True, ram="512MiB", max_concurrency=1),
        },
    )
    source = scheduler_source(timeout_s=2.0)
    with serving("schedq") as url:
        clients = [
            threading.Thread(target=_chat, args=(url, p))
            for p in ("normal", "batch", "interactive")
        ]
        for client in clients:
            client.start()
            time.sleep(0.3)

        def llm_of(view: SchedulerView) -> Any:
            return next((b for b in view.backends if b.name == "llm"), None)

        busy = read_until(
            source.read,
            lambda v: llm_of(v) is not None and llm_of(v).in_flight == 1 and llm_of(v).queued == 2,
            seconds=120,
        )
        llm = llm_of(busy)
        assert (llm.state, llm.in_flight, llm.limit, llm.queued) == ("ready", 1, 1, 2)
        assert (llm.queued_interactive + llm.queued_normal + llm.queued_batch) == 2
        assert llm.claims_bytes == (("ram", 512 * 1024**2),)
        assert busy.pools[0].used_bytes == 512 * 1024**2
        assert {"loading", "loaded", "queued"} <= {e.event for e in busy.events}
        for client in clients:
            client.join()
        idle = read_until(source.read, lambda v: sum(e.event == "served" for e in v.events) == 3)
        assert (llm_of(idle).in_flight, llm_of(idle).queued) == (0, 0)
        # Served in priority order once the first one holds the slot: interactive before batch.
        served = [e.request for e in idle.events if e.event == "served"]
        queued = {e.detail.split(",")[0]: e.request for e in idle.events if e.event == "queued"}
        assert served.index(queued["interactive"]) < served.index(queued["batch"])
