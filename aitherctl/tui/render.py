"""Rich renderings of a `MonitorSnapshot`, shared by the Textual monitor and `aitherctl status`.

Only Rich here (no Textual), so `status` can use it without loading Textual.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from aitherctl.monitor.model import (
    GpuView,
    HostView,
    MonitorSnapshot,
    SchedulerBackendView,
    SchedulerView,
    ScrapeStatus,
    ServiceView,
)
from aitherctl.tui.columns import ColumnRules, fit_columns, least_width, left_out
from aitherctl.units import format_bytes, format_duration

NA = "N/A"
BUDGET_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")
SPARK = "▁▂▃▄▅▆▇█"


class SortKey(StrEnum):
    NAME = "name"
    VRAM = "vram"
    ENGINE = "engine"
    QUEUE = "queue"
    RATE = "tok/s"


SERVICE_COLUMNS = (
    "service",
    "engine",
    "model",
    "state",
    "port",
    "VRAM",
    "budget",
    "CPU",
    "RAM",
    "queue",
    "tok/s",
    "up",
)


def fmt_bytes(value: int | None) -> str:
    return NA if value is None else format_bytes(value)


def fmt_pct(value: float | None, digits: int = 0) -> str:
    return NA if value is None else f"{value:.{digits}f}%"


def fmt_duration(seconds: float | None) -> str:
    return format_duration(seconds, NA)


def fmt_queue(service: ServiceView) -> str:
    if service.requests_running is None and service.requests_waiting is None:
        return NA
    running = "?" if service.requests_running is None else str(service.requests_running)
    waiting = "?" if service.requests_waiting is None else str(service.requests_waiting)
    return f"{running}/{waiting}"


def fmt_rate(value: float | None) -> str:
    return NA if value is None else f"{value:.1f}"


def sparkline(values: Sequence[float | None], width: int, top: float | None = None) -> str:
    """The last `width` values as block characters, scaled to `top` (default: their maximum);
    an unknown value (None) is a blank, not the lowest block."""
    tail = list(values)[-width:]
    known = [value for value in tail if value is not None]
    if not known:
        return ""
    ceiling = top if top else max(known) or 1.0
    steps = len(SPARK) - 1
    return "".join(
        " " if value is None else SPARK[max(0, min(steps, round(value / ceiling * steps)))]
        for value in tail
    )


class Packed:
    """Pieces laid end to end with `separator`, a new line started before a piece that would
    not fit the width: readings are never split between lines (`temp 67°C` stays whole), and a
    line never ends in a separator. A piece wider than the whole width wraps between its words."""

    def __init__(self, pieces: Sequence[Text], separator: str = "  ") -> None:
        self.pieces = [piece for piece in pieces if piece]
        self.separator = separator

    def lines(self, width: int) -> list[Text]:
        lines: list[Text] = []
        line = Text()
        for piece in self.pieces:
            if line and line.cell_len + cell_len(self.separator) + piece.cell_len > width:
                lines.append(line)
                line = Text()
            if line:
                line.append(self.separator)
            line.append_text(piece)
        return [*lines, line]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = Text("\n").join(self.lines(options.max_width))
        yield from console.render(text, options.update(no_wrap=False, overflow="fold"))

    def __str__(self) -> str:
        return self.separator.join(piece.plain for piece in self.pieces)


def vram_bar(gpu: GpuView, width: int = 50) -> Text:
    """Used memory as a filled bar; each service's budget is a coloured stretch ending in `┃`.

    Budgets are laid end to end from the left in the order of the services table, so a bar that
    fills past the last mark means more is used than was budgeted.
    """
    total = gpu.memory_total_bytes or 1
    used_cells = round(gpu.memory_used_bytes / total * width)
    colours: list[str | None] = [None] * width
    edges: set[int] = set()
    start = 0
    for number, mark in enumerate(gpu.budgets):
        end = min(width, round((start + mark.budget_bytes) / total * width))
        for cell in range(round(start / total * width), end):
            colours[cell] = BUDGET_COLOURS[number % len(BUDGET_COLOURS)]
        if end > 0:
            edges.add(end - 1)
        start += mark.budget_bytes
    bar = Text()
    for cell in range(width):
        used = cell < used_cells
        char = "┃" if cell in edges else ("█" if used else "░")
        tint = colours[cell]
        if used:
            style = f"bold {tint}" if tint else "bold white"
        else:
            style = f"dim {tint}" if tint else "grey37"
        bar.append(char, style=style)
    return bar


def gpu_head(gpu: GpuView) -> Packed:
    """`GPU 0 NVIDIA GeForce RTX 4090  19.7 GiB / 24.0 GiB  util 63%  temp 67°C  power 287 W`,
    each reading kept whole on a narrow terminal."""
    title = Text()
    title.append(gpu.label, style="bold")
    title.append(f" {gpu.name}")
    temp = NA if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C"
    power = NA if gpu.power_w is None else f"{gpu.power_w:.0f} W"
    if gpu.power_w is not None and gpu.power_limit_w:
        power += f" / {gpu.power_limit_w:.0f} W"
    readings = (
        f"{fmt_bytes(gpu.memory_used_bytes)} / {fmt_bytes(gpu.memory_total_bytes)}",
        f"util {fmt_pct(gpu.utilization_pct)}",
        f"temp {temp}",
        f"power {power}",
    )
    return Packed([title, *map(Text, readings)])


def gpu_lines(gpu: GpuView, width: int = 50) -> Group:
    legend: list[Text] = []
    for number, mark in enumerate(gpu.budgets):
        colour = BUDGET_COLOURS[number % len(BUDGET_COLOURS)]
        piece = Text("■ ", style=colour)
        piece.append(f"{mark.service} {fmt_bytes(mark.budget_bytes)}")
        legend.append(piece)
    if not gpu.budgets:
        legend.append(Text("no budgets on this GPU", style="dim"))
    return Group(gpu_head(gpu), vram_bar(gpu, width), Packed(legend))


def state_text(service: ServiceView) -> Text:
    if service.download is not None:  # its model first: not ready before it is there
        percent = service.download.percent
        return Text(
            "downloading" + (f" {percent}%" if percent is not None else ""), style="bold yellow"
        )
    state = service.state + (f" ({service.health})" if service.health else "")
    style = "green" if service.state == "running" else "red"
    if service.health == "unhealthy":
        style = "red"
    elif service.health == "starting":
        style = "yellow"
    text = Text(state, style=style)
    if service.state == "running" and service.scrape not in (ScrapeStatus.OK, ScrapeStatus.SKIPPED):
        text.append(f" {service.scrape}", style="bold yellow")
    return text


def service_cells(service: ServiceView) -> tuple[RenderableType, ...]:
    vram = Text(fmt_bytes(service.vram_used_bytes))
    if service.over_budget:
        vram.stylize("bold red")
    elif service.vram_used_bytes is None and service.engine_vram_bytes is not None:
        vram = Text(f"~{fmt_bytes(service.engine_vram_bytes)}", style="italic")
    model = service.model or NA
    if service.loaded_models:
        model = ", ".join(service.loaded_models)
    name = Text(service.name, style="bold")
    if service.host != "local":
        name.append(f"@{service.host}", style="cyan")
    return (
        name,
        service.engine,
        Text(model, overflow="ellipsis", no_wrap=True),
        state_text(service),
        NA if service.port is None else str(service.port),
        vram,
        fmt_bytes(service.vram_budget_bytes),
        NA if service.cpu_pct is None else f"{service.cpu_pct:.1f}%",
        ram_text(service),
        fmt_queue(service),
        fmt_rate(service.tokens_per_s),
        fmt_duration(service.uptime_s),
    )


def ram_text(service: ServiceView) -> Text:
    """Host RAM the container holds (as `docker stats`), against its `ram:` budget if any."""
    text = fmt_bytes(service.ram_used_bytes)
    if service.ram_budget_bytes is not None:
        text += f" / {fmt_bytes(service.ram_budget_bytes)}"
    return Text(text, style="bold red" if service.over_ram_budget else "")


def sort_services(
    services: Sequence[ServiceView], key: SortKey, reverse: bool = False
) -> list[ServiceView]:
    def value(service: ServiceView) -> tuple[float, str]:
        if key is SortKey.VRAM:
            return (-(service.vram_used_bytes or 0), service.name)
        if key is SortKey.ENGINE:
            return (0, f"{service.engine}/{service.name}")
        if key is SortKey.QUEUE:
            queued = (service.requests_running or 0) + (service.requests_waiting or 0)
            return (-queued, service.name)
        if key is SortKey.RATE:
            return (-(service.tokens_per_s or 0.0), service.name)
        return (0, service.name)

    return sorted(services, key=value, reverse=reverse)


def header_pieces(snapshot: MonitorSnapshot) -> list[Text]:
    """Profile, GPUs, each Docker engine and the time: the parts of the header line."""
    profile = Text()
    profile.append("aitherctl ", style="bold")
    profile.append("profile ")
    profile.append(snapshot.active_profile or "none", style="bold cyan")
    if snapshot.gpus:
        plural = "s" if len(snapshot.gpus) > 1 else ""
        gpus = Text(f"{len(snapshot.gpus)} GPU{plural}, driver {snapshot.driver_version or NA}")
    else:
        gpus = Text("no GPU", style="yellow")
    if snapshot.docker_error:
        docker = Text("Docker unavailable", style="bold red")
    else:
        docker = Text(snapshot.docker_engine or "Docker")
    pieces = [profile, gpus, docker]
    for other in snapshot.hosts:
        host = Text(other.name, style="cyan")
        if other.error:
            host.append(" unreachable", style="bold red")
        else:
            host.append(f" {other.engine or 'Docker'}")
        pieces.append(host)
    pieces.append(Text(snapshot.taken_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")))
    return pieces


HEADER_SEPARATOR = "  │  "


def header_text(snapshot: MonitorSnapshot) -> Text:
    """The monitor's one-line header."""
    return Text(HEADER_SEPARATOR).join(header_pieces(snapshot))


