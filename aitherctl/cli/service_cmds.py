"""`aitherctl up | down | ps | logs`: the running services of the active profile."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import ExitCode, NotFoundError, UsageError
from aitherctl.tui.columns import ColumnRules, fit_columns, least_width, left_out

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

    from aitherctl.monitor.services import ServiceListing
    from aitherctl.nodes.model import NodeRow
    from aitherctl.switching.state import StackState

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _active_profile(state: StackState, override: str | None) -> str:
    # After `down --all` nothing runs: the last profile a switch recorded is the one to bring up.
    name = (
        override
        or state.active_profile
        or os.environ.get("AITHER_GPU_PROFILE")
        or state.last_profile
    )
    if not name:
        raise UsageError(
            "no active profile: run `aitherctl profile switch NAME` or set AITHER_GPU_PROFILE"
        )
    return name


def up(  # noqa: PLR0917 - Typer passes options by keyword; click counts them
    services: Annotated[
        list[str] | None, typer.Argument(help="Services (default: all resident).")
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Profile (default: the active one).")
    ] = None,
    restore: Annotated[
        bool,
        typer.Option(
            "--restore",
            help="Bring back the last active profile after a reboot or a Docker restart, one GPU "
            "service after another (what the systemd unit runs).",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    no_pull: Annotated[
        bool,
        typer.Option(
            "--no-pull",
            help="Refuse when a service's model is not downloaded, instead of downloading it "
            "first (`aitherctl pull`).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Start services of the active profile (on-demand ones too, when named), after the same
    VRAM, port and readiness checks as a switch, downloading missing models first as a switch
    does; nothing else is stopped. After `down --all`, the last active profile's."""
    from aitherctl.cli.switch_exec import CliProgress, print_urls, service_urls
    from aitherctl.switching.state import observe
    from aitherctl.switching.switch import ModelPolicy, switch

    out = Output(json_mode=json_out)
    engine = runtime.docker()
    catalog = runtime.catalog()
    state = observe(engine)
    chosen: list[str] | None
    if restore:
        if services:
            raise UsageError("--restore brings back the whole profile: name no services")
        name = profile or state.active_profile or state.last_profile
        if not name:
            out.info("nothing to restore: aitherctl has no containers on this engine")
            if json_out:
                out.data({"profile": None, "started": [], "seconds": 0.0, "urls": {}})
            return
        chosen = None
    else:
        name = _active_profile(state, profile)
        chosen = list(services) if services else sorted(catalog.load(name).resident)
    loaded = catalog.load(name)
    from aitherctl.cli.render import plan_table
    from aitherctl.switching.plan import Action, Plan
    from aitherctl.switching.switch import Change, Declined, Prepared

    def ask(plan: Plan, hosts: list[str] | None, changed: bool) -> bool:
        """The plan on stderr, then `start A, B?` (`--yes`, or a refusal without a terminal)."""
        if changed:
            out.warn("the plan changed while you were deciding; this is the new plan")
        if not json_out:
            out.err.print(plan_table(plan, hosts))
        starting = sorted(
            step.service + ("" if not hosts or hosts[index] == "local" else f"@{hosts[index]}")
            for index, step in enumerate(plan.steps)
            if step.action is not Action.KEEP
        )
        return out.confirm(f"start {', '.join(starting)}?", assume_yes=yes or restore)

    if any(svc.host != "local" for svc in loaded.services.values()):
        from aitherctl.switching.hosts import up_across

        def confirm_across(change: Change, changed: bool) -> bool:
            return ask(change.plan, change.hosts, changed)

        try:
            started, urls, seconds = up_across(
                runtime.docker,
                catalog,
                loaded,
                runtime.gpu_inventory,
                CliProgress(out),
                chosen,
                confirm=confirm_across,
                models=ModelPolicy(pull=not no_pull),
            )
        except Declined:
            raise typer.Exit(int(ExitCode.ERROR)) from None
        started = sorted(started)  # not in the order they happened to finish
        if json_out:
            out.data(
                {"profile": name, "started": started, "seconds": round(seconds, 2), "urls": urls}
            )
            return
        out.info(
            f"started {', '.join(started)} in {seconds:.1f}s"
            if started
            else f"{', '.join(chosen or ['profile ' + name])} already up"
        )
        print_urls(out, urls)
        return

    def confirm(prepared: Prepared, changed: bool) -> bool:
        return ask(prepared.plan, None, changed)

    try:
        result = switch(
            engine,
            catalog,
            name,
            runtime.gpu_inventory,
            CliProgress(out),
            only=chosen,
            confirm=confirm,
            models=ModelPolicy(pull=not no_pull),
        )
    except Declined:
        raise typer.Exit(int(ExitCode.ERROR)) from None
    started = sorted(o.service for o in result.outcomes if o.ready)  # not in finishing order
    urls = service_urls(engine, result.plan)
    if json_out:
        out.data(
            {
                "profile": name,
                "started": started,
                "seconds": round(result.seconds, 2),
                "urls": urls,
            }
        )
        return
    if result.recovered:
        out.info(f"first {result.recovered} that had been interrupted")
    if started:
        out.info(f"started {', '.join(started)} in {result.seconds:.1f}s")
    else:
        out.info(f"{', '.join(chosen or ['profile ' + name])} already up")
    print_urls(out, urls)


