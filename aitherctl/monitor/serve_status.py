"""Reads a running `aitherctl serve`'s `GET /status` for the monitor: plain HTTP, short timeout.

The gateway answers `/status` from its one event loop with what its scheduler holds now:
`{"profile", "backends": [...], "pools": [...], "events": [the last 20]}` (aitherctl/serve/
app.py `status`, aitherctl/serve/scheduler.py `snapshot`). The same as
`curl -s http://127.0.0.1:8150/status`. The small socket client (aitherctl/loopback_http.py), not
httpx or aiohttp: `status` reads it once and exits, and the monitor asks once a refresh on loopback.

`SchedulerStatusReader.read()` never raises: a gateway that is not answering, too slow, asks for
an API key or sends something unreadable gives a `SchedulerView` with `error` set.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aitherctl.loopback_http import ClosedBeforeAnswer, connect_tcp, host_header, request
from aitherctl.monitor.model import (
    SchedulerBackendView,
    SchedulerEvent,
    SchedulerPoolView,
    SchedulerView,
)

STATUS_PATH = "/status"
# GET /status → (HTTP status, body); raises OSError (refused, reset, timeout) when none came.
Fetch = Callable[[str, Mapping[str, str], float], tuple[int, bytes]]
# (URL, profile) of a running `aitherctl serve`, or None (`aitherctl.serve.discovery.find_gateway`).
Locate = Callable[[], tuple[str, str] | None]


class StatusFormatError(ValueError):
    """The answer is not a scheduler status document."""


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StatusFormatError(f"{what} is not a number: {value!r}")
    return int(value)


def _number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_backend(item: Any) -> SchedulerBackendView:
    if not isinstance(item, dict) or "backend" not in item:
        raise StatusFormatError(f"a backend without a name: {item!r}")
    name = str(item["backend"])
    by_priority = item.get("queued_by_priority") or {}
    if not isinstance(by_priority, dict):
        raise StatusFormatError(f"{name}: queued_by_priority is not a mapping")
    claims = item.get("claims_bytes") or {}
    if not isinstance(claims, dict):
        raise StatusFormatError(f"{name}: claims_bytes is not a mapping")
    max_queue = item.get("max_queue")
    return SchedulerBackendView(
        name=name,
        kind=str(item.get("kind", "service")),
        state=str(item.get("state", "unknown")),
        in_flight=_int(item.get("in_flight", 0), f"{name}: in_flight"),
        limit=_int(item.get("limit", 0), f"{name}: limit"),
        queued=_int(item.get("queued", 0), f"{name}: queued"),
        queued_interactive=_int(by_priority.get("interactive", 0), f"{name}: interactive"),
        queued_normal=_int(by_priority.get("normal", 0), f"{name}: normal"),
        queued_batch=_int(by_priority.get("batch", 0), f"{name}: batch"),
        max_queue=None if max_queue is None else _int(max_queue, f"{name}: max_queue"),
        pinned=bool(item.get("pinned", False)),
        on_demand=bool(item.get("on_demand", False)),
        displaced=bool(item.get("displaced", False)),
        claims_bytes=tuple(
            (str(pool), _int(amount, f"{name}: claim on {pool}"))
            for pool, amount in sorted(claims.items())
        ),
        last_error=_text_or_none(item.get("last_error")),
        last_used_clock_s=_number_or_none(item.get("last_used_ts")),
        price_per_hour_usd=_number_or_none(item.get("price_per_hour_usd")),
        spent_today_usd=_number_or_none(item.get("spent_today_usd")),
        idle_left_s=_number_or_none(item.get("idle_left_s")),
    )


def parse_pool(item: Any) -> SchedulerPoolView:
    if not isinstance(item, dict) or "pool" not in item:
        raise StatusFormatError(f"a pool without a name: {item!r}")
    capacity = item.get("capacity_bytes")
    return SchedulerPoolView(
        name=str(item["pool"]),
        capacity_bytes=None if capacity is None else _int(capacity, "capacity_bytes"),
        used_bytes=_int(item.get("used_bytes", 0), "used_bytes"),
    )


def parse_event(item: Any) -> SchedulerEvent:
    if not isinstance(item, dict):
        raise StatusFormatError(f"an event that is not an object: {item!r}")
    ts = _number_or_none(item.get("ts"))
    if ts is None:
        raise StatusFormatError(f"an event without a time: {item!r}")
    return SchedulerEvent(
        at=datetime.fromtimestamp(ts, UTC),
        event=str(item.get("event", "?")),
        backend=_text_or_none(item.get("backend")),
        detail=str(item.get("detail") or ""),
        request=_text_or_none(item.get("request")),
    )


def parse_status(document: Any, *, url: str, latency_s: float | None = None) -> SchedulerView:
    """A `GET /status` document as a `SchedulerView`; `StatusFormatError` if it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("backends"), list):
        raise StatusFormatError("no `backends` list")
    pools = document.get("pools") or []
    events = document.get("events") or []
    if not isinstance(pools, list) or not isinstance(events, list):
        raise StatusFormatError("`pools` and `events` must be lists")
    parsed_events = sorted((parse_event(item) for item in events), key=lambda e: e.at)
    return SchedulerView(
        url=url,
        profile=_text_or_none(document.get("profile")),
        backends=tuple(parse_backend(item) for item in document["backends"]),
        pools=tuple(parse_pool(item) for item in pools),
        events=tuple(parsed_events),
        latency_s=latency_s,
    )


