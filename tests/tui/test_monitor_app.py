"""Pilot tests of the monitor on fixed sources (NVML double, laid-out /proc, frozen clock)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aitherctl.monitor.model import LogKind, MonitorSnapshot, ServiceView
from aitherctl.tui.app import MonitorApp
from aitherctl.tui.screens import ConfirmScreen, PickScreen, TextScreen
from tests.tui.sources import fixed_collector

# anyio's pytest plugin (anyio comes with httpx) runs the async tests; no extra dependency.
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def settle(app: MonitorApp, pilot: object, refreshes: int = 1) -> None:
    for _ in range(200):
        if app.refreshes >= refreshes:
            break
        await pilot.pause(0.02)  # type: ignore[attr-defined]
    assert app.refreshes >= refreshes


def plain(widget: object) -> str:
    """What a Static shows, as plain text."""
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(widget.content)  # type: ignore[attr-defined]
    return console.export_text()


def cells(app: MonitorApp) -> list[list[str]]:
    table = app.query_one("#services")
    return [[str(cell) for cell in table.get_row_at(row)] for row in range(table.row_count)]


class RecordingActions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def restart(self, service: ServiceView) -> str:
        self.calls.append(("restart", service.name))
        return f"restarted {service.name}"

    def stop(self, service: ServiceView) -> str:
        self.calls.append(("stop", service.name))
        return f"stopped {service.name}"

    def logs(self, service: ServiceView, lines: int) -> str:
        return f"log line of {service.name}\nlast of {lines} lines"

    def free_vram(self, service: ServiceView) -> str:
        self.calls.append(("free", service.name))
        return "freed"

    def profiles(self) -> list[str]:
        return ["coding", "images"]

    def plan(self, profile: str) -> str:
        return f"Plan for {profile}:\n  stop      chat: not in {profile}"

    def switch(self, profile: str, note: Callable[[str], None], cancel: object = None) -> str:
        import signal

        # The monitor installed its handler before the switch began: a signal cancels it.
        assert signal.getsignal(signal.SIGHUP).__self__ is cancel  # type: ignore[union-attr]
        note("chat: stopping")
        self.calls.append(("switch", profile))
        return f"switched to {profile}"


async def test_shows_services_gpu_host_and_unmanaged(tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path), interval_s=0.05)
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot, refreshes=2)
        rows = cells(app)
        assert [row[0] for row in rows] == ["chat", "embed", "image", "ollama"]
        chat = rows[0]
        assert chat[3] == "running (healthy)"
        assert chat[5] == "13.2 GiB"  # the engine core: a grandchild of the container's init
        assert chat[6] == "14.0 GiB"
        assert chat[7:9] == ["N/A", "N/A"]  # CPU and RAM: the fixture's containers have no cgroup
        assert chat[9] == "2/1"
        assert chat[10] == "42.0"  # 42 tokens per one-second refresh
        assert "timeout" in rows[1][3]
        header = plain(app.query_one("#header"))
        assert "coding" in header
        assert "550.54.15" in header
        assert "2025-06-01" in header
        gpu = plain(app.query_one(".gpu"))
        assert "RTX 4090" in gpu
        assert "Xorg (pid 900)" in plain(app.query_one("#unmanaged"))
        assert "64.0 GiB" in plain(app.query_one("#host"))


async def test_sorting_cycles_columns(tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path), interval_s=10)
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("o")  # by VRAM, largest first
        assert [row[0] for row in cells(app)] == ["chat", "ollama", "embed", "image"]
        await pilot.press("o")  # by engine
        assert [row[0] for row in cells(app)] == ["image", "embed", "ollama", "chat"]


async def test_help_and_quit(tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path), interval_s=10)
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, TextScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, TextScreen)
        await pilot.press("q")
    assert app.return_code == 0


async def test_restart_asks_first_and_no_does_nothing(tmp_path: Path) -> None:
    actions = RecordingActions()
    app = MonitorApp(fixed_collector(tmp_path), interval_s=10, actions=actions)
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("down")  # embed
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert actions.calls == []
        await pilot.press("s")
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert actions.calls == [("stop", "embed")]


async def test_logs_of_the_selected_service(tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path), interval_s=10, actions=RecordingActions())
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("l")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, TextScreen)
        assert "log line of chat" in plain(app.screen.query_one("Static"))


async def test_profile_switch_shows_plan_and_confirms(tmp_path: Path) -> None:
    actions = RecordingActions()
    collector = fixed_collector(tmp_path)
    app = MonitorApp(collector, interval_s=10, actions=actions)
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, PickScreen)
        await pilot.press("down", "enter")  # "images"
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "not in images" in plain(app.screen.query("Static").first())
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert actions.calls == [("switch", "images")]
    snapshot = collector.collect()
    kinds = [(entry.kind, entry.message) for entry in snapshot.log]
    assert (LogKind.SWITCH, "chat: stopping") in kinds
    assert (LogKind.ACTION, "switched to images") in kinds


async def test_without_gpu_and_without_docker(tmp_path: Path) -> None:
    app = MonitorApp(fixed_collector(tmp_path, with_gpu=False, with_docker=False), interval_s=10)
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        assert "GPU: no NVIDIA driver" in plain(app.query_one(".gpu"))
        assert "Docker unavailable" in plain(app.query_one("#header"))
        assert app.query_one("#services").row_count == 0
        assert "RAM" in plain(app.query_one("#host"))
        await pilot.press("r")  # no actions without Docker: a notice, no crash
        await pilot.pause()


class SlowSource:
    """A source whose collect blocks until released: the screen must stay responsive."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.calls = 0

    def collect(self) -> MonitorSnapshot:
        self.calls += 1
        self.release.wait(5)
        return self.inner.collect()  # type: ignore[attr-defined, no-any-return]

    def note(self, kind: LogKind, message: str) -> None:
        self.inner.note(kind, message)  # type: ignore[attr-defined]


async def test_a_slow_refresh_neither_freezes_the_screen_nor_piles_up(tmp_path: Path) -> None:
    source = SlowSource(fixed_collector(tmp_path))
    app = MonitorApp(source, interval_s=0.05)
    async with app.run_test(size=(130, 40)) as pilot:
        started = time.monotonic()
        await pilot.press("question_mark")  # the UI answers while a refresh hangs
        assert isinstance(app.screen, TextScreen)
        await pilot.press("escape")
        await pilot.pause(0.3)  # several ticks pass
        assert time.monotonic() - started < 2
        assert source.calls == 1
        source.release.set()
        await settle(app, pilot)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