def down(
    services: Annotated[list[str] | None, typer.Argument(help="Services to stop.")] = None,
    all_services: Annotated[
        bool, typer.Option("--all", help="Stop every aitherctl container.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop and remove services' containers (name them, or pass --all)."""
    from aitherctl.cli.switch_exec import CliProgress
    from aitherctl.switching.switch import Declined, Prepared, prepare_down, run_change

    out = Output(json_mode=json_out)
    if not services and not all_services:
        raise UsageError("name the services to stop, or pass --all")
    engine = runtime.docker()
    chosen = None if all_services else list(services or [])

    def confirm(prepared: Prepared, changed: bool) -> bool:
        if changed:
            out.warn("what runs changed while you were deciding")
        names = sorted({step.service for step in prepared.plan.steps})
        return out.confirm(f"stop {', '.join(names)}?", assume_yes=yes)

    from aitherctl.switching.remembered_hosts import remembered_hosts

    if remembered_hosts():
        from aitherctl.switching.hosts import down_across

        try:
            stopped = down_across(runtime.docker, chosen, CliProgress(out), confirm=confirm)
        except Declined:
            raise typer.Exit(int(ExitCode.ERROR)) from None
        if json_out:
            out.data({"stopped": stopped})
        else:
            out.info(f"stopped {', '.join(stopped) or 'nothing'}")
        return
    try:
        result = run_change(
            engine, lambda: prepare_down(engine, chosen), CliProgress(out), confirm=confirm
        )
    except Declined:
        raise typer.Exit(int(ExitCode.ERROR)) from None
    stopped = sorted({step.service for step in result.plan.steps})
    if json_out:
        out.data({"stopped": stopped})
    else:
        out.info(f"stopped {', '.join(stopped) or 'nothing'}")


def recover(json_out: JsonOpt = False) -> None:
    """Finish or undo a switch that was killed (kill -9, power cut): its record on the engine
    says what was set aside. `switch`, `up` and `down` do this first by themselves."""
    from aitherctl.cli.switch_exec import CliProgress
    from aitherctl.switching.lock import engine_lock
    from aitherctl.switching.transaction import recover as recover_switches

    out = Output(json_mode=json_out)
    # Rented nodes first: a paid instance nobody knows about must be named even when Docker
    # is down (`aitherctl nodes recover` destroys or adopts it).
    from aitherctl.cli.nodes_cmd import warn_unknown_nodes

    warn_unknown_nodes(out)
    engine = runtime.docker()
    progress = CliProgress(out)
    with engine_lock(engine, on_wait=progress.note):
        done = recover_switches(engine, progress)
    from aitherctl.switching.remembered_hosts import remembered_hosts

    if remembered_hosts():
        from aitherctl.switching.hosts import recover_other_hosts

        done += recover_other_hosts(progress)
    if json_out:
        out.data(
            {
                "recovered": [
                    {"profile": r.profile, "action": r.action, "summary": r.summary} for r in done
                ]
            }
        )
        return
    if not done:
        out.info("nothing to recover: no interrupted switch")
    for item in done:
        out.info(f"{item.action} the interrupted switch to {item.profile}: {item.summary}")


def ps(json_out: JsonOpt = False) -> None:
    """What aitherctl runs: service, engine, model, state, health, port, GPU, VRAM (real use
    against the budget, flagged when over), uptime."""
    from aitherctl.monitor.node_rows import current_node_rows
    from aitherctl.monitor.services import list_services, with_other_hosts

    out = Output(json_mode=json_out)
    listing = list_services(runtime.docker_reader(), runtime.catalog, runtime.gpu_inventory)
    listing = with_other_hosts(listing)
    nodes = current_node_rows()
    if json_out:
        out.data({**listing.to_json(), "nodes": [row.to_json() for row in nodes]})
        return
    out.print(f"profile: [bold]{listing.active_profile or 'none'}[/]   docker: {listing.endpoint}")
    for name, endpoint in listing.hosts:
        out.print(f"host {name}: {endpoint}", markup=False)
    for problem in listing.unreachable:
        out.warn(f"{problem} (its services are not listed)")
    if listing.pending_switch:
        out.warn("a switch was interrupted: run `aitherctl recover` (or any switch) to finish it")
    if not listing.rows:
        out.print("no services running (start some with `aitherctl profile switch NAME`)")
    else:
        out.print(ps_table(listing))
    if nodes:
        out.print(nodes_table(nodes))


def nodes_table(rows: Sequence[NodeRow]) -> Table:
    """`ps`'s rented nodes: state, the instance, its whole hourly price, what it cost today,
    and (from a running `serve`) the idle time left before it is destroyed."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name in ("node", "profile", "state", "instance", "$/h", "today", "idle left"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for row in rows:
        running = row.state.value == "running"
        table.add_row(
            row.node,
            row.profile,
            f"[green]{row.state.value}[/]" if running else f"[yellow]{row.state.value}[/]",
            row.instance_id or "-",
            "-" if row.price_per_hour_usd is None else f"${row.price_per_hour_usd:.3f}",
            f"${row.spent_today_usd:.4f}",
            _duration(row.idle_left_s),
        )
    return table


# `ps` gives way on a narrow terminal by `status`'s rule (tui/columns.py): readings no row has
# go first, then these columns one after another, least needed first; then the model (and host)
# column is shrunk to its least, ending in `…`; then the memory columns go.
PS_COLUMN_RULES = ColumnRules(
    optional=frozenset({"vram", "cpu", "ram", "up"}),
    drop_order=("up", "engine", "cpu", "port", "health"),
    last_drop=("ram", "vram"),
    shrink={"model": (8, 16), "host": (8, 12)},
)


def ps_table(listing: ServiceListing) -> PsTable:
    """`ps`'s table: one row per container, whatever its state (running, exited, created,
    paused, restarting, removing, dead)."""
    return PsTable(listing)


class PsTable:
    """`ps`'s services, laid out for the width it is printed at: the columns that fit, whole
    (a size is never split between its number and its unit), and a line naming those left
    out."""

    def __init__(self, listing: ServiceListing) -> None:
        self.listing = listing

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.table import Table
        from rich.text import Text

        names, rows = _ps_cells(self.listing)
        plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
        # A reading no row has (no VRAM budget, no CPU or RAM figure, nothing up) is left out
        # whatever the width: `ps` shows what it knows. So is the GPU column when every
        # service runs on the CPU (it would say `cpu` on every row).
        gpu = names.index("gpu")
        empty = ["gpu"] if all(row[gpu] == "cpu" for row in plain) else []
        shown = [
            name
            for index, name in enumerate(names)
            if name not in empty
            and (name not in PS_COLUMN_RULES.optional or any(row[index] != "-" for row in plain))
        ]
        width = options.max_width
        chosen = fit_columns(
            shown,
            [[row[names.index(name)] for name in shown] for row in plain],
            width,
            PS_COLUMN_RULES,
        )
        table = Table(box=None, pad_edge=False)
        for name in chosen:
            if name in PS_COLUMN_RULES.shrink:
                least = least_width(name, plain, names.index(name), PS_COLUMN_RULES.shrink[name][0])
                table.add_column(name, overflow="ellipsis", min_width=least)
            else:
                table.add_column(name, no_wrap=True)
        keep = [names.index(name) for name in chosen]
        for cells in rows:
            table.add_row(*(cells[index] for index in keep))
        yield table
        hidden = left_out(names, plain, [*chosen, *empty])
        if hidden:
            yield Text(
                f"not shown at {width} columns: {', '.join(hidden)} (ps --json has every reading)",
                style="dim",
            )


def _ps_cells(listing: ServiceListing) -> tuple[list[str], list[list[str]]]:
    """`ps`'s column names and each row's cells (rich markup)."""
    from aitherctl.units import format_bytes

    several = bool(listing.hosts)
    columns = ["service", "engine", "model", "state", "health", "port", "gpu", "vram", "cpu"]
    columns += ["ram", "up"]
    rows = []
    for row in listing.rows:
        healthy = row.health == "healthy"
        vram = format_bytes(row.vram_budget_bytes) if row.vram_budget_bytes else "-"
        if row.vram_used_bytes is not None:
            vram = f"{format_bytes(row.vram_used_bytes)} / {vram}"
            if row.over_budget:
                vram = f"[red]{vram} over budget[/]"
        rows.append(
            [
                *((row.host,) if several else ()),
                row.service,
                row.engine,
                row.model or "-",
                f"[green]{row.state}[/]" if row.state == "running" else f"[red]{row.state}[/]",
                row.health if healthy else f"[yellow]{row.health}[/]",
                f"{row.port}" if row.port else "-",
                ",".join(map(str, row.gpus)) or "cpu",
                vram,
                "-" if row.cpu_pct is None else f"{row.cpu_pct:.1f}%",
                _ram_cell(row.ram_used_bytes, row.ram_budget_bytes, over=row.over_ram_budget),
                _duration(row.uptime_s),
            ]
        )
    return (["host", *columns] if several else columns), rows


def _ram_cell(used: int | None, budget: int | None, *, over: bool) -> str:
    """Host RAM the container holds against its `ram:` budget, as `docker stats` counts it."""
    from aitherctl.units import format_bytes

    text = "-" if used is None else format_bytes(used)
    if budget is not None:
        text = f"{text} / {format_bytes(budget)}"
    return f"[red]{text} over budget[/]" if over else text


def _duration(seconds: float | None) -> str:
    # The same words as `status` and the monitor (1m22s, not 80s), so the two agree.
    from aitherctl.units import format_duration

    return format_duration(seconds, "-")


def logs(
    service: Annotated[str, typer.Argument(help="Service name.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end.")] = 100,
) -> None:
    """Print a service's container log."""
    import sys

    from aitherctl.switching.state import observe

    engine = runtime.docker()
    item = observe(engine).container(service)
    if item is None:
        from aitherctl.switching.hosts import find_on_other_hosts

        found = find_on_other_hosts(service)
        if found is not None:
            engine, item = found
    if item is None:
        raise NotFoundError(f"no container for service {service!r} (see `aitherctl ps`)")
    if follow:
        for chunk in engine.follow_logs(item.id, tail=tail):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    else:
        sys.stdout.write(engine.logs(item.id, tail=tail))


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("ps")(ps)
    app.command("logs")(logs)
    app.command("recover")(recover)
