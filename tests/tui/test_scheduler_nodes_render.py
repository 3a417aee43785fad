"""Rented nodes in the scheduler's panel (`status` and the monitor print the same renderable)
and in `status --watch`'s plain lines: every state a node can be in, at 80 and 200 columns.
The document is the shape `GET /status` answers (aitherctl.serve.scheduler.Backend.snapshot;
tests/serve/unit/test_scheduler_nodes.py checks the scheduler writes these fields)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from aitherctl.monitor.serve_status import parse_status
from aitherctl.tui.render import scheduler_lines, scheduler_renderable


def _node(name: str, state: str, price: float | None, spent: float | None, **extra: Any) -> Any:
    return {
        "backend": name,
        "kind": "node",
        "state": state,
        "in_flight": extra.get("in_flight", 0),
        "limit": 8,
        "queued": 0,
        "queued_by_priority": {"interactive": 0, "normal": 0, "batch": 0},
        "max_queue": 32,
        "claims_bytes": {},
        "mode": "on_demand",
        "price_per_hour_usd": price,
        "spent_today_usd": spent,
        "idle_left_s": extra.get("idle"),
    }


DOCUMENT = {
    "profile": "cloudy",
    "backends": [
        {
            "backend": "local",
            "kind": "service",
            "state": "ready",
            "in_flight": 1,
            "limit": 1,
            "queued": 0,
            "queued_by_priority": {},
            "max_queue": 8,
            "claims_bytes": {"ram": 512 * 1024**2},
            "on_demand": True,
        },
        _node("reasoning", "ready", 0.15222, 0.01234, idle=754.0),
        _node("orchestrator", "ready", 0.20, 0.4, in_flight=2),
        _node("creative", "loading", None, 0.0),
        _node("spare", "evicting", 0.15222, 0.0031),
        _node("old", "stopped", None, 0.0875),
    ],
    "pools": [],
    "events": [],
}

PANEL = """\
scheduler http://127.0.0.1:8150  profile cloudy  3 in flight, 0 queued
backend       state     busy  queued   int/nor/bat  holds
local         ready     1/1   0 of 8   0/0/0        ram 512 MiB  on demand
reasoning     ready     0/8   0 of 32  0/0/0        -            node
orchestrator  ready     2/8   0 of 32  0/0/0        -            node
creative      loading   0/8   0 of 32  0/0/0        -            node
spare         evicting  0/8   0 of 32  0/0/0        -            node
old           stopped   0/8   0 of 32  0/0/0        -            node
node reasoning: $0.152/h, $0.0123 today, idle 12m34s left
node orchestrator: $0.200/h, $0.4000 today
node creative: no instance, $0.0000 today
node spare: $0.152/h, $0.0031 today
node old: no instance, $0.0875 today"""


@pytest.mark.parametrize("width", [80, 200])
def test_each_node_state_shows_its_price_spend_and_idle_time_left(width: int) -> None:
    view = parse_status(DOCUMENT, url="http://127.0.0.1:8150")
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(scheduler_renderable(view, events=False))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert "\n".join(lines) == PANEL
    assert max(len(line) for line in lines) <= 80


def test_watch_lines_carry_each_node_s_money_and_time() -> None:
    view = parse_status(DOCUMENT, url="http://127.0.0.1:8150")
    assert scheduler_lines(view, "12:00:00")[1:3] == [
        "12:00:00 scheduler reasoning state=ready busy=0/8 queued=0 int/nor/bat=0/0/0 "
        "node: $0.152/h, $0.0123 today, idle 12m34s left",
        "12:00:00 scheduler orchestrator state=ready busy=2/8 queued=0 int/nor/bat=0/0/0 "
        "node: $0.200/h, $0.4000 today",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_monitor_s_scheduler_panel_lists_each_node(
    tmp_path: Path, anyio_backend: str
) -> None:
    from aitherctl.tui.app import MonitorApp
    from tests.tui.sources import FixedScheduler, fixed_collector
    from tests.tui.test_monitor_app import plain, settle

    del anyio_backend
    view = parse_status(DOCUMENT, url="http://127.0.0.1:8150")
    app = MonitorApp(fixed_collector(tmp_path, scheduler=FixedScheduler(view)), interval_s=10)
    async with app.run_test(size=(120, 48)) as pilot:
        await settle(app, pilot)
        lines = [line.rstrip() for line in plain(app.query_one("#scheduler")).splitlines()]
    assert lines[-5:] == PANEL.splitlines()[-5:]
