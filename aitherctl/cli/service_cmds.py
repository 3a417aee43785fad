"""`aitherctl up | down | ps | logs`: the running services of the active profile."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import ExitCode, NotFoundError, UsageError

if TYPE_CHECKING:
    from aitherctl.adapters.docker_engine import DockerEngine
    from aitherctl.core.stack import ManagedContainer
    from aitherctl.ops.state import StackState

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _active_profile(state: StackState, override: str | None) -> str:
    name = override or state.active_profile or os.environ.get("AITHER_GPU_PROFILE")
    if not name:
        raise UsageError(
            "no active profile: run `aitherctl profile switch NAME` or set AITHER_GPU_PROFILE"
        )
    return name


def up(
    services: Annotated[
        list[str] | None, typer.Argument(help="Services (default: all resident).")
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Profile (default: the active one).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start services of the active profile (on-demand ones too, when named), after the same
    VRAM, port and readiness checks as a switch; nothing else is stopped."""
    from aitherctl.cli.profile_cmd import CliProgress
    from aitherctl.ops.state import observe
    from aitherctl.ops.switch import switch

    out = Output(json_mode=json_out)
    engine = runtime.docker()
    catalog = runtime.catalog()
    name = _active_profile(observe(engine), profile)
    chosen = list(services) if services else sorted(catalog.load(name).resident)
    result = switch(engine, catalog, name, runtime.gpu_inventory(), CliProgress(out), only=chosen)
    started = [o.service for o in result.outcomes if o.ready]
    if json_out:
        out.data({"profile": name, "started": started, "seconds": round(result.seconds, 2)})
    elif started:
        out.info(f"started {', '.join(started)} in {result.seconds:.1f}s")
    else:
        out.info(f"{', '.join(chosen)} already up")


def down(
    services: Annotated[list[str] | None, typer.Argument(help="Services to stop.")] = None,
    all_services: Annotated[
        bool, typer.Option("--all", help="Stop every aitherctl container.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop and remove services' containers (name them, or pass --all)."""
    from aitherctl.cli.profile_cmd import CliProgress
    from aitherctl.ops.switch import down as stop_services

    out = Output(json_mode=json_out)
    if not services and not all_services:
        raise UsageError("name the services to stop, or pass --all")
    engine = runtime.docker()
    what = "every aitherctl service" if all_services else ", ".join(services or [])
    if not out.confirm(f"stop {what}?", assume_yes=yes):
        raise typer.Exit(int(ExitCode.ERROR))
    stopped = stop_services(engine, services or [], CliProgress(out), everything=all_services)
    if json_out:
        out.data({"stopped": stopped})
    else:
        out.info(f"stopped {', '.join(stopped) or 'nothing'}")


def _health(engine: DockerEngine, containers: list[ManagedContainer]) -> dict[str, str]:
    """Probe every running service at once, 1 s each."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from aitherctl.adapters.http_probe import probe, probe_host

    running = [item for item in containers if item.running and item.port]
    if not running:
        return {}
    with httpx.Client() as client, ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
        results = pool.map(
            lambda item: probe(
                client,
                probe_host(item.bind, engine.endpoint),
                item.port,
                item.health_checks,
                timeout_s=1.0,
            ),
            running,
        )
        return {
            item.id: "healthy" if result.ok else f"unhealthy ({result.detail})"
            for item, result in zip(running, results, strict=True)
        }


def _uptime_s(item: ManagedContainer) -> float | None:
    if not item.started_at:
        return None
    try:
        started = datetime.fromisoformat(item.started_at.replace("Z", "+00:00")[:32])
    except ValueError:
        return None
    return max(0.0, (datetime.now(UTC) - started).total_seconds())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def ps(json_out: JsonOpt = False) -> None:
    """What aitherctl runs: service, engine, model, state, health, port, GPU, VRAM budget."""
    from aitherctl.core.units import format_bytes
    from aitherctl.ops.state import observe

    out = Output(json_mode=json_out)
    engine = runtime.docker()
    state = observe(engine, runtime.catalog())
    containers = sorted(state.containers, key=lambda item: item.service)
    health = _health(engine, containers)
    rows: list[dict[str, Any]] = []
    for item in containers:
        rows.append(
            {
                "service": item.service,
                "profile": item.profile,
                "engine": item.engine,
                "model": item.served_model or item.model,
                "state": item.state,
                "health": health.get(item.id, "-" if not item.running else "unknown"),
                "port": item.port,
                "bind": item.bind,
                "gpus": list(item.gpus),
                "vram_budget_bytes": item.vram_bytes,
                "container": item.name,
                "container_id": item.id[:12],
                "image": item.image,
                "uptime_s": _uptime_s(item),
            }
        )
    if json_out:
        out.data(
            {
                "active_profile": state.active_profile,
                "namespace": state.namespace,
                "docker": state.endpoint,
                "services": rows,
            }
        )
        return
    from rich.table import Table

    out.print(f"profile: [bold]{state.active_profile or 'none'}[/]   docker: {state.endpoint}")
    if not rows:
        out.print("no services running (start some with `aitherctl profile switch NAME`)")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("service", "engine", "model", "state", "health", "port", "gpu", "vram", "up"):
        table.add_column(column, overflow="fold")
    for row in rows:
        healthy = row["health"] == "healthy"
        table.add_row(
            row["service"],
            row["engine"],
            row["model"] or "-",
            f"[green]{row['state']}[/]" if row["state"] == "running" else f"[red]{row['state']}[/]",
            row["health"] if healthy else f"[yellow]{row['health']}[/]",
            f"{row['port']}" if row["port"] else "-",
            ",".join(map(str, row["gpus"])) or "cpu",
            format_bytes(row["vram_budget_bytes"]) if row["vram_budget_bytes"] else "-",
            _duration(row["uptime_s"]),
        )
    out.print(table)


def logs(
    service: Annotated[str, typer.Argument(help="Service name.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end.")] = 100,
) -> None:
    """Print a service's container log."""
    import sys

    from aitherctl.ops.state import observe

    engine = runtime.docker()
    item = observe(engine).container(service)
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
