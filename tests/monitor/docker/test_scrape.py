"""Scrapes against real local HTTP servers: a good one, a hanging one, a dead port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aitherctl.monitor.model import ScrapeStatus
from aitherctl.monitor.scrape import Scraper, ScrapeTarget

FIXTURES = Path(__file__).parents[2] / "fixtures" / "metrics"
Routes = dict[str, tuple[int, bytes]]


def serve(routes: Routes, *, delay_s: float = 0.0) -> tuple[ThreadingHTTPServer, str]:
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if delay_s:
                release.wait(delay_s)
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.release = release  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def servers() -> Iterator[Callable[..., str]]:
    started: list[ThreadingHTTPServer] = []

    def start(routes: Routes, *, delay_s: float = 0.0) -> str:
        server, url = serve(routes, delay_s=delay_s)
        started.append(server)
        return url

    yield start
    for server in started:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def dead_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


VLLM: Routes = {"/metrics": (200, (FIXTURES / "vllm_metrics.prom").read_bytes())}


def test_a_hanging_server_does_not_stall_the_refresh(servers: Callable[..., str]) -> None:
    good = servers(VLLM)
    hanging = servers(VLLM, delay_s=10)
    scraper = Scraper(timeout_s=0.3)
    try:
        started = time.monotonic()
        results = scraper.scrape_all(
            [
                ScrapeTarget("good", "vllm", good),
                ScrapeTarget("stuck", "vllm", hanging),
                ScrapeTarget("gone", "vllm", dead_port()),
            ]
        )
        elapsed = time.monotonic() - started
    finally:
        scraper.close()
    assert elapsed < 1.0, f"a refresh waited {elapsed:.2f} s for a hanging server"
    assert results["good"].status is ScrapeStatus.OK
    assert results["good"].metrics is not None
    assert results["good"].metrics.requests_waiting == 3
    assert results["stuck"].status is ScrapeStatus.TIMEOUT
    assert results["gone"].status is ScrapeStatus.DOWN


def test_a_stuck_service_is_not_asked_again_while_its_request_hangs(
    servers: Callable[..., str],
) -> None:
    hanging = servers(VLLM, delay_s=10)
    # The HTTP timeout is long; only the refresh deadline bounds the wait.
    scraper = Scraper(timeout_s=5, deadline_s=0.2)
    try:
        first = scraper.scrape_all([ScrapeTarget("stuck", "vllm", hanging)])
        started = time.monotonic()
        second = scraper.scrape_all([ScrapeTarget("stuck", "vllm", hanging)])
        assert time.monotonic() - started < 0.1
    finally:
        scraper.close()
    assert first["stuck"].status is ScrapeStatus.TIMEOUT
    assert second["stuck"].status is ScrapeStatus.TIMEOUT
    assert second["stuck"].error == "still waiting for its previous answer"


def test_error_status_and_bad_payload(servers: Callable[..., str]) -> None:
    failing = servers({"/metrics": (503, b"Service Unavailable")})
    garbage = servers({"/api/ps": (200, b"<html>")})
    scraper = Scraper(timeout_s=0.5)
    try:
        results = scraper.scrape_all(
            [ScrapeTarget("v", "vllm", failing), ScrapeTarget("o", "ollama", garbage)]
        )
    finally:
        scraper.close()
    assert results["v"].status is ScrapeStatus.ERROR
    assert results["v"].error == "/metrics: HTTP 503"
    assert results["o"].status is ScrapeStatus.ERROR
    assert results["o"].error is not None
    assert results["o"].error.startswith("/api/ps: not JSON")


def test_comfyui_merges_both_endpoints(servers: Callable[..., str]) -> None:
    url = servers(
        {
            "/queue": (200, (FIXTURES / "comfyui_queue.json").read_bytes()),
            "/system_stats": (200, (FIXTURES / "comfyui_system_stats.json").read_bytes()),
        }
    )
    scraper = Scraper(timeout_s=0.5)
    try:
        result = scraper.scrape_all([ScrapeTarget("img", "comfyui", url)])["img"]
    finally:
        scraper.close()
    assert result.status is ScrapeStatus.OK
    assert result.metrics is not None
    assert (result.metrics.requests_running, result.metrics.requests_waiting) == (1, 2)
    assert result.metrics.engine_vram_bytes == 9663676416


def test_llamacpp_asks_slots_only_when_metrics_are_off(servers: Callable[..., str]) -> None:
    with_metrics = servers(
        {
            "/metrics": (200, b"llamacpp:requests_processing 1\n"),
            "/slots": (500, b"must not be asked"),
        }
    )
    # llama-server without --metrics answers 501 there; /slots still tells the busy slots.
    without_metrics = servers(
        {
            "/metrics": (501, b'{"error":{"code":501}}'),
            "/slots": (200, b'[{"id":0,"is_processing":true},{"id":1,"is_processing":false}]'),
        }
    )
    scraper = Scraper(timeout_s=0.5)
    try:
        results = scraper.scrape_all(
            [
                ScrapeTarget("on", "llamacpp", with_metrics),
                ScrapeTarget("off", "llamacpp", without_metrics),
            ]
        )
    finally:
        scraper.close()
    on, off = results["on"], results["off"]
    assert on.status is ScrapeStatus.OK
    assert on.error is None
    assert on.metrics is not None
    assert on.metrics.requests_running == 1
    assert off.status is ScrapeStatus.OK
    assert off.metrics is not None
    assert (off.metrics.slots_busy, off.metrics.slots_total) == (1, 2)
    assert off.error == "/metrics: HTTP 501"


def test_generic_engine_is_not_scraped() -> None:
    scraper = Scraper()
    try:
        result = scraper.scrape_all([ScrapeTarget("x", "generic", "http://127.0.0.1:1")])["x"]
    finally:
        scraper.close()
    assert result.status is ScrapeStatus.SKIPPED