def hosts_text(snapshot: MonitorSnapshot) -> Text:
    """One line per other host: reached or why not, and why its GPUs are not shown."""
    text = Text()
    for other in snapshot.hosts:
        if text:
            text.append("\n")
        text.append(f"host {other.name}", style="bold cyan")
        text.append(f" ({other.endpoint}): ")
        if other.error:
            text.append(other.error, style="red")
            continue
        services = f"{other.services} service{'s' if other.services != 1 else ''}"
        text.append(f"{other.engine or 'Docker'}, {services}")
        if other.gpu_error:
            text.append(f"; GPU: {other.gpu_error}", style="yellow")
    return text


def host_text(host: HostView) -> Text:
    text = Text()
    cpu = fmt_pct(host.cpu_pct)
    if host.cpu_count:
        cpu += f" of {host.cpu_count} cores"
    text.append("CPU ", style="bold")
    text.append(cpu)
    if host.load_1m is not None:
        text.append(f"  load {host.load_1m:.2f}")
    text.append("\nRAM ", style="bold")
    text.append(f"{fmt_bytes(host.ram_used_bytes)} / {fmt_bytes(host.ram_total_bytes)}")
    text.append("\nswap ", style="bold")
    text.append(f"{fmt_bytes(host.swap_used_bytes)} / {fmt_bytes(host.swap_total_bytes)}")
    return text


