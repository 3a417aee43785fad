"""`aitherctl monitor`: the live view of GPUs, services, host and events (Textual).

Every refresh gathers a snapshot in a thread worker (Docker, NVML, HTTP and /proc all block) and
posts it back; the screen only renders snapshots, so a slow server or engine never freezes it.
A refresh that is still running when the next tick comes is not doubled: the tick is skipped.
Actions (restart, stop, switch, unload) also run in workers, after a confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from rich.console import Group, RenderableType
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from aitherctl.monitor.model import LogKind, MonitorSnapshot, ServiceView
from aitherctl.tui.render import (
    NA,
    SERVICE_COLUMNS,
    SortKey,
    gpu_lines,
    header_text,
    host_text,
    no_gpu_text,
    scheduler_events,
    scheduler_renderable,
    service_cells,
    sort_services,
    sparkline,
    unmanaged_text,
)
from aitherctl.tui.screens import HELP, ConfirmScreen, PickScreen, TextScreen

if TYPE_CHECKING:
    import threading

    from aitherctl.switching.transaction import SignalCancel

LOG_LINES = 6
SPARK_WIDTH = 60


class SnapshotSource(Protocol):
    def collect(self) -> MonitorSnapshot: ...
    def note(self, kind: LogKind, message: str) -> None: ...


class MonitorActions(Protocol):
    """What the keys do; each call blocks and returns a line for the log (or raises)."""

    def restart(self, service: ServiceView) -> str: ...
    def stop(self, service: ServiceView) -> str: ...
    def logs(self, service: ServiceView, lines: int) -> str: ...
    def free_vram(self, service: ServiceView) -> str: ...
    def profiles(self) -> list[str]: ...
    def plan(self, profile: str) -> str: ...
    def switch(
        self, profile: str, note: Callable[[str], None], cancel: threading.Event | None = None
    ) -> str: ...


class SnapshotReady(Message):
    def __init__(self, snapshot: MonitorSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class MonitorApp(App[None]):
    """Built by `build_monitor_app` for the CLI and by the tests with doubles or real sources."""

    TITLE = "aitherctl monitor"
    CSS = """
    #header { height: 1; background: $primary-background; padding: 0 1; }
    #gpus { height: auto; padding: 0 1; }
    .gpu { height: auto; margin-bottom: 1; }
    #services { height: 1fr; min-height: 5; }
    #scheduler { height: auto; max-height: 11; padding: 0 1; border-top: solid $primary; }
    #scheduler-events {
        height: auto; max-height: 7; padding: 0 1; border-top: solid $primary;
        border-title-align: left;
    }
    #bottom { height: auto; max-height: 9; }
    #unmanaged { width: 1fr; padding: 0 1; }
    #host { width: 46; padding: 0 1; border-left: solid $primary; }
    #log { height: auto; max-height: 8; padding: 0 1; border-top: solid $primary; }
    """
    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("p", "switch_profile", "profile"),
        Binding("r", "restart", "restart"),
        Binding("s", "stop", "stop"),
        Binding("l", "logs", "logs"),
        Binding("u", "unload", "free VRAM"),
        Binding("o", "sort", "sort"),
    ]

    def __init__(
        self,
        source: SnapshotSource,
        *,
        interval_s: float = 1.0,
        actions: MonitorActions | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.interval_s = interval_s
        self.actions = actions
        self.snapshot: MonitorSnapshot | None = None
        self.sort_key = SortKey.NAME
        self.refreshes = 0
        self._collecting = False
        self._gpu_count = -1
        self._drawn: dict[int, object] = {}
        self._rows: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static("aitherctl: reading…", id="header")
        yield Vertical(id="gpus")
        table: DataTable[object] = DataTable(id="services", cursor_type="row", zebra_stripes=True)
        self._column_keys = table.add_columns(*SERVICE_COLUMNS)
        yield table
        # Shown once a snapshot carries a scheduler reading (`aitherctl serve`'s /status).
        yield Static("", id="scheduler")
        # The scheduler's decisions, apart from the backend table (beside it, each event read
        # as that row's).
        yield Static("", id="scheduler-events")
        with Horizontal(id="bottom"):
            yield Static("", id="unmanaged")
            yield Static("", id="host")
        yield Static("", id="log")
        yield Footer()

    def on_mount(self) -> None:
        # Held once: while a modal screen is up, `query_one` would search that screen instead.
        self._header = self.query_one("#header", Static)
        self._gpu_box = self.query_one("#gpus", Vertical)
        self._table: DataTable[object] = self.query_one("#services", DataTable)
        self._scheduler = self.query_one("#scheduler", Static)
        self._scheduler.display = False
        self._scheduler_events = self.query_one("#scheduler-events", Static)
        self._scheduler_events.border_title = "scheduler events"
        self._scheduler_events.display = False
        self._unmanaged = self.query_one("#unmanaged", Static)
        self._host = self.query_one("#host", Static)
        self._log_pane = self.query_one("#log", Static)
        self.request_refresh()
        self.set_interval(self.interval_s, self.request_refresh)

    # ---- refresh ------------------------------------------------------------------------------

    def request_refresh(self) -> None:
        if self._collecting:
            return  # the previous refresh is still gathering: never pile them up
        self._collecting = True
        self._collect()

    @work(thread=True, exit_on_error=False, group="collect")
    def _collect(self) -> None:
        try:
            snapshot = self.source.collect()
        except BaseException:
            self._collecting = False
            raise
        self.post_message(SnapshotReady(snapshot))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        # Cleared once shown, not when gathered: a request between the two would start a
        # second refresh while the first is still on its way to the screen.
        self._collecting = False
        self.show(message.snapshot)

    def show(self, snapshot: MonitorSnapshot) -> None:
        self.snapshot = snapshot
        self.refreshes += 1
        self._update(self._header, header_text(snapshot))
        self._show_gpus(snapshot)
        self._show_services(snapshot)
        self._show_scheduler(snapshot)
        self._update(self._unmanaged, unmanaged_text(snapshot))
        self._update(self._host, host_text(snapshot.host))
        log = Text()
        for entry in snapshot.log[-LOG_LINES:]:
            if log:
                log.append("\n")
            log.append(entry.at.astimezone().strftime("%H:%M:%S "), style="dim")
            log.append(f"{entry.kind:<8} ", style="bold")
            log.append(entry.message)
        self._update(self._log_pane, log or Text("No events yet.", style="dim"))

    def _update(self, widget: Static, content: RenderableType, key: object = None) -> None:
        """Redraws only what changed: most readings are the same from one second to the next."""
        signature = key if key is not None else content
        if self._drawn.get(id(widget)) != signature:
            self._drawn[id(widget)] = signature
            widget.update(content)

    def _show_scheduler(self, snapshot: MonitorSnapshot) -> None:
        view = snapshot.scheduler
        if view is None:  # no scheduler source (tests, sources that leave it out)
            self._scheduler.display = False
            self._scheduler_events.display = False
            return
        self._scheduler.display = True
        # Keyed without the latency, which changes every time while nothing shown does.
        self._update(
            self._scheduler,
            scheduler_renderable(view, events=False),
            key=replace(view, latency_s=None),
        )
        self._scheduler_events.display = view.serving and not view.error
        if self._scheduler_events.display:
            self._update(self._scheduler_events, scheduler_events(view), key=view.events)

    def _show_gpus(self, snapshot: MonitorSnapshot) -> None:
        box = self._gpu_box
        count = len(snapshot.gpus) or 1
        if count != self._gpu_count:
            box.remove_children()
            box.mount_all(Static("", classes="gpu") for _ in range(count))
            self._gpu_count = count
        panels = list(box.query(".gpu").results(Static))
        if not snapshot.gpus:
            self._update(panels[0], no_gpu_text(snapshot))
            return
        for panel, gpu in zip(panels, snapshot.gpus, strict=False):
            history = Text()
            history.append("VRAM ", style="dim")
            history.append(
                sparkline(gpu.memory_used_history_bytes, SPARK_WIDTH, gpu.memory_total_bytes),
                style="cyan",
            )
            history.append("  util ", style="dim")
            utilization = sparkline(gpu.utilization_history_pct, 30, 100.0)
            # Never read (not supported on this board): N/A, as in the line above and status.
            history.append(utilization or NA, style="green" if utilization else "")
            self._update(panel, Group(gpu_lines(gpu), history), key=gpu)

    def _show_services(self, snapshot: MonitorSnapshot) -> None:
        table = self._table
        ordered = sort_services(snapshot.services, self.sort_key)
        rows = tuple((service.key, service_cells(service)) for service in ordered)
        plain_rows = tuple((name, tuple(str(cell) for cell in cells)) for name, cells in rows)
        if plain_rows != self._rows:
            same_keys = self._rows is not None and [n for n, _ in plain_rows] == [
                n for n, _ in self._rows
            ]
            if same_keys and self._rows is not None:
                # Same services in the same order: only the cells that changed are redrawn.
                for (name, cells), (_, before) in zip(rows, self._rows, strict=True):
                    for column, (cell, old) in enumerate(zip(cells, before, strict=True)):
                        if str(cell) != old:
                            table.update_cell(name, self._column_keys[column], cell)
            else:
                selected = self.selected_service()
                table.clear()
                for name, cells in rows:
                    table.add_row(*cells, key=name)
                names = [name for name, _ in rows]
                if selected is not None and selected.key in names:
                    table.move_cursor(row=names.index(selected.key), animate=False)
            self._rows = plain_rows
        if snapshot.docker_error:
            title = f"Docker unavailable: {snapshot.docker_error}"
        else:
            title = f"services (sorted by {self.sort_key})"
        if table.border_title != title:
            table.border_title = title

    def selected_service(self) -> ServiceView | None:
        if self.snapshot is None or not self.snapshot.services:
            return None
        table = self._table
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # no row under the cursor
            return None
        return self.snapshot.service(str(key.value))

    # ---- keys ---------------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(TextScreen("help", HELP))

    def action_sort(self) -> None:
        keys = list(SortKey)
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self._rows = None
        if self.snapshot is not None:
            self._show_services(self.snapshot)

    def _needs(self, what: str) -> tuple[MonitorActions, ServiceView] | None:
        service = self.selected_service()
        if self.actions is None:
            self.notify("actions need the Docker engine", severity="warning")
            return None
        if service is None:
            self.notify(f"select a service to {what}", severity="warning")
            return None
        return self.actions, service

    def action_restart(self) -> None:
        self._confirm_then("restart", lambda a, s: a.restart(s))

    def action_stop(self) -> None:
        self._confirm_then("stop", lambda a, s: a.stop(s))

    def action_unload(self) -> None:
        self._confirm_then("free the VRAM of", lambda a, s: a.free_vram(s))

    def _confirm_then(self, verb: str, act: Callable[[MonitorActions, ServiceView], str]) -> None:
        needed = self._needs(verb)
        if needed is None:
            return
        actions, service = needed

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(f"{verb} {service.name}", lambda: act(actions, service))

        self.push_screen(ConfirmScreen(f"{verb.capitalize()} {service.name}?"), answered)

    @work(thread=True, exit_on_error=False, group="action")
    def _act(self, what: str, act: Callable[[], str]) -> None:
        self._run_action(what, act)

    def _run_action(self, what: str, act: Callable[[], str]) -> None:
        """In a worker: run `act`, log and show its outcome, refresh."""
        try:
            outcome = act()
        except Exception as exc:  # shown, never fatal: the monitor keeps running
            message = f"{what} failed: {getattr(exc, 'message', None) or exc}"
            self.source.note(LogKind.ACTION, message)
            self.call_from_thread(self.notify, message, severity="error")
        else:
            self.source.note(LogKind.ACTION, outcome)
            self.call_from_thread(self.notify, outcome)
        self.call_from_thread(self.request_refresh)

    def action_logs(self) -> None:
        needed = self._needs("read the logs of")
        if needed is not None:
            self._load_logs(*needed)

    @work(thread=True, exit_on_error=False, group="logs", exclusive=True)
    def _load_logs(self, actions: MonitorActions, service: ServiceView) -> None:
        try:
            text = actions.logs(service, 300)
        except Exception as exc:
            text = f"cannot read the logs: {getattr(exc, 'message', None) or exc}"
        self.call_from_thread(self.push_screen, TextScreen(f"{service.name}: logs", text))

    def action_switch_profile(self) -> None:
        if self.actions is None:
            self.notify("switching needs the Docker engine", severity="warning")
            return
        self._pick_profile(self.actions)

    @work(thread=True, exit_on_error=False, group="switch", exclusive=True)
    def _pick_profile(self, actions: MonitorActions) -> None:
        try:
            names = actions.profiles()
        except Exception as exc:
            self.call_from_thread(self.notify, f"cannot list profiles: {exc}", severity="error")
            return
        current = self.snapshot.active_profile if self.snapshot else None

        def picked(name: str | None) -> None:
            if name:
                self._show_plan(actions, name)

        picker = PickScreen("switch to profile", names, current)
        self.call_from_thread(self.push_screen, picker, picked)

    @work(thread=True, exit_on_error=False, group="switch", exclusive=True)
    def _show_plan(self, actions: MonitorActions, profile: str) -> None:
        try:
            plan = actions.plan(profile)
        except Exception as exc:
            message = f"cannot switch to {profile}: {getattr(exc, 'message', None) or exc}"
            self.call_from_thread(self.notify, message, severity="error", timeout=10)
            return

        def answered(yes: bool | None) -> None:
            # On the main thread: from here until the switch ends, SIGINT, SIGTERM and SIGHUP
            # (the terminal closed) cancel it, and the worker rolls back as the CLI does.
            if yes:
                from aitherctl.switching.transaction import SignalCancel

                cancel = SignalCancel()
                cancel.install()
                self._switch(actions, profile, cancel)

        self.call_from_thread(
            self.push_screen, ConfirmScreen(f"Switch to {profile}?", plan), answered
        )

    @work(thread=True, exit_on_error=False, group="action")
    def _switch(self, actions: MonitorActions, profile: str, cancel: SignalCancel) -> None:
        try:
            self._run_action(
                f"switch to {profile}",
                lambda: actions.switch(
                    profile, lambda line: self.source.note(LogKind.SWITCH, line), cancel
                ),
            )
        finally:
            self.call_from_thread(cancel.restore)
            if cancel.signum is not None:  # rolled back; the signal still ends the monitor
                self.call_from_thread(self.exit, None, 128 + cancel.signum)


def build_monitor_app(
    *,
    interval_s: float = 1.0,
    use_gpu: bool = True,
    use_docker: bool = True,
    scrape_timeout_s: float = 0.5,
) -> MonitorApp:
    """The app on this machine's real sources (the CLI's factory; tests build theirs)."""
    from aitherctl.monitor.actions import StackActions
    from aitherctl.monitor.collect import build_collector, ledger_log_sources

    collector, stack = build_collector(
        use_docker=use_docker,
        use_gpu=use_gpu,
        scrape_timeout_s=min(scrape_timeout_s, interval_s * 0.75),
        log_sources=ledger_log_sources(),
    )
    actions = (
        StackActions(stack, collector.gpu_source, remote=collector.remote_source)
        if stack is not None
        else None
    )
    return MonitorApp(collector, interval_s=interval_s, actions=actions)
