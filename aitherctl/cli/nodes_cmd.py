"""`aitherctl nodes`: the GPUs this machine rented (state, price per hour, age, cost so far),
and `nodes create`, `nodes destroy` and `nodes recover` (instances found at the provider with
this machine's label but no record here: after a crash, destroy or adopt them)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import AitherError, NotFoundError, UsageError

if TYPE_CHECKING:
    from aitherctl.nodes.operations import NodeView, Survey
    from aitherctl.nodes.provider import Provider
    from aitherctl.nodes.records import NodeRecords

nodes_app = typer.Typer(
    help="Rented GPU nodes: list them (state, price per hour, age, cost so far), create, "
    "destroy, and recover the ones a crash left unknown.",
    invoke_without_command=True,
)
# The clock ages and costs are counted on (tests fix it, so the output is exact).
now: Callable[[], float] = time.time
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def provider() -> Provider:
    """Vast.ai from `$VAST_URL` and `$VAST_API_KEY` (tests point them at the contract double)."""
    from aitherctl.nodes.operations import provider_for

    return provider_for("vast")


def _survey(
    records: NodeRecords, source: Provider | None = None, *, include_gone: bool = False
) -> Survey:
    from aitherctl.nodes.operations import Survey, survey
    from aitherctl.nodes.records import machine_name

    if not records.all() and not os.environ.get("VAST_API_KEY"):
        # Never rented here, and no key to ask with: nothing can be running in our name.
        return Survey(())
    return survey(
        source or provider(),
        records,
        machine=machine_name(),
        include_gone=include_gone,
        clock=now,
    )


def _accrue(records: NodeRecords) -> None:
    """Nodes' cost so far into the usage ledger (the daily cap counts it with API spend)."""
    from aitherctl.nodes.operations import accrue
    from aitherctl.routing.ledger import Ledger

    if records.all():
        accrue(records, Ledger(), clock=now)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "N/A"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _price(value: float | None) -> str:
    return "N/A" if value is None else f"${value:.3f}"


def _view_json(view: NodeView) -> dict[str, object]:
    record = view.record
    return {
        "node": view.name,
        "state": view.state.value,
        "record": record.id if record else None,
        "profile": record.profile if record else None,
        "instance_id": view.instance_id,
        "provider_status": view.instance.status.value if view.instance else None,
        "price_per_hour_usd": view.price_per_hour_usd,
        "age_s": None if view.age_s is None else round(view.age_s, 3),
        "cost_usd": round(view.cost_usd, 6),
        "url": record.url if record else None,
        "adopted": record.adopted if record else False,
    }