def no_gpu_text(snapshot: MonitorSnapshot) -> Text:
    """Why there is no GPU panel, in `status` and the monitor alike."""
    return Text(f"GPU: {snapshot.gpu_error or 'no NVIDIA GPU found'}", style="yellow")


def unmanaged_text(snapshot: MonitorSnapshot) -> Text:
    if snapshot.gpu_error:
        return Text("GPU processes: unknown (no GPU readings)", style="dim")
    if not snapshot.unmanaged:
        return Text("No GPU memory held outside aitherctl.", style="dim")
    text = Text("Held outside aitherctl:", style="bold")
    for proc in snapshot.unmanaged:
        where = f" [container {proc.container_id[:12]}]" if proc.container_id else ""
        gpu = f"GPU {proc.gpu_index}"
        if proc.host != "local":
            gpu = f"{proc.host} {gpu}"
        text.append(
            f"\n {gpu}  {fmt_bytes(proc.used_bytes):>9}  {proc.name or '?'} (pid {proc.pid}){where}"
        )
    return text


NO_SCHEDULER = "no scheduler serving (aitherctl serve)"
SCHEDULER_EVENT_LINES = 6
SCHEDULER_STATE_STYLES = {
    "ready": "green",
    "loading": "yellow",
    "evicting": "yellow",
    "stopped": "dim",
    "asleep": "blue",
    "unloaded": "blue",
}


