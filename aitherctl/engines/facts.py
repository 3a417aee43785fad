"""What a client of each built-in engine needs to know, without loading its driver.

`aitherctl run` and `serve` route to a service by its health path, its API root and the gauge of
requests waiting for a slot. Those three facts live here, and each driver (`vllm.py`, `ollama.py`,
...) takes them from here: the router then builds its table without importing the drivers, their
dataclasses and their metrics parsers (about 15 ms of every `run`).
"""

from __future__ import annotations

from typing import NamedTuple


class ClientFacts(NamedTuple):
    health_path: str | None  # the GET that says a running server can take requests
    client_path: str  # what clients append to http://host:port ("/v1" or "")
    queue_metric: str | None  # the Prometheus gauge of requests waiting for a slot


BUILT_IN: dict[str, ClientFacts] = {
    "vllm": ClientFacts("/health", "/v1", "vllm:num_requests_waiting"),
    "ollama": ClientFacts("/api/version", "", None),
    "comfyui": ClientFacts("/system_stats", "", None),
    "llamacpp": ClientFacts("/health", "/v1", "llamacpp:requests_deferred"),
    "generic": ClientFacts("/v1/models", "", None),
}


def queue_metrics() -> dict[str, str]:
    """engine → its queue gauge, for the engines that publish one."""
    return {name: f.queue_metric for name, f in BUILT_IN.items() if f.queue_metric is not None}


def health_paths() -> dict[str, str]:
    """engine → the GET that says a running server can take requests."""
    return {name: f.health_path for name, f in BUILT_IN.items() if f.health_path is not None}
