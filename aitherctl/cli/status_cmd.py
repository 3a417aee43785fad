"""`aitherctl status`: one look at the stack (Rich), `--json` for scripts, `--watch` for logs."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from aitherctl.cli.output import Output


def status(  # noqa: PLR0917 - Typer passes options by position
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON document on stdout (schema 1); with --watch, one per line."
        ),
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Print plain lines every --interval seconds (any terminal, fit for logs).",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.2, help="Seconds between --watch readings.")
    ] = 2.0,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop --watch after this many readings.")
    ] = None,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="Do not read NVML.")] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.05, help="Seconds to wait for each server's metrics."),
    ] = 1.0,
) -> None:
    """Show the active profile, GPUs, services, their load and the host, once or repeatedly.
    With --watch --json, one JSON object per line (NDJSON), one line per reading.

    Exit code 0 even when Docker or the GPU cannot be read: that is part of the status shown
    (`docker_error`, `gpu_error` in --json).
    """
    from aitherctl.cli import runtime
    from aitherctl.monitor.model import snapshot_to_dict

    output = Output(json_mode=json_output)
    collector = runtime.monitor_collector(
        use_gpu=not no_gpu, scrape_timeout_s=timeout, wait_for_remote_gpus=not watch
    )
    if not watch:
        snapshot = collector.collect()
        collector.close()
        if json_output:
            output.data(snapshot_to_dict(snapshot))
        else:
            from aitherctl.tui.render import status_renderable

            # Laid out for the terminal's width here (never left to the terminal to wrap
            # mid-word, as the console's soft wrapping would).
            output.print(status_renderable(snapshot), soft_wrap=False)
        return

    from aitherctl.tui.render import plain_lines

    done = 0
    said: dict[str, str] = {}  # errors already printed: each is said once, until it changes
    try:
        while True:
            started = time.monotonic()
            snapshot = collector.collect()
            if json_output:
                # NDJSON: one compact object per line, flushed, so `| jq -c` or a log shipper
                # gets each reading as it is taken.
                output.out.file.write(json.dumps(snapshot_to_dict(snapshot), default=str) + "\n")
                output.out.file.flush()
            else:
                for line in plain_lines(snapshot, said):
                    output.print(line, markup=False, highlight=False)
            done += 1
            if count is not None and done >= count:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return
    except BrokenPipeError:
        # The reader went away (`status --watch --json | head -n 2`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    finally:
        collector.close()


def register(app: typer.Typer) -> None:
    app.command("status")(status)