def node_note(backend: SchedulerBackendView) -> str:
    """A rented node's money and time: `$0.152/h, $0.0123 today, idle 4m00s left` (no price:
    no instance runs)."""
    parts = [
        "no instance"
        if backend.price_per_hour_usd is None
        else f"${backend.price_per_hour_usd:.3f}/h"
    ]
    if backend.spent_today_usd is not None:
        parts.append(f"${backend.spent_today_usd:.4f} today")
    if backend.idle_left_s is not None:
        parts.append(f"idle {fmt_duration(backend.idle_left_s)} left")
    return ", ".join(parts)


def scheduler_nodes(view: SchedulerView) -> Text | None:
    """Each rented node's money and time on a line of its own under the table (the line
    wraps on a narrow terminal rather than being dropped with a column)."""
    nodes = [backend for backend in view.backends if backend.kind == "node"]
    if not nodes:
        return None
    text = Text()
    for backend in nodes:
        if text:
            text.append("\n")
        text.append(f"node {backend.name}: ", style="bold")
        text.append(node_note(backend))
    return text


def _backend_note(backend: SchedulerBackendView) -> Text:
    notes = [
        label
        for label, on in (
            ("endpoint", backend.kind == "endpoint"),
            ("node", backend.kind == "node"),
            ("pinned", backend.pinned),
            ("on demand", backend.on_demand),
            ("displaced", backend.displaced),
        )
        if on
    ]
    return Text(", ".join(notes), style="dim")


def scheduler_errors(view: SchedulerView) -> Text | None:
    """Each backend's last error on lines of its own under the table (in a column of the
    table, a long one wrapped in a sliver of the width)."""
    errors = [backend for backend in view.backends if backend.last_error]
    if not errors:
        return None
    text = Text()
    for backend in errors:
        if text:
            text.append("\n")
        text.append(f"{backend.name}: ", style="bold")
        text.append(backend.last_error or "", style="red")
    return text


BACKEND_COLUMNS = ("backend", "state", "busy", "queued", "int/nor/bat", "holds", "")
BACKEND_DROP_ORDER = ("int/nor/bat", "holds", "")  # on a narrow terminal, least needed first


def scheduler_backends_table(view: SchedulerView, width: int | None = None) -> Table:
    """Per backend: state, requests in flight of its limit, and who waits (by priority);
    at `width`, without the columns of `BACKEND_DROP_ORDER` it takes to fit (None: all)."""
    rows: list[tuple[RenderableType, ...]] = []
    for backend in view.backends:
        queue_max = "" if backend.max_queue is None else f" of {backend.max_queue}"
        holds = " ".join(f"{pool} {format_bytes(amount)}" for pool, amount in backend.claims_bytes)
        rows.append(
            (
                Text(backend.name, style="bold"),
                Text(backend.state, style=SCHEDULER_STATE_STYLES.get(backend.state, "")),
                f"{backend.in_flight}/{backend.limit}",
                Text(f"{backend.queued}{queue_max}", style="bold yellow" if backend.queued else ""),
                f"{backend.queued_interactive}/{backend.queued_normal}/{backend.queued_batch}",
                holds or "-",
                _backend_note(backend),
            )
        )
    texts = [[str(cell) for cell in row] for row in rows]
    chosen = fit_columns(BACKEND_COLUMNS, texts, width, ColumnRules(drop_order=BACKEND_DROP_ORDER))
    keep = [BACKEND_COLUMNS.index(name) for name in chosen]
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for name in chosen:
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[index] for index in keep))
    return table


