"""Concurrent scrapes of each server's own metrics, each bounded by a short timeout.

One refresh asks every running service at once (a thread per service) and waits at most
`deadline_s` in all: a server that does not answer in time reads as `timeout`, a refused
connection as `down`, and the refresh goes on without them. A service whose previous scrape is
still hanging is not asked again until that one ends, so a stuck server costs one thread, not one
per refresh. Each engine's pages and parsers come from its driver (`aitherctl.engines`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aitherctl.engines.metrics import EngineMetrics, MetricsFormatError
from aitherctl.engines.registry import MetricsEndpoint, driver_for
from aitherctl.monitor.model import ScrapeStatus

if TYPE_CHECKING:
    import httpx


def read_endpoint(endpoint: MetricsEndpoint, response: httpx.Response) -> EngineMetrics:
    """Parses one page as its driver describes it (Prometheus text or JSON)."""
    if endpoint.format == "prometheus":
        return endpoint.parse(response.text)
    try:
        payload = json.loads(response.content)
    except ValueError as exc:
        raise MetricsFormatError(f"not JSON: {exc}") from None
    return endpoint.parse(payload)


def endpoints_of(engine: str) -> tuple[MetricsEndpoint, ...]:
    """The pages the engine's driver lists; none for an unknown engine."""
    try:
        return driver_for(engine).metrics
    except KeyError:
        return ()


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """A running service whose metrics to read: its engine (which pages and parsers) and its URL."""

    service: str
    engine: str
    base_url: str  # http://127.0.0.1:8001


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """One service's scrape at one refresh: its status, its metrics or the error, how long the
    server took, and when it was read."""

    service: str
    status: ScrapeStatus
    metrics: EngineMetrics | None = None
    error: str | None = None
    latency_s: float | None = None
    read_at_s: float | None = None  # monotonic time of the reading, for counter rates


class Scraper:
    """Scrapes targets concurrently. Pass an `httpx.Client` to share one (tests, a proxy)."""

    def __init__(
        self,
        *,
        timeout_s: float = 0.5,
        deadline_s: float | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_workers: int = 16,
    ) -> None:
        import httpx

        self._timeout_s = timeout_s
        self._deadline_s = deadline_s if deadline_s is not None else timeout_s * 1.5
        self._own_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_workers * 2, max_keepalive_connections=32),
            trust_env=False,  # a proxy must never see local scrapes
        )
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="scrape")
        self._pending: dict[str, Future[ScrapeResult]] = {}
        self._lock = threading.Lock()

    def scrape_all(self, targets: Iterable[ScrapeTarget]) -> dict[str, ScrapeResult]:
        """Service name → result; never waits longer than the deadline in all."""
        started = self._clock()
        results: dict[str, ScrapeResult] = {}
        futures: dict[str, Future[ScrapeResult]] = {}
        with self._lock:
            for target in targets:
                if not endpoints_of(target.engine):
                    results[target.service] = ScrapeResult(target.service, ScrapeStatus.SKIPPED)
                    continue
                previous = self._pending.get(target.service)
                if previous is not None and not previous.done():
                    results[target.service] = ScrapeResult(
                        target.service,
                        ScrapeStatus.TIMEOUT,
                        error="still waiting for its previous answer",
                    )
                    continue
                future = self._pool.submit(self.scrape_one, target)
                self._pending[target.service] = future
                futures[target.service] = future
        wait(futures.values(), timeout=max(0.0, self._deadline_s - (self._clock() - started)))
        for service, future in futures.items():
            if future.done():
                results[service] = future.result()
            else:
                results[service] = ScrapeResult(
                    service,
                    ScrapeStatus.TIMEOUT,
                    error=f"no answer within {self._deadline_s:g} s",
                    latency_s=self._clock() - started,
                )
        return results

    def scrape_one(self, target: ScrapeTarget) -> ScrapeResult:
        import httpx

        started = self._clock()
        merged: EngineMetrics | None = None
        errors: list[tuple[ScrapeStatus, str]] = []
        for endpoint in endpoints_of(target.engine):
            path = endpoint.path
            if merged is not None and endpoint.fallback:
                continue
            try:
                response = self._client.get(target.base_url + path)
                response.raise_for_status()
                reading = read_endpoint(endpoint, response)
            except httpx.TimeoutException:
                errors.append((ScrapeStatus.TIMEOUT, f"{path}: no answer in {self._timeout_s:g} s"))
                break  # a hanging server will not answer the next path either
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                errors.append((ScrapeStatus.DOWN, f"{path}: {_first_line(exc) or 'refused'}"))
                break
            except httpx.HTTPStatusError as exc:
                errors.append((ScrapeStatus.ERROR, f"{path}: HTTP {exc.response.status_code}"))
                continue
            except (httpx.HTTPError, MetricsFormatError) as exc:
                errors.append((ScrapeStatus.ERROR, f"{path}: {_first_line(exc)}"))
                continue
            merged = reading if merged is None else merged.merged(reading)
        finished = self._clock()
        if merged is None:
            status, error = errors[0] if errors else (ScrapeStatus.ERROR, "no endpoint answered")
            return ScrapeResult(target.service, status, None, error, finished - started, finished)
        status = ScrapeStatus.OK
        if finished - started > self._timeout_s:
            status = ScrapeStatus.SLOW
        partial = "; ".join(message for _, message in errors) or None
        return ScrapeResult(target.service, status, merged, partial, finished - started, finished)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_client:
            self._client.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