def fetch_plain(url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
    """GET `url` over the small socket client (no proxy: the gateway is local)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise OSError(f"not an http:// URL: {url}")
    host, port = parts.hostname, parts.port or 80
    sock = connect_tcp(host, port, timeout_s)
    answer = request(sock, "GET", host_header(host, port), parts.path or "/", headers=dict(headers))
    try:
        return answer.status, answer.read()
    finally:
        answer.close()


def _why(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "not answering (connection refused)"
    if isinstance(exc, ConnectionResetError | ClosedBeforeAnswer):
        return "connection reset"
    return str(exc) or type(exc).__name__


class SchedulerStatusReader:
    """Finds the serving gateway (`locate`) and reads its `/status` once per `read()`.

    With API keys configured the gateway answers 401 without one: `api_key` (the monitor passes
    `$AITHER_API_KEY`) goes out as `Authorization: Bearer KEY` and is never shown.
    """

    def __init__(
        self,
        locate: Locate,
        *,
        api_key: str | None = None,
        timeout_s: float = 0.5,
        fetch: Fetch = fetch_plain,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._locate = locate
        self._api_key = api_key or None
        self._timeout_s = timeout_s
        self._fetch = fetch
        self._clock = clock

    def read(self) -> SchedulerView:
        try:
            found = self._locate()
        except Exception as exc:  # a broken state folder must not take the monitor down
            return SchedulerView(url=None, error=f"cannot look for a gateway: {exc}")
        if found is None:
            return SchedulerView(url=None)
        url, profile = found
        return self.read_url(url, profile)

    def read_url(self, url: str, profile: str | None = None) -> SchedulerView:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        started = self._clock()
        try:
            status, body = self._fetch(url.rstrip("/") + STATUS_PATH, headers, self._timeout_s)
        except Exception as exc:
            return SchedulerView(url=url, profile=profile, error=_why(exc, self._timeout_s))
        latency = self._clock() - started
        if status == 401:
            error = (
                "API key refused ($AITHER_API_KEY)"
                if self._api_key
                else "needs an API key (set $AITHER_API_KEY)"
            )
            return SchedulerView(url=url, profile=profile, error=error, latency_s=latency)
        if status != 200:
            return SchedulerView(
                url=url, profile=profile, error=f"GET {STATUS_PATH} → {status}", latency_s=latency
            )
        try:
            view = parse_status(json.loads(body), url=url, latency_s=latency)
        except (ValueError, TypeError) as exc:  # StatusFormatError and JSON errors
            return SchedulerView(
                url=url, profile=profile, error=f"unreadable status: {exc}", latency_s=latency
            )
        return view
