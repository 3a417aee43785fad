"""`ps` uptime from Docker's `State.StartedAt` (RFC 3339 as Go writes it: nanoseconds with
trailing zeros dropped, so 1 to 9 fraction digits, or none)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aitherctl.docker.stack import ManagedContainer
from aitherctl.monitor.services import uptime_s

NOW = datetime(2026, 11, 23, 20, 12, 40, tzinfo=UTC)


def started(at: str | None) -> ManagedContainer:
    return ManagedContainer.from_labels(
        id="c0ffee", name="aither-x-a", state="running", image="img", labels={}, started_at=at
    )


@pytest.mark.parametrize(
    ("at", "seconds"),
    [
        ("2026-11-23T20:12:30.238530415Z", 9.761469),
        ("2026-11-23T20:12:30.23853041Z", 9.761469),
        ("2026-11-23T20:12:30.2385304Z", 9.761469),
        ("2026-11-23T20:12:30.5Z", 9.5),
        ("2026-11-23T20:12:30Z", 10.0),
        ("2026-11-23T21:12:30.25+01:00", 9.75),
    ],
)
def test_uptime_from_every_form_docker_writes(at: str, seconds: float) -> None:
    assert uptime_s(started(at), NOW) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("at", [None, "", "0001-01-01T00:00:00Z", "not a time"])
def test_no_start_time_is_unknown_uptime(at: str | None) -> None:
    assert uptime_s(started(at), NOW) is None
