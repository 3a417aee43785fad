"""`aitherctl doctor`: is this machine ready to run profiles? Checks: `aitherctl.monitor.doctor`."""

from __future__ import annotations

from typing import Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output


def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Check Docker, the NVIDIA container runtime, GPUs, profiles and their ports.
    Each profile mistake is one line `file:line: message`. Exit 3 when a profile is wrong,
    1 when another check fails (warnings do not fail)."""
    from aitherctl.monitor.doctor import run_doctor
    from aitherctl.switching.ports import port_is_free

    out = Output(json_mode=json_out)
    report = run_doctor(runtime.docker, runtime.gpu_inventory(), runtime.catalog(), port_is_free)
    if json_out:
        out.data(
            {
                "ok": report.ok,
                "checks": [
                    {"name": check.name, "status": check.status, "detail": check.detail}
                    for check in report.checks
                ],
                "problems": [p for check in report.checks for p in check.problems],
            }
        )
    else:
        marks = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for check in report.checks:
            out.wrapped(check.detail, lead=f"{marks[check.status]} {check.name:<15} ")
            for problem in check.problems:
                out.wrapped(problem, lead="     ")
    if report.exit_code:
        raise typer.Exit(int(report.exit_code))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
