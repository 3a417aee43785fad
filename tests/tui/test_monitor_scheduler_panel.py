"""The monitor's scheduler panel (Pilot), fed the `GET /status` documents captured from a real
`aitherctl serve` (tests/fixtures/scheduler_status_*.json), frozen clock, TZ=UTC."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from aitherctl.monitor.model import SchedulerView
from aitherctl.tui.app import MonitorApp
from aitherctl.tui.render import NO_SCHEDULER
from tests.tui.sources import FixedScheduler, fixed_collector
from tests.tui.test_monitor_app import plain, settle

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@dataclass
class SchedulerSequence:
    """One reading per refresh, the last one repeated."""

    views: list[SchedulerView]
    reads: int = 0

    def read(self) -> SchedulerView:
        view = self.views[min(self.reads, len(self.views) - 1)]
        self.reads += 1
        return view


async def test_the_panel_shows_queues_pools_and_the_last_events(tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path, scheduler=FixedScheduler.captured()), interval_s=10)
    async with app.run_test(size=(130, 42)) as pilot:
        await settle(app, pilot)
        panel = app.query_one("#scheduler")
        assert panel.display
        lines = plain(panel).splitlines()
        assert lines[0].split() == [
            "scheduler",
            "http://127.0.0.1:8150",
            "profile",
            "schedcap",
            "1",
            "in",
            "flight,",
            "3",
            "queued",
            "ram",
            "512",
            "MiB",
            "/",
            "2.0",
            "GiB",
        ]
        header = ["backend", "state", "busy", "queued", "int/nor/bat", "holds"]
        assert lines[1].split()[:6] == header
        llm = lines[2].split()
        assert llm[:9] == ["llm", "ready", "1/1", "3", "of", "8", "1/0/2", "ram", "512"]
        assert "on demand" in lines[2]
        assert lines[3].split()[:6] == ["cloud", "ready", "0/32", "0", "of", "32"]
        assert "endpoint" in lines[3]
        # The last six of the twenty events, newest last, in a panel of their own below the
        # backends (beside them, each event read as that row's).
        assert len(lines) == 4
        events_panel = app.query_one("#scheduler-events")
        assert events_panel.display
        assert events_panel.border_title == "scheduler events"
        events = plain(events_panel).splitlines()
        assert len(events) == 6
        # The same columns as `status` prints them.
        assert events[0].rstrip() == "21:48:01  queued   llm  normal, 1 waiting"
        assert events[5].rstrip() == "21:48:02  queued   llm  interactive, 3 waiting"
        assert "fell_back" not in plain(events_panel)  # the seventh from the end


async def test_the_panel_follows_the_gateway_coming_and_going(tmp_path: Path) -> None:
    busy, idle = FixedScheduler.captured("busy").view, FixedScheduler.captured("idle").view
    sequence = SchedulerSequence(
        [
            busy,
            idle,
            SchedulerView(url=None),
            SchedulerView(
                url="http://127.0.0.1:8150", error="needs an API key (set $AITHER_API_KEY)"
            ),
        ]
    )
    app = MonitorApp(fixed_collector(tmp_path, scheduler=sequence), interval_s=3600)
    async with app.run_test(size=(130, 42)) as pilot:
        panel = app.query_one("#scheduler")
        await settle(app, pilot, refreshes=1)
        assert "1 in flight, 3 queued" in plain(panel)
        app.request_refresh()
        await settle(app, pilot, refreshes=2)
        assert "0 in flight, 0 queued" in plain(panel)
        assert plain(app.query_one("#scheduler-events")).count("served") == 4
        app.request_refresh()
        await settle(app, pilot, refreshes=3)
        assert plain(panel).strip() == NO_SCHEDULER
        assert panel.display
        assert not app.query_one("#scheduler-events").display
        app.request_refresh()
        await settle(app, pilot, refreshes=4)
        assert plain(panel).strip() == (
            "scheduler http://127.0.0.1:8150  needs an API key (set $AITHER_API_KEY)"
        )
    assert sequence.reads == 4  # one read per refresh: GET /status carries the events too


async def test_without_a_scheduler_source_the_panel_is_not_drawn(tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path), interval_s=10)
    async with app.run_test(size=(130, 42)) as pilot:
        await settle(app, pilot)
        assert not app.query_one("#scheduler").display


@pytest.mark.parametrize("columns", [80, 200])
def test_status_shows_the_events_under_the_backends_not_beside_them(columns: int) -> None:
    """`status` prints the panel too: each event on its own line under a heading, where they
    used to sit beside the backend table, each read as that row's."""
    from rich.console import Console

    from aitherctl.tui.render import scheduler_renderable

    console = Console(width=columns, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(scheduler_renderable(FixedScheduler.captured().view))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("backend")) - 1 :]
    # At 80 columns the headline's pool moves whole to a second line.
    assert lines[0] == (
        "ram 512 MiB / 2.0 GiB"
        if columns == 80
        else "scheduler http://127.0.0.1:8150  profile schedcap  1 in flight, "
        "3 queued  ram 512 MiB / 2.0 GiB"
    )
    assert lines[1].split() == ["backend", "state", "busy", "queued", "int/nor/bat", "holds"]
    assert lines[2].startswith("llm      ready  1/1   3 of 8   1/0/2        ram 512 MiB")
    assert lines[3].startswith("cloud    ready  0/32  0 of 32  0/0/0        -")
    assert lines[4] == "scheduler events"
    assert len(lines) == 11
    assert lines[5] == "21:48:01  queued   llm  normal, 1 waiting"
    assert lines[10] == "21:48:02  queued   llm  interactive, 3 waiting"
