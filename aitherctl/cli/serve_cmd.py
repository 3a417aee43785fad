"""`aitherctl serve`: run the scheduler's OpenAI-compatible endpoint in the foreground."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output

if TYPE_CHECKING:
    from aitherctl.profiles.profile import Profile
    from aitherctl.serve.app import Gateway, Stack


def serve(  # noqa: PLR0917 - Typer passes options by position
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (not loopback: API keys needed).")
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port to listen on (default: 8150)."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", help="Profile to serve (default: the active one)."),
    ] = None,
    keys_file: Annotated[
        Path | None,
        typer.Option(
            "--keys-file",
            help="API keys, one per line: KEY [interactive|normal|batch] [NAME]. Also "
            "$AITHER_API_KEYS (comma-separated). With keys, every request needs one.",
        ),
    ] = None,
    drain: Annotated[
        float,
        typer.Option("--drain", min=0.0, help="On SIGTERM, seconds to let requests finish."),
    ] = 30.0,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another name clients reach this machine by (the Host header; repeatable; "
            "also $AITHER_ALLOWED_HOSTS). IP addresses, localhost and the host name always work.",
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            help="A web page origin allowed to call the API, e.g. https://chat.example "
            "(repeatable, * wildcards; also $AITHER_ORIGINS). Loopback origins always are.",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No line per request on standard error.")
    ] = False,
) -> None:
    """Serve every model of the profile on one OpenAI-compatible endpoint that queues by
    priority, starts on-demand models and evicts idle ones (127.0.0.1:8150).

    POST /v1/chat/completions, /v1/completions and /v1/embeddings take `model`: a service,
    an endpoint, a tier or `auto` (the effort score picks the tier). Requests queue per backend
    by priority (header x-aither-priority or the body's `priority`: interactive, normal, batch);
    a service that is not running is started on the first request, evicting idle ones when
    memory is short. GET /v1/models, /health, /metrics (Prometheus), /events (a stream of the
    scheduler's decisions), /status. SIGTERM drains requests in flight, then exits; containers
    stay as they are. Bodies must be JSON (Content-Type: application/json); requests whose Host
    does not name this machine, or from web pages of other origins, are refused (403).

    Each request writes one line on standard error (time, client, model → backend, status,
    queue and load wait, tokens, duration; never the prompt or a key), and `serve` one line
    when it stops. One `serve` per Docker engine ($DOCKER_HOST): a second refuses to
    start (exit 8) unless given both another --port and another --profile.
    """
    import asyncio

    from aitherctl.serve.access import (
        ALLOWED_HOSTS_ENV,
        ORIGINS_ENV,
        access_policy,
        split_list,
    )
    from aitherctl.serve.access_log import AccessLog, stderr_line
    from aitherctl.serve.app import (
        DEFAULT_PORT,
        ServeOptions,
        build_gateway,
        check_bind,
        load_keys,
        machine_names,
        serve_forever,
    )
    from aitherctl.serve.discovery import refuse_second_serve, serve_state_file

    out = Output()
    refuse_second_serve(port, profile)
    port = port or DEFAULT_PORT
    keys = load_keys(keys_file, dict(os.environ))
    hosts = (*(allow_host or ()), *split_list(os.environ.get(ALLOWED_HOSTS_ENV)))
    origins = (*(allow_origin or ()), *split_list(os.environ.get(ORIGINS_ENV)))
    options = ServeOptions(
        host=host,
        port=port,
        drain_s=drain,
        keys=tuple(keys),
        allow_hosts=hosts,
        allow_origins=origins,
    )
    check_bind(options)
    chosen = _profile(profile)
    from aitherctl.profiles.machine_ram import refuse_impossible_ram

    refuse_impossible_ram(chosen)
    access = access_policy(host, machine_names(), hosts, origins)

    access_log = AccessLog(None if quiet else stderr_line)

    def build() -> tuple[Gateway, Stack]:
        return build_gateway(
            chosen,
            runtime.docker,
            runtime.gpu_inventory,
            keys=list(keys),
            access=access,
            access_log=access_log,
            log=stderr_line,  # node and budget news, with or without --quiet
        )

    def active(current: Profile) -> Profile | None:
        """The active profile, when it is not `current`: a switch made another one active, or
        the served profile's file was edited (`--profile` pins the one served)."""
        from aitherctl.errors import AitherError
        from aitherctl.routing.router import observe_stack

        name, _stack, _problem = observe_stack(runtime.docker_reader)
        try:
            profile = runtime.catalog().load(name or current.name)
        except AitherError:
            return None  # a file being edited may not parse yet: keep serving what we have
        return None if profile == current else profile

    served_at: list[tuple[str, float]] = []

    def ready(url: str) -> None:
        auth = f", {len(keys)} API key(s)" if keys else ""
        served_at.append((url, time.monotonic()))
        out.info(f"serving profile {chosen.name} on {url}/v1{auth} (Ctrl-C or SIGTERM to stop)")

    # The learned effort scorer (`model: auto`, and every `aitherctl run`) loads once, here,
    # not on the loop when the first request is waiting for it.
    from aitherctl.routing.static_embedding import learned_scorer

    learned_scorer()
    code = asyncio.run(
        serve_forever(
            build, options, ready, serve_state_file(port), active=None if profile else active
        )
    )
    if served_at:
        url, began = served_at[0]
        out.info(
            f"stopped serving on {url} after {time.monotonic() - began:.0f}s: "
            f"{access_log.summary()}"
        )
    if code:
        raise typer.Exit(code)


def _profile(explicit: str | None) -> Profile:
    from aitherctl.routing.router import resolve_profile

    chosen, _stack = resolve_profile(explicit, runtime.catalog(), runtime.docker_reader)
    return chosen


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
