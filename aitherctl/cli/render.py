"""Rich renderings shared by several commands."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from aitherctl.switching.plan import Action, Plan
from aitherctl.units import format_bytes

ACTION_STYLE = {
    Action.KEEP: "dim",
    Action.RECREATE: "yellow",
    Action.STOP: "red",
    Action.START: "green",
    Action.RESUME: "cyan",
    Action.RESTART: "yellow",
}


def action_style(action: Action) -> str:
    """Every action has a style; one added later renders plain rather than crash a command."""
    return ACTION_STYLE.get(action, "")


def plan_table(plan: Plan, hosts: Sequence[str] | None = None) -> Table:
    """The plan, one row per step; `hosts` (one per step) adds a host column."""
    table = Table(
        title=f"plan → {plan.profile}",
        title_justify="left",
        box=None,
        pad_edge=False,
        # A profile with no services (only endpoints, or none yet) and nothing of it running.
        caption=None if plan.steps else "nothing to start, keep or stop",
        caption_justify="left",
    )
    columns = ("action", "service", "engine", "port", "gpu", "vram", "why")
    for column in ("host", *columns) if hosts else columns:
        # Every column whole but the reason, which wraps between words in what is left.
        table.add_column(column, no_wrap=column != "why", overflow="fold")
    for index, step in enumerate(plan.steps):
        spec, current = step.target, step.current
        engine = spec.engine.value if spec else (current.engine if current else "")
        port = spec.host_port if spec else (current.port if current else None)
        gpus = spec.gpus if spec else (current.gpus if current else ())
        vram = spec.vram_bytes if spec else (current.vram_bytes if current else None)
        table.add_row(
            *((hosts[index],) if hosts else ()),
            Text(step.action.value, style=action_style(step.action)),
            step.service,
            engine,
            str(port or ""),
            ",".join(map(str, gpus)) or "cpu",
            format_bytes(vram) if vram is not None else "-",
            step.reason,
        )
    return table