def _print_views(out: Output, found: Survey) -> None:
    from rich.table import Table

    if found.provider_error:
        out.warn(f"could not ask the provider ({found.provider_error}): showing the records only")
    if not found.views:
        out.print("no nodes", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("node", "state", "instance", "$/h", "age", "cost", "profile"):
        table.add_column(
            column, no_wrap=True, justify="right" if column in ("$/h", "cost") else "left"
        )
    for view in found.views:
        table.add_row(
            view.name,
            view.state.value,
            view.instance_id or "-",
            _price(view.price_per_hour_usd),
            _age(view.age_s),
            f"${view.cost_usd:.4f}",
            view.record.profile if view.record else "-",
        )
    out.print(table, soft_wrap=False)
    if found.unknown:
        count = len(found.unknown)
        out.warn(
            f"{count} instance{'s' if count > 1 else ''} with this machine's label but no record "
            "here (a crash?): still paying; `aitherctl nodes recover` destroys or adopts "
            f"{'them' if count > 1 else 'it'}"
        )


def warn_unknown_nodes(out: Output) -> None:
    """For `aitherctl recover`: one warning line per kind of trouble with rented nodes (an
    instance with this machine's label and no record, or a provider that cannot be asked while
    records are open); nothing when this machine never rented one."""
    from aitherctl.nodes.records import NodeRecords

    records = NodeRecords()
    found = _survey(records)
    if found.provider_error and any(record.live for record in records.all()):
        out.warn(f"rented nodes: could not ask the provider ({found.provider_error})")
    if found.unknown:
        count = len(found.unknown)
        out.warn(
            f"{count} rented instance{'s' if count > 1 else ''} with this machine's label but no "
            "record here: still paying; `aitherctl nodes recover` destroys or adopts "
            f"{'them' if count > 1 else 'it'}"
        )


@nodes_app.callback()
def nodes(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the nodes this machine rented, from its records and the provider's own list (by
    label): state, price per hour, age and cost so far. An instance with this machine's label
    but no record (a crash) is listed as `unknown`."""
    if ctx.invoked_subcommand is not None:
        return
    from aitherctl.nodes.records import NodeRecords

    out = Output(json_mode=json_out)
    records = NodeRecords()
    found = _survey(records)
    _accrue(records)
    if json_out:
        out.data(
            {
                "nodes": [_view_json(view) for view in found.views],
                "unknown": len(found.unknown),
                "provider_error": found.provider_error,
            }
        )
        return
    _print_views(out, found)


@nodes_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A node of the profile's `nodes:`.")],
    profile_name: Annotated[
        str, typer.Option("--profile", "-p", help="The profile that declares the node.")
    ],
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rent the cheapest offer that matches the node and start its engine there (paid by the
    second until it is destroyed)."""
    from aitherctl.nodes.operations import accrue, create_node, spent_today_usd
    from aitherctl.nodes.records import NodeRecords, machine_name
    from aitherctl.routing.ledger import Ledger

    out = Output(json_mode=json_out)
    profile = runtime.catalog().load(profile_name)
    node = profile.nodes.get(name)
    if node is None:
        known = ", ".join(sorted(profile.nodes)) or "none"
        raise NotFoundError(f"profile {profile.name!r} has no node {name!r} (it has: {known})")
    if not out.confirm(
        f"Rent a {node.gpu} on {node.provider} for node {name!r} (at most "
        f"${node.max_price_per_hour_usd:.3f}/h until destroyed)?",
        assume_yes=yes,
    ):
        raise typer.Exit(1)
    records, ledger = NodeRecords(), Ledger()
    accrue(records, ledger, clock=now)  # the cap counts every node up to now
    spent = spent_today_usd(ledger, clock=now)
    cloud = profile.cloud
    if cloud is not None and cloud.warn_at_usd <= spent < cloud.daily_cap_usd:
        out.warn(
            f"today's spend ${spent:.4f} is past {cloud.warn_share:.0%} of the cloud cap "
            f"${cloud.daily_cap_usd:.2f}"
        )
    record = create_node(
        provider(),
        records,
        profile=profile.name,
        node=node,
        machine=machine_name(),
        cloud=cloud,
        spent_today_usd=spent,
        clock=now,
    )
    if json_out:
        out.data({"record": record.id, "instance_id": record.instance_id, "state": record.state})
        return
    out.print(
        f"created {name}: instance {record.instance_id} at "
        f"{_price(record.price_per_hour_usd)}/h (booting)",
        markup=False,
    )
    out.print(f"`aitherctl nodes` shows it, `aitherctl nodes destroy {name}` ends it", markup=False)


def _matches(view: NodeView, target: str) -> bool:
    record = view.record
    return target in (view.name, view.instance_id, record.id if record else None)


@nodes_app.command("destroy")
def destroy_cmd(
    target: Annotated[
        str | None, typer.Argument(help="A node name, instance id or record id.")
    ] = None,
    all_nodes: Annotated[bool, typer.Option("--all", help="Every node of this machine.")] = False,
    yes: YesOpt = False,
) -> None:
    """Destroy nodes (their storage too: a stopped instance still pays for it)."""
    from aitherctl.nodes.operations import destroy
    from aitherctl.nodes.records import NodeRecords

    if (target is None) == (not all_nodes):
        raise UsageError("name a node (or an instance id), or pass --all")
    out = Output()
    records = NodeRecords()
    source = provider()
    found = _survey(records, source)
    if found.provider_error:
        raise AitherError(f"cannot destroy: {found.provider_error}")
    chosen = [v for v in found.views if all_nodes or _matches(v, target or "")]
    if not chosen:
        if all_nodes:
            out.print("no nodes to destroy", markup=False)
            return
        raise NotFoundError(f"no node {target!r} (see `aitherctl nodes`)")
    names = ", ".join(f"{v.name} ({v.instance_id or 'no instance yet'})" for v in chosen)
    if not out.confirm(f"Destroy {names}?", assume_yes=yes):
        raise typer.Exit(1)
    for view in chosen:
        record = destroy(source, records, view, clock=now)
        out.print(
            f"destroyed {view.name} ({view.instance_id or 'never created'}): "
            f"${record.cost_usd(now()):.4f} in all",
            markup=False,
        )
    _accrue(records)


@nodes_app.command("recover")
def recover(
    destroy_them: Annotated[
        bool, typer.Option("--destroy", help="Destroy every unknown instance.")
    ] = False,
    adopt_them: Annotated[
        bool, typer.Option("--adopt", help="Keep every unknown instance (give it a record).")
    ] = False,
    yes: YesOpt = False,
) -> None:
    """Find the instances this machine made that it has no record of (a crash, `kill -9`, a
    reboot right after a create) and destroy or adopt them. Records whose instance the
    provider no longer has are closed."""
    from aitherctl.nodes.operations import adopt, destroy
    from aitherctl.nodes.records import NodeRecords

    if destroy_them and adopt_them:
        raise UsageError("pass --destroy or --adopt, not both")
    out = Output()
    records = NodeRecords()
    source = provider()
    found = _survey(records, source)
    if found.provider_error:
        raise AitherError(f"cannot recover: {found.provider_error}")
    if not found.unknown:
        out.print("nothing to recover: every instance of this machine has its record", markup=False)
        return
    for view in found.unknown:
        what = f"{view.name} (instance {view.instance_id}, {_price(view.price_per_hour_usd)}/h)"
        if destroy_them or adopt_them:
            if not out.confirm(f"{'Destroy' if destroy_them else 'Adopt'} {what}?", assume_yes=yes):
                continue
            keep = adopt_them
        else:
            if not out.interactive:
                raise UsageError(
                    "standard input is not a terminal: pass --destroy or --adopt (and --yes)"
                )
            keep = not out.confirm(f"Destroy {what}? (no: adopt it)", assume_yes=False)
        if keep:
            adopt(source, records, view, clock=now)
            out.print(f"adopted {what}", markup=False)
        else:
            destroy(source, records, view, clock=now)
            out.print(f"destroyed {what}", markup=False)
    _accrue(records)


def register(app: typer.Typer) -> None:
    app.add_typer(nodes_app, name="nodes")
