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
    # The server closes its connection after every streamed answer, although it answers
    # `Keep-Alive` (llama.cpp's cpp-httplib, checked on the test image: closed within 0.5 ms of
    # the last chunk; its other answers keep the connection for 5 s).
    closes_after_stream: bool = False


BUILT_IN: dict[str, ClientFacts] = {
    "vllm": ClientFacts("/health", "/v1", "vllm:num_requests_waiting"),
    "ollama": ClientFacts("/api/version", "", None),
    "comfyui": ClientFacts("/system_stats", "", None),
    "llamacpp": ClientFacts("/health", "/v1", "llamacpp:requests_deferred", True),
    "generic": ClientFacts("/v1/models", "", None),
}


def queue_metrics() -> dict[str, str]:
    """engine → its queue gauge, for the engines that publish one."""
    return {name: f.queue_metric for name, f in BUILT_IN.items() if f.queue_metric is not None}


def health_paths() -> dict[str, str]:
    """engine → the GET that says a running server can take requests."""
    return {name: f.health_path for name, f in BUILT_IN.items() if f.health_path is not None}


def spare_connection_url(engine: str, base_url: str, health_url: str | None) -> str | None:
    """For an engine whose server closes the connection after each streamed answer: a cheap
    GET on the same server (its health route) whose answer keeps the connection open; None
    for the others (their connection goes back to the pool by itself)."""
    facts = BUILT_IN.get(engine)
    if facts is None or not facts.closes_after_stream:
        return None
    if health_url:
        return health_url
    if facts.health_path is None or "://" not in base_url:
        return None
    return origin(base_url) + facts.health_path


def origin(url: str) -> str:
    """`scheme://host:port` of a URL: one server, whose connections a client may pool."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
