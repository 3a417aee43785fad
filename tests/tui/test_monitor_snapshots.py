"""SVG snapshots of the monitor (pytest-textual-snapshot), frozen clock and fixed sources.

Update after an intended change of the layout: `pytest tests/tui --snapshot-update`, then look
at the SVG files under tests/tui/__snapshots__/ before committing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aitherctl.monitor.model import SchedulerView
from aitherctl.tui.app import MonitorApp
from tests.tui.sources import FixedScheduler, fixed_collector

SIZE = (130, 42)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def after_refreshes(count: int) -> Callable[[Any], Any]:
    """Exactly `count` refreshes, driven here (the timer is set far off), then settle."""

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        for done in range(1, count + 1):
            if app.refreshes < done:
                app.request_refresh()
            for _ in range(300):
                if app.refreshes >= done:
                    break
                await pilot.pause(0.02)
        await pilot.pause()

    return run_before


def test_full_view(snap_compare: Any, tmp_path: Path) -> None:
    # Two refreshes: tokens/s needs two readings of the counter.
    app = MonitorApp(fixed_collector(tmp_path), interval_s=3600)
    assert snap_compare(app, terminal_size=SIZE, run_before=after_refreshes(2))


def test_no_gpu_no_docker(snap_compare: Any, tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path, with_gpu=False, with_docker=False), interval_s=3600)
    assert snap_compare(app, terminal_size=SIZE, run_before=after_refreshes(1))


def test_help_screen(snap_compare: Any, tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path), interval_s=3600)
    assert snap_compare(
        app, terminal_size=SIZE, press=["question_mark"], run_before=after_refreshes(1)
    )


def test_scheduler_panel(snap_compare: Any, tmp_path: Path) -> None:
    # `aitherctl serve`'s /status captured while one request ran and three waited.
    app = MonitorApp(
        fixed_collector(tmp_path, scheduler=FixedScheduler.captured("busy")), interval_s=3600
    )
    assert snap_compare(app, terminal_size=SIZE, run_before=after_refreshes(2))


def test_no_scheduler_serving(snap_compare: Any, tmp_path: Path) -> None:
    app = MonitorApp(
        fixed_collector(tmp_path, scheduler=FixedScheduler(SchedulerView(url=None))),
        interval_s=3600,
    )
    assert snap_compare(app, terminal_size=SIZE, run_before=after_refreshes(1))
