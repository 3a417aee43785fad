"""`GET /metrics`: the scheduler in Prometheus' text format (prometheus_client, own registry).

Counters and histograms are fed as things happen (`PromMetrics.count` / `observe`, called by the
scheduler and the dispatcher on the event loop); the gauges of queue depth, requests in flight
and backend state are read from the scheduler when the page is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from aitherctl.serve.scheduler import Metrics
from aitherctl.serve.states import BackendState

if TYPE_CHECKING:
    from aitherctl.serve.scheduler import Scheduler

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class PromMetrics(Metrics):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.counters = {
            "requests": Counter(
                "aither_requests",
                "Requests answered, by backend and outcome",
                ["backend", "outcome"],
                registry=r,
            ),
            "queued": Counter(
                "aither_queued", "Requests that had to wait in a queue", ["backend"], registry=r
            ),
            "rejected": Counter(
                "aither_rejected",
                "Requests refused for a full queue (429)",
                ["backend"],
                registry=r,
            ),
            "loads": Counter(
                "aither_loads", "Services loaded (started or woken)", ["backend"], registry=r
            ),
            "load_failures": Counter(
                "aither_load_failures", "Loads that failed", ["backend"], registry=r
            ),
            "evictions": Counter(
                "aither_evictions",
                "Services evicted (stopped, slept, unloaded)",
                ["backend"],
                registry=r,
            ),
            "sleeps": Counter("aither_sleeps", "vLLM sleep-mode sleeps", ["backend"], registry=r),
            "wakes": Counter("aither_wakes", "vLLM sleep-mode wake-ups", ["backend"], registry=r),
        }
        self.histograms = {
            name: Histogram(
                f"aither_{name}", help_text, ["backend"], registry=r, buckets=_LATENCY_BUCKETS
            )
            for name, help_text in (
                ("ttft_seconds", "Time from the request to the first byte of the answer"),
                ("request_seconds", "Time from the request to its end"),
                ("queue_wait_seconds", "Time waiting for a place in the backend"),
                ("load_wait_seconds", "Time waiting for the backend to load"),
                ("load_seconds", "Time a load took (eviction included)"),
            )
        }
        self._children: dict[tuple[str, str], Any] = {}
        self._outcomes: dict[tuple[str, str, str], Any] = {}
        self.queue_depth = Gauge(
            "aither_queue_depth", "Requests waiting, per backend", ["backend"], registry=r
        )
        self.in_flight = Gauge(
            "aither_in_flight", "Requests being answered, per backend", ["backend"], registry=r
        )
        self.limit = Gauge(
            "aither_concurrency_limit",
            "Requests a backend may work on at once",
            ["backend"],
            registry=r,
        )
        self.ready = Gauge(
            "aither_backend_ready",
            "1 when the backend can take requests now",
            ["backend"],
            registry=r,
        )

    def count(self, name: str, backend: str, **labels: str) -> None:
        counter = self.counters.get(name)
        if counter is not None:
            counter.labels(backend=backend, **labels).inc()

    def count_outcome(self, name: str, backend: str, outcome: str) -> None:
        key = (name, backend, outcome)
        child = self._outcomes.get(key)
        if child is None:
            counter = self.counters.get(name)
            if counter is None:
                return
            child = self._outcomes[key] = counter.labels(backend=backend, outcome=outcome)
        child.inc()

    def observe(self, name: str, backend: str, seconds: float) -> None:
        # Each request observes three histograms: their labelled children are looked up once
        # (prometheus_client's `labels` validates and hashes its arguments on every call).
        key = (name, backend)
        child = self._children.get(key)
        if child is None:
            histogram = self.histograms.get(name)
            if histogram is None:
                return
            child = self._children[key] = histogram.labels(backend=backend)
        child.observe(seconds)

    def render(self, scheduler: Scheduler) -> tuple[bytes, str]:
        for backend in scheduler.backends.values():
            if backend.limit == 0:
                continue
            self.queue_depth.labels(backend=backend.name).set(len(backend.queue))
            self.in_flight.labels(backend=backend.name).set(backend.in_flight)
            self.limit.labels(backend=backend.name).set(backend.limit)
            self.ready.labels(backend=backend.name).set(
                1 if backend.state is BackendState.READY else 0
            )
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
