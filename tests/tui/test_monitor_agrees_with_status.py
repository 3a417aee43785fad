"""The monitor and `aitherctl status` show the same readings the same way: from one snapshot
(every state of tests/cli/status_states.py: no GPU, NVML without temperature, power or
utilisation, services without a budget, CPU services with `ram:` budgets, stopped and starting
services, `serve` running, unreachable or absent, another host unreachable), the monitor's
screen (Pilot, 220 columns) and `status` at 200 columns agree part by part and, in the services
table, cell by cell: `N/A` where one has no reading, the same text where it has one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from aitherctl.gpu.nvml import NvmlReader
from aitherctl.monitor.collect import MonitorCollector
from aitherctl.monitor.model import LogKind, MonitorSnapshot
from aitherctl.tui.app import MonitorApp
from aitherctl.tui.render import SERVICE_COLUMNS, sparkline, status_renderable
from tests.cli.status_states import STATES
from tests.doubles.nvml_double import GIB, FakeGpu, NvmlDouble
from tests.tui.sources import fixed_collector

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class OneSnapshot:
    def __init__(self, snapshot: MonitorSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> MonitorSnapshot:
        return self.snapshot

    def note(self, kind: LogKind, message: str) -> None:
        pass


def plain(renderable: object, width: int = 200) -> list[str]:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    return [line.rstrip() for line in console.export_text().splitlines()]


def blocks(lines: list[str]) -> Iterator[list[str]]:
    """`status`'s parts, separated by blank lines."""
    block: list[str] = []
    for line in [*lines, ""]:
        if line:
            block.append(line)
        elif block:
            yield block
            block = []


def status_cells(block: list[str]) -> list[list[str]]:
    """The services table as printed, cut at the header's column starts (left-aligned)."""
    header = block[0]
    starts: list[int] = []
    for name in SERVICE_COLUMNS:  # each name after the one before it (`up` is in `queue`...)
        starts.append(header.index(f"{name}", starts[-1] + 1 if starts else 0))
    assert header.split() == list(SERVICE_COLUMNS), header
    ends = [*starts[1:], None]
    return [[row[a:b].strip() for a, b in zip(starts, ends, strict=True)] for row in block[1:]]


async def monitor_view(snapshot: MonitorSnapshot) -> dict[str, Any]:
    app = MonitorApp(OneSnapshot(snapshot), interval_s=30)
    async with app.run_test(size=(220, 60)) as pilot:
        for _ in range(200):
            if app.refreshes:
                break
            await pilot.pause(0.02)
        table = app.query_one("#services")
        rows = [
            [plain(cell)[0] if plain(cell) else "" for cell in table.get_row_at(index)]
            for index in range(table.row_count)
        ]
        scheduler: list[str] = []
        if app.query_one("#scheduler").display:
            scheduler = plain(app.query_one("#scheduler").content)
        if app.query_one("#scheduler-events").display:
            scheduler += ["scheduler events", *plain(app.query_one("#scheduler-events").content)]
        return {
            "header": plain(app.query_one("#header").content),
            "gpus": [plain(panel.content)[:3] for panel in app.query(".gpu")],
            "services": rows,
            "scheduler": scheduler,
            "unmanaged": plain(app.query_one("#unmanaged").content),
            "host": plain(app.query_one("#host").content),
        }


@pytest.mark.parametrize("state", list(STATES))
async def test_the_monitor_shows_what_status_shows(state: str) -> None:
    snapshot = STATES[state]
    status = list(blocks(plain(status_renderable(snapshot))))
    monitor = await monitor_view(snapshot)

    assert status[0] == monitor["header"]
    gpu_block = status[1]
    if snapshot.gpus:
        assert gpu_block[: 3 * len(snapshot.gpus)] == [
            line for panel in monitor["gpus"] for line in panel
        ]
    else:
        assert [gpu_block[0]] == monitor["gpus"][0]
    table = next((block for block in status if block[0].startswith("service ")), None)
    if snapshot.services:
        assert table is not None
        assert status_cells(table) == monitor["services"]
    else:
        assert monitor["services"] == []
    assert snapshot.scheduler is not None
    scheduler = next(
        block for block in status if block[0].startswith(("scheduler ", "no scheduler"))
    )
    assert scheduler == monitor["scheduler"]
    assert status[-2] == monitor["unmanaged"]
    assert status[-1] == monitor["host"]


async def test_a_gpu_without_utilisation_temperature_or_power_is_na_in_both(
    tmp_path: Path,
) -> None:
    """A board whose NVML answers NOT_SUPPORTED for utilisation, temperature and power: status
    and the monitor's GPU line say N/A, and the monitor's utilisation history says N/A too
    (it drew 0%, `▁`, for readings NVML never gave)."""
    base = fixed_collector(tmp_path)
    double = NvmlDouble(
        [FakeGpu(utilization=None, temperature=None, power_mw=None, used_bytes=8 * GIB)],
        driver_version="550.54.15",
    )
    collector = MonitorCollector(
        stack=base._stack,
        gpus=NvmlReader(double),
        scraper=base._scraper,
        procs=base._procs,
        host=base._host,
        wall_clock=base._now,
    )
    status = plain(status_renderable(collector.collect()))
    assert status[2] == ("GPU 0 NVIDIA RTX 4090  8.0 GiB / 24.0 GiB  util N/A  temp N/A  power N/A")
    app = MonitorApp(collector, interval_s=0.05)
    async with app.run_test(size=(220, 60)) as pilot:
        for _ in range(200):
            if app.refreshes >= 3:
                break
            await pilot.pause(0.02)
        panel = plain(app.query_one(".gpu").content)
    assert panel[0] == status[2]
    assert panel[3].split()[0] == "VRAM"
    assert panel[3].endswith("  util N/A")


def test_an_unknown_utilisation_is_a_gap_in_the_sparkline() -> None:
    assert sparkline([50.0, None, 100.0], 3, 100.0) == "▅ █"
    assert sparkline([None, None], 3, 100.0) == ""