class SchedulerBackends:
    """The backend table laid out for the width it is printed at."""

    def __init__(self, view: SchedulerView) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield scheduler_backends_table(self.view, options.max_width)


def scheduler_headline_pieces(view: SchedulerView) -> list[Text]:
    title = Text()
    title.append("scheduler ", style="bold")
    title.append(view.url or "")
    pieces = [title]
    if view.profile:
        profile = Text("profile ")
        profile.append(view.profile, style="bold cyan")
        pieces.append(profile)
    if view.error:
        pieces.append(Text(view.error, style="bold yellow"))
        return pieces
    in_flight = sum(backend.in_flight for backend in view.backends)
    queued = sum(backend.queued for backend in view.backends)
    pieces.append(Text(f"{in_flight} in flight, {queued} queued"))
    for pool in view.pools:
        piece = Text(f"{pool.name} ", style="bold")
        piece.append(f"{format_bytes(pool.used_bytes)} / {fmt_bytes(pool.capacity_bytes)}")
        pieces.append(piece)
    return pieces


def scheduler_headline(view: SchedulerView) -> Packed:
    """URL, profile, totals and pools, each kept whole on a narrow terminal."""
    return Packed(scheduler_headline_pieces(view))


def scheduler_events(view: SchedulerView, lines: int = SCHEDULER_EVENT_LINES) -> RenderableType:
    """The last scheduler decisions, newest last, in `status` and in the monitor's panel."""
    if not view.events:
        return Text("no scheduler events yet", style="dim")
    return scheduler_events_table(view, lines)


def scheduler_events_table(view: SchedulerView, lines: int = SCHEDULER_EVENT_LINES) -> Table:
    """One row per event: time, event, backend, and the detail, which wraps between words
    under itself on a narrow terminal."""
    table = Table(box=None, pad_edge=False, show_header=False, expand=False)
    table.add_column("at", no_wrap=True, style="dim")
    table.add_column("event", no_wrap=True, style="bold")
    table.add_column("backend", no_wrap=True, style="cyan")
    table.add_column("detail", overflow="fold")
    for event in view.events[-lines:]:
        table.add_row(
            event.at.astimezone().strftime("%H:%M:%S"),
            event.event,
            event.backend or "-",
            event.detail,
        )
    return table


def scheduler_renderable(view: SchedulerView, *, events: bool = True) -> RenderableType:
    """The monitor's scheduler panel: a headline (URL, totals, pools), the backends, then the
    last events under their own heading (beside the table, each event read as that row's);
    one dim line when no `aitherctl serve` runs."""
    if not view.serving:
        message = NO_SCHEDULER + (f" ({view.error})" if view.error else "")
        return Text(message, style="dim")
    if view.error:
        return scheduler_headline(view)
    errors = scheduler_errors(view)
    nodes = scheduler_nodes(view)
    table: tuple[RenderableType, ...] = (
        SchedulerBackends(view),
        *(part for part in (nodes, errors) if part is not None),
    )
    if not events:  # the monitor shows them in a panel of their own
        return Group(scheduler_headline(view), *table)
    return Group(
        scheduler_headline(view),
        *table,
        Text("scheduler events", style="bold"),
        scheduler_events(view),
    )


def scheduler_lines(view: SchedulerView, stamp: str) -> list[str]:
    """`status --watch`: the scheduler in plain lines."""
    if not view.serving:
        return [f"{stamp} scheduler: none serving"]
    if view.error:
        return [f"{stamp} scheduler {view.url}: {view.error}"]
    return [
        f"{stamp} scheduler {backend.name} state={backend.state} "
        f"busy={backend.in_flight}/{backend.limit} queued={backend.queued} "
        f"int/nor/bat={backend.queued_interactive}/{backend.queued_normal}/"
        f"{backend.queued_batch}"
        + (f" node: {node_note(backend)}" if backend.kind == "node" else "")
        for backend in view.backends
    ]


