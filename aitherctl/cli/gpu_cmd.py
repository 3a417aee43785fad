"""`aitherctl gpu`: what NVML sees."""

from __future__ import annotations

from typing import Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import ExitCode


def gpu(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """GPUs, memory, utilisation, temperature, power and processes, as NVML reports them
    (the same numbers as `nvidia-smi`). Exit 5 when there is no usable NVIDIA GPU."""
    from aitherctl.units import format_bytes

    out = Output(json_mode=json_out)
    inventory = runtime.gpu_inventory()
    if json_out:
        out.data(inventory)
    elif not inventory.available:
        out.print(f"no GPU: {inventory.error}")
    else:
        from rich.table import Table

        out.print(f"driver {inventory.driver_version}")
        table = Table(box=None, pad_edge=False)
        # The driver's own reservation (NVML v2, as nvidia-smi shows it): neither used nor free.
        reserved = any(item.memory_reserved_bytes for item in inventory.gpus)
        columns = (
            "gpu",
            "name",
            "memory used",
            *(["driver reserved"] if reserved else []),
            "util",
            "temp",
            "power",
            "processes",
        )
        for column in columns:
            table.add_column(column)
        for item in inventory.gpus:
            table.add_row(
                str(item.index),
                item.name,
                f"{format_bytes(item.memory_used_bytes)} / {format_bytes(item.memory_total_bytes)}",
                *([format_bytes(item.memory_reserved_bytes)] if reserved else []),
                f"{item.utilization_pct:.0f}%" if item.utilization_pct is not None else "N/A",
                f"{item.temperature_c:.0f}°C" if item.temperature_c is not None else "N/A",
                f"{item.power_w:.0f} W" if item.power_w is not None else "N/A",
                ", ".join(f"{p.pid} ({format_bytes(p.used_bytes)})" for p in item.processes) or "-",
            )
        out.print(table)
    if not inventory.available:
        raise typer.Exit(int(ExitCode.REFUSED))


def register(app: typer.Typer) -> None:
    app.command("gpu")(gpu)
