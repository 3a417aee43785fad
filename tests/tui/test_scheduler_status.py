"""The scheduler's `GET /status` as the monitor reads it: parsing the documents captured from a
real `aitherctl serve` (tests/fixtures/scheduler_status_*.json), and every way a read can fail
turned into the view's `error` (real sockets: a closed port, one that never answers)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import pytest

from aitherctl.monitor.model import SchedulerView, snapshot_to_dict
from aitherctl.monitor.serve_status import (
    SchedulerStatusReader,
    StatusFormatError,
    parse_status,
)
from tests.conftest import free_port
from tests.tui.sources import fixed_collector, scheduler_fixture

URL = "http://127.0.0.1:8150"


def test_busy_capture_parses_queues_by_priority_pools_and_events() -> None:
    view = parse_status(scheduler_fixture("busy"), url=URL)
    assert view.serving
    assert view.error is None
    assert view.profile == "schedcap"
    llm, cloud = view.backends
    assert (llm.name, llm.kind, llm.state, llm.in_flight, llm.limit) == (
        "llm",
        "service",
        "ready",
        1,
        1,
    )
    assert (llm.queued, llm.queued_interactive, llm.queued_normal, llm.queued_batch) == (3, 1, 0, 2)
    assert (llm.max_queue, llm.on_demand, llm.pinned, llm.displaced) == (8, True, False, False)
    assert llm.claims_bytes == (("ram", 512 * 1024**2),)
    assert (cloud.kind, cloud.limit, cloud.queued, cloud.claims_bytes) == ("endpoint", 32, 0, ())
    (ram,) = view.pools
    assert (ram.name, ram.capacity_bytes, ram.used_bytes) == ("ram", 2 * 1024**3, 512 * 1024**2)
    assert [event.event for event in view.events] == [
        "fell_back",
        "queued",
        "loading",
        "queued",
        "queued",
        "loaded",
        "queued",
    ]
    first = view.events[0]
    assert first.at == datetime.fromtimestamp(1795470481.314, UTC)
    assert (first.backend, first.request) == ("cloud", "758f23788e19")
    assert view.events[2].request is None


def test_idle_capture_has_empty_queues_and_served_events() -> None:
    view = parse_status(scheduler_fixture("idle"), url=URL)
    assert all(b.in_flight == 0 and b.queued == 0 for b in view.backends)
    assert [e.event for e in view.events][-4:] == ["served"] * 4
    assert list(view.events) == sorted(view.events, key=lambda e: e.at)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "no `backends` list"),
        ({"profile": "x"}, "no `backends` list"),
        ({"backends": [{"state": "ready"}]}, "a backend without a name"),
        ({"backends": [{"backend": "a", "in_flight": "two"}]}, "a: in_flight is not a number"),
        ({"backends": [], "events": [{"event": "queued"}]}, "an event without a time"),
        ({"backends": [], "pools": {"ram": 1}}, "must be lists"),
    ],
)
def test_documents_that_are_not_a_status_are_refused(document: object, message: str) -> None:
    with pytest.raises(StatusFormatError, match=message):
        parse_status(document, url=URL)


def reader_answering(status: int, body: bytes, **options: object) -> SchedulerStatusReader:
    """A reader whose fetch answers `status, body` and records the headers it was sent."""
    sent: list[Mapping[str, str]] = []

    def fetch(url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
        assert url == f"{URL}/status"
        sent.append(dict(headers))
        return status, body

    reader = SchedulerStatusReader(lambda: (URL, "schedcap"), fetch=fetch, **options)  # type: ignore[arg-type]
    reader.sent = sent  # type: ignore[attr-defined]
    return reader


def test_a_key_goes_out_as_a_bearer_token_and_401_says_what_to_do() -> None:
    body = json.dumps(scheduler_fixture("busy")).encode()
    with_key = reader_answering(200, body, api_key="sk-local")
    assert with_key.read().backends[0].queued == 3
    assert with_key.sent[0]["Authorization"] == "Bearer sk-local"  # type: ignore[attr-defined]

    without = reader_answering(401, b'{"error": {}}')
    view = without.read()
    assert (view.url, view.profile, view.error) == (
        URL,
        "schedcap",
        "needs an API key (set $AITHER_API_KEY)",
    )
    assert "Authorization" not in without.sent[0]  # type: ignore[attr-defined]
    refused = reader_answering(401, b"", api_key="sk-wrong").read()
    assert refused.error == "API key refused ($AITHER_API_KEY)"
    assert "sk-wrong" not in repr(refused)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, b"", "GET /status → 503"),
        (200, b"<html>", "unreadable status: Expecting value"),
        (200, b'{"backends": 3}', "unreadable status: no `backends` list"),
    ],
)
def test_bad_answers_become_the_error_field(status: int, body: bytes, error: str) -> None:
    view = reader_answering(status, body).read()
    assert view.serving
    assert view.error is not None
    assert view.error.startswith(error)


def test_none_serving_and_a_broken_lookup_never_raise() -> None:
    assert SchedulerStatusReader(lambda: None).read() == SchedulerView(url=None)

    def broken() -> tuple[str, str] | None:
        raise PermissionError("state folder unreadable")

    view = SchedulerStatusReader(broken).read()
    assert not view.serving
    assert view.error == "cannot look for a gateway: state folder unreadable"


def test_a_closed_port_reads_as_not_answering() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    view = SchedulerStatusReader(lambda: (url, "p"), timeout_s=0.5).read()
    assert (view.url, view.error) == (url, "not answering (connection refused)")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A real socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_a_gateway_that_never_answers_costs_one_timeout(silent_port: int) -> None:
    import time

    url = f"http://127.0.0.1:{silent_port}"
    started = time.monotonic()
    view = SchedulerStatusReader(lambda: (url, "p"), timeout_s=0.2).read()
    assert time.monotonic() - started < 1.0
    assert view.error == "no answer within 0.2 s"


def test_the_collector_carries_the_reading_into_the_snapshot_and_json(tmp_path: object) -> None:
    from pathlib import Path

    from tests.tui.sources import FixedScheduler

    source = FixedScheduler.captured()
    snapshot = fixed_collector(Path(str(tmp_path)), scheduler=source).collect()
    assert snapshot.scheduler == source.view
    document = json.loads(json.dumps(snapshot_to_dict(snapshot)))
    llm = document["scheduler"]["backends"][0]
    assert (llm["name"], llm["queued_interactive"], llm["queued_batch"]) == ("llm", 1, 2)
    assert document["scheduler"]["events"][0]["at"] == "2026-11-23T21:48:01.314000+00:00"
    assert fixed_collector(Path(str(tmp_path)) / "b").collect().scheduler is None