# Readings a service may lack (a column of them all N/A is left out where space is short),
# and the order in which the rest give way on a narrow terminal, least needed first; narrower
# still (under 80 columns), the model column shrinks to its least (ending in `…`), then the
# memory columns go too. `ps` gives way by the same rule (tui/columns.py).
MODEL_MIN_WIDTH = 8
SERVICE_COLUMN_RULES = ColumnRules(
    optional=frozenset({"port", "VRAM", "budget", "CPU", "RAM", "queue", "tok/s", "up"}),
    drop_order=("up", "tok/s", "port", "engine", "queue", "CPU", "budget"),
    last_drop=("RAM", "VRAM"),
    shrink={"model": (MODEL_MIN_WIDTH, 16)},
    missing=NA,
)


def fit_service_columns(rows: Sequence[Sequence[str]], width: int | None) -> list[str]:
    """The columns of `SERVICE_COLUMNS` that `status` shows at `width` (None: all of them)."""
    return fit_columns(SERVICE_COLUMNS, rows, width, SERVICE_COLUMN_RULES)


def services_table(
    snapshot: MonitorSnapshot, key: SortKey = SortKey.NAME, width: int | None = None
) -> Table:
    """The services, one row each, with the columns that fit `width` (None: every column,
    as the monitor shows them)."""
    return services_layout(snapshot, key, width)[0]


def services_layout(
    snapshot: MonitorSnapshot, key: SortKey = SortKey.NAME, width: int | None = None
) -> tuple[Table, list[str]]:
    """The services table for `width`, and the columns with readings it left out."""
    cells = [service_cells(service) for service in sort_services(snapshot.services, key)]
    rows = [[str(cell) for cell in row] for row in cells]
    chosen = fit_service_columns(rows, width)
    table = Table(expand=False, box=None, pad_edge=False, header_style="bold")
    keep = [SERVICE_COLUMNS.index(name) for name in chosen]
    for name in chosen:
        if name == "model":
            least = least_width(name, rows, SERVICE_COLUMNS.index(name), MODEL_MIN_WIDTH)
            table.add_column(name, overflow="ellipsis", min_width=least)
        else:
            table.add_column(name, no_wrap=True)
    for row in cells:
        table.add_row(*(row[index] for index in keep))
    hidden = left_out(SERVICE_COLUMNS, rows, chosen, NA)
    return table, hidden


class ServicesTable:
    """`status`'s services table, laid out for the width it is printed at; the columns left
    out for want of space are named under it."""

    def __init__(self, snapshot: MonitorSnapshot) -> None:
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        table, left_out = services_layout(self.snapshot, width=width)
        yield table
        if left_out:
            yield Packed(
                [
                    Text(f"not shown at {width} columns: {', '.join(left_out)}", style="dim"),
                    Text("(status --json has every reading)", style="dim"),
                ],
                separator=" ",
            )


def status_renderable(snapshot: MonitorSnapshot) -> Group:
    """The one-shot summary `aitherctl status` prints."""
    parts: list[RenderableType] = [Packed(header_pieces(snapshot), HEADER_SEPARATOR), Text()]
    if snapshot.gpu_error or not snapshot.gpus:
        parts.append(no_gpu_text(snapshot))
    for gpu in snapshot.gpus:
        parts.append(gpu_lines(gpu))
    if snapshot.hosts:
        parts.append(hosts_text(snapshot))
    parts.append(Text())
    if snapshot.docker_error:
        parts.append(Text(f"Docker: {snapshot.docker_error}", style="red"))
        if any(svc.host != "local" for svc in snapshot.services):
            parts.append(ServicesTable(snapshot))
    elif snapshot.services:
        parts.append(ServicesTable(snapshot))
    else:
        parts.append(Text("No aitherctl services are running.", style="dim"))
    if snapshot.scheduler is not None:
        parts += [Text(), scheduler_renderable(snapshot.scheduler)]
    parts += [Text(), unmanaged_text(snapshot), Text(), host_text(snapshot.host)]
    return Group(*parts)


