"""`aitherctl monitor`: the live, interactive view (Textual)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def monitor(
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.2, help="Seconds between refreshes.")
    ] = 1.0,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="Do not read NVML.")] = False,
    no_docker: Annotated[
        bool, typer.Option("--no-docker", help="Host and GPUs only; no containers, no actions.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.05, help="Seconds to wait for each server's metrics."),
    ] = 0.5,
) -> None:
    """GPUs (VRAM against budgets, utilisation, temperature, power), services (state, VRAM,
    queue, tokens/s), GPU memory held outside aitherctl, host CPU/RAM/swap and recent events.

    Keys: p switch profile, r restart, s stop, l logs, u free VRAM, o sort, ? help, q quit.
    Without a terminal use `aitherctl status --watch`.
    """
    from aitherctl.errors import UsageError

    if not sys.stdout.isatty():
        raise UsageError("monitor needs a terminal; use `aitherctl status --watch` in scripts")
    from aitherctl.tui.app import build_monitor_app

    app = build_monitor_app(
        interval_s=interval, use_gpu=not no_gpu, use_docker=not no_docker, scrape_timeout_s=timeout
    )
    try:
        app.run()
    finally:
        close = getattr(app.source, "close", None)  # the other hosts' connections
        if close is not None:
            close()


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