def plain_lines(snapshot: MonitorSnapshot, said: dict[str, str] | None = None) -> list[str]:
    """`status --watch`: plain lines without colour or cursor movement, fit for logs.

    `said` (kept by the caller across readings) holds the errors already printed: an unchanged
    error is not repeated every reading; a changed one is printed again, and one that went
    away is followed by a line saying so (`gpu: ok again`)."""
    stamp = snapshot.taken_at.astimezone().strftime("%H:%M:%S")
    host = snapshot.host
    current: dict[str, str] = {}

    def error(kind: str, message: str, text: str | None = None) -> None:
        current[kind] = message
        if said is None or said.get(kind) != message:
            lines.append(f"{stamp} {text or kind + ': ' + message}")

    lines = [
        f"{stamp} profile={snapshot.active_profile or 'none'} "
        f"cpu={fmt_pct(host.cpu_pct)} ram={fmt_bytes(host.ram_used_bytes)}"
        f"/{fmt_bytes(host.ram_total_bytes)} swap={fmt_bytes(host.swap_used_bytes)}"
    ]
    if snapshot.gpu_error:
        error("gpu", snapshot.gpu_error)
    for gpu in snapshot.gpus:
        where = "" if gpu.host == "local" else f"{gpu.host}:"
        lines.append(
            f"{stamp} {where}gpu{gpu.index} mem={fmt_bytes(gpu.memory_used_bytes)}"
            f"/{fmt_bytes(gpu.memory_total_bytes)} util={fmt_pct(gpu.utilization_pct)} "
            f"temp={NA if gpu.temperature_c is None else f'{gpu.temperature_c:.0f}C'} "
            f"power={NA if gpu.power_w is None else f'{gpu.power_w:.0f}W'}"
        )
    if snapshot.docker_error:
        error("docker", snapshot.docker_error)
    for other in snapshot.hosts:
        if other.error:
            error(
                f"host {other.name}",
                other.error,
                f"host {other.name} unreachable: {other.error}",
            )
            continue
        lines.append(f"{stamp} host {other.name} services={other.services}")
        if other.gpu_error:
            error(f"host {other.name} gpu", other.gpu_error)
    for svc in snapshot.services:
        lines.append(
            f"{stamp} {svc.key} engine={svc.engine} state={svc.state}"
            f"{'/' + svc.health if svc.health else ''} scrape={svc.scrape} "
            f"vram={fmt_bytes(svc.vram_used_bytes)}/{fmt_bytes(svc.vram_budget_bytes)} "
            f"cpu={NA if svc.cpu_pct is None else f'{svc.cpu_pct:.1f}%'} "
            f"ram={fmt_bytes(svc.ram_used_bytes)}/{fmt_bytes(svc.ram_budget_bytes)} "
            f"queue={fmt_queue(svc)} tok/s={fmt_rate(svc.tokens_per_s)} "
            f"up={fmt_duration(svc.uptime_s)}"
        )
    for proc in snapshot.unmanaged:
        lines.append(
            f"{stamp} unmanaged {'' if proc.host == 'local' else proc.host + ':'}"
            f"gpu{proc.gpu_index} pid={proc.pid} name={proc.name or '?'} "
            f"mem={fmt_bytes(proc.used_bytes)}"
        )
    if snapshot.scheduler is not None:
        view = snapshot.scheduler
        if view.serving and view.error:
            error(f"scheduler {view.url}", view.error)
        else:
            lines += scheduler_lines(view, stamp)
    if said is not None:
        for kind in [kind for kind in said if kind not in current]:
            lines.append(f"{stamp} {kind}: ok again")
        said.clear()
        said.update(current)
    return lines
