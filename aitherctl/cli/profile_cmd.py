"""`aitherctl profile list | show | validate | plan | switch | export`."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import (
    AitherError,
    ConfigError,
    DockerUnavailableError,
    ExitCode,
    RefusedError,
)

if TYPE_CHECKING:
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.profiles.profile import Profile
    from aitherctl.switching.images import ImageStatus
    from aitherctl.switching.switch import Prepared

profile_app = typer.Typer(
    help="Declare GPU profiles and switch between them.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _complete_profile(incomplete: str) -> list[str]:
    try:
        return [name for name in runtime.catalog().names() if name.startswith(incomplete)]
    except Exception:
        return []


ProfileArg = Annotated[
    str, typer.Argument(help="Profile name (or a .yaml path).", autocompletion=_complete_profile)
]


@profile_app.command("list")
def list_profiles(json_out: JsonOpt = False) -> None:
    """List the profiles aitherctl knows (built-in and the user's)."""
    out = Output(json_mode=json_out)
    catalog = runtime.catalog()
    active = _active_profile_name(catalog)
    rows = []
    for entry in catalog.entries():
        try:
            # As written: a `${VAR}` not set here does not make the profile look broken.
            profile = catalog.load_file(entry.path, expand=False)
            error = None
        except AitherError as exc:
            profile, error = None, exc.message
        rows.append(
            {
                "name": entry.name,
                "path": str(entry.path),
                "source": "built-in"
                if entry.builtin
                else ("user (overrides built-in)" if entry.overrides_builtin else "user"),
                "description": profile.description if profile else None,
                "services": sorted(profile.resident) if profile else [],
                "on_demand": sorted(set(profile.services) - set(profile.resident))
                if profile
                else [],
                "error": error,
                "active": entry.name == active,
            }
        )
    if json_out:
        out.data({"profiles": rows})
        return
    from rich.table import Table

    cells = []
    for row in rows:
        services = ", ".join(row["services"])  # type: ignore[arg-type]
        if row["on_demand"]:
            services += " (+ on demand: " + ", ".join(row["on_demand"]) + ")"  # type: ignore[arg-type]
        description = (row["error"] and f"[invalid] {row['error']}") or (row["description"] or "")
        cells.append(
            (
                "*" if row["active"] else "",
                str(row["name"]),
                str(row["source"]),
                services,
                str(description).split(". ")[0],
            )
        )

    # Names and sources whole; services wrap between names; the description is one line, cut
    # with "…" to what is left of the terminal (the whole of it is `profile show NAME`'s).
    def widest(index: int, header: str) -> int:
        return max([len(header), *(len(cell[index]) for cell in cells)])

    fixed = 1 + widest(1, "profile") + widest(2, "source") + 4 * 2
    room = out.out.width - fixed
    services_w = min(widest(3, "services"), max(len("services"), room - 30))
    description_w = max(len("description"), room - services_w)
    table = Table(box=None, pad_edge=False)
    table.add_column(" ", no_wrap=True)
    table.add_column("profile", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("services", max_width=services_w)
    table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=description_w)
    for cell in cells:
        table.add_row(*cell)
    out.print(table, soft_wrap=False)
    if active is not None:
        out.print(f"* active on this Docker engine: {active}", markup=False)


def _active_profile_name(catalog: ProfileCatalog) -> str | None:
    """The profile whose services run on the engine (None without an engine or a profile)."""
    from aitherctl.switching.state import observe

    try:
        reader = runtime.docker_reader()
    except AitherError:
        return None
    try:
        return observe(reader, catalog).active_profile
    except AitherError:
        return None
    finally:
        reader.close()


@profile_app.command("show")
def show(name: ProfileArg, json_out: JsonOpt = False) -> None:
    """Show a profile after `extends` is resolved. Secrets are never printed: `${VAR}` references
    are shown as written, and values whose name looks secret (TOKEN, KEY, PASSWORD, ...) hidden."""
    from aitherctl.profiles.redact import redact_args, redact_env, redact_mapping, redact_url

    out = Output(json_mode=json_out)
    profile = runtime.catalog().load(name, expand=False)
    services = [
        {
            "name": svc.name,
            "engine": svc.engine.value,
            "image": svc.image,
            "model": redact_url(svc.model) if svc.model else None,
            "served_model": svc.model_name,
            "port": svc.port,
            "bind": svc.bind,
            "gpus": list(svc.gpus),
            "vram": str(svc.vram) if svc.vram else None,
            "role": svc.role,
            "pinned": svc.pinned,
            "on_demand": svc.on_demand,
            "args": redact_args(svc.args),
            "env": redact_env(svc.env),
            "volumes": [str(volume) for volume in svc.volumes],
        }
        for svc in profile.services.values()
    ]
    data = {
        "name": profile.name,
        "description": profile.description,
        "source": profile.source,
        "extends": profile.extends,
        "gpu_reserve": str(profile.gpu_reserve),
        "services": services,
        "routing": redact_mapping(profile.routing),
        "endpoints": redact_mapping(profile.endpoints),
        "nodes": nodes_json(profile),
    }
    if json_out:
        out.data(data)
        return
    from rich.table import Table

    # Lines wrap between words at the terminal's width (never mid-word, as a terminal would).
    out.print(f"[bold]{profile.name}[/]  ({profile.source})", soft_wrap=False)
    if profile.extends:
        out.print(f"extends: {profile.extends}")
    if profile.description:
        out.print(profile.description, soft_wrap=False, markup=False)
    out.print(f"GPU reserve: {profile.gpu_reserve}")
    rows: list[tuple[str, ...]] = []
    for svc, row in zip(profile.services.values(), services, strict=True):
        flags = ", ".join(
            f for f, on in (("pinned", svc.pinned), ("on demand", svc.on_demand)) if on
        )
        rows.append(
            (
                svc.name,
                svc.engine.value,
                str(row["model"] or "-"),
                str(svc.port),
                svc.gpu_label,
                str(svc.vram) if svc.vram else "-",
                svc.role or "-",
                flags,
            )
        )
    columns = ("service", "engine", "model", "port", "gpu", "vram", "role", "flags")
    widths = [
        max([len(name), *(len(cells[i]) for cells in rows)]) for i, name in enumerate(columns)
    ]
    # Model names are never split: where the table with them is wider than the terminal, they
    # go below it, one line each.
    models_apart = sum(widths) + 2 * (len(columns) - 1) > out.out.width
    table = Table(box=None, pad_edge=False)
    for column in columns:
        if not (models_apart and column == "model"):
            table.add_column(column, no_wrap=column not in ("flags", "role"))
    for cells in rows:
        table.add_row(*(cell for i, cell in enumerate(cells) if not (models_apart and i == 2)))
    out.print(table, soft_wrap=False)
    if models_apart:
        width = max(len(cells[0]) for cells in rows)
        for cells in rows:
            out.print(f"  {cells[0]:<{width}}  model {cells[2]}", markup=False, soft_wrap=False)
    for svc in profile.services.values():
        for key, value in redact_env(svc.env).items():
            out.print(f"  {svc.name}: env {key}={value}", markup=False, soft_wrap=False)
    for endpoint, spec in redact_mapping(profile.endpoints).items():
        if isinstance(spec, dict):
            where = spec.get("base_url", "?")
            key = f" (key from ${spec['api_key_env']})" if spec.get("api_key_env") else ""
            model = spec.get("model", "?")
            out.print(
                f"  endpoint {endpoint}: {model} at {where}{key}", markup=False, soft_wrap=False
            )
    if profile.nodes:
        from aitherctl.nodes.model import describe_nodes

        for line in describe_nodes(list(profile.nodes.values()), profile.cloud):
            out.print(line, markup=False, soft_wrap=False)


@profile_app.command("validate")
def validate(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="FILE|NAME",
            help="Profile files, or names as `show` and `switch` take them (default: every "
            "known profile).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check profiles: YAML, keys, types, budgets, ports, `extends`, `${VAR}`, routing, endpoints
    and budget, and that each GPU budget can hold its model's weights where the model is on this
    machine. Each problem is one line `file:line: message` on stderr; exit 3 if any."""
    from aitherctl.monitor.doctor import validate_profiles

    out = Output(json_mode=json_out)
    catalog = runtime.catalog()
    if files:
        # `validate dev` as `show dev` and `switch dev`: a name that is no file is the profile's.
        # A bare word that is neither gets the known names, as `show` does.
        paths = [
            f if f.exists() or f.suffix or len(f.parts) > 1 else catalog.find(str(f)) for f in files
        ]
    else:
        paths = [entry.path for entry in catalog.entries()]
    # A `vram: 30%` budget is checked against the model when this machine's GPUs are known.
    inventory = runtime.gpu_inventory()
    totals = {gpu.index: gpu.memory_total_bytes for gpu in inventory.gpus}
    results = validate_profiles(catalog, paths, gpu_totals=totals if inventory.available else None)
    if json_out:
        out.data(
            {
                "results": [
                    {
                        "path": str(result.path),
                        "name": result.name,
                        "ok": result.ok,
                        "error": result.problems[0] if result.problems else None,
                        "problems": list(result.problems),
                    }
                    for result in results
                ],
                "ok": all(result.ok for result in results),
            }
        )
    else:
        for result in results:
            if result.ok:
                out.print(f"ok      {result.name}  ({result.path})", markup=False)
            for problem in result.problems:
                out.err.print(problem, markup=False, highlight=False)
    if not all(result.ok for result in results):
        raise typer.Exit(int(ExitCode.INVALID_CONFIG))


def _prepare(name: str) -> tuple[Prepared, tuple[ImageStatus, ...] | None]:
    """The plan, and whether its images are on the engine or can be pulled (None without an
    engine to ask)."""
    from aitherctl.switching.images import plan_images
    from aitherctl.switching.switch import prepare, prepare_offline

    catalog = runtime.catalog()
    profile = catalog.load(name)
    try:
        engine = runtime.docker()
    except DockerUnavailableError as exc:
        # A new machine asks "would this profile fit my GPU?" before Docker is even set up.
        Output().warn(f"{exc.message}; planning as if nothing were running")
        return prepare_offline(profile, runtime.gpu_inventory()), None
    prepared = prepare(engine, profile, runtime.gpu_inventory(), catalog=catalog)
    return prepared, plan_images(engine, prepared.plan)


def nodes_json(profile: Profile | None) -> dict[str, object]:
    """The profile's rented nodes and the `cloud:` budget, for `plan --json` and `show --json`."""
    if profile is None:
        return {"nodes": [], "cloud": None}
    cloud = profile.cloud
    return {
        "nodes": [
            {
                "name": node.name,
                "provider": node.provider,
                "gpu": node.gpu,
                "num_gpus": node.num_gpus,
                "vram_bytes": node.vram.bytes if node.vram else None,
                "max_price_per_hour_usd": node.max_price_per_hour_usd,
                "disk_gb": node.disk_gb,
                "engine": node.engine.value,
                "image": node.image,
                "model": node.model,
                "port": node.port,
                "mode": node.mode.value,
                "wake_on": {"effort": node.wake_on.effort, "queue_depth": node.wake_on.queue_depth},
                "idle_after_s": node.idle_after_s,
            }
            for node in profile.nodes.values()
        ],
        "cloud": None
        if cloud is None
        else {
            "daily_cap_usd": cloud.daily_cap_usd,
            "warn_share": cloud.warn_share,
            "hard_stop": cloud.hard_stop,
        },
    }


GpuMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu-memory",
        metavar="SIZE",
        help="GPU memory to assume: 24GiB for every GPU, or 0=24GiB,1=48GiB.",
    ),
]


def _prepare_assumed(name: str, gpu_memory: str) -> Prepared:
    """The plan on GPUs that are not there: the sizes given, nothing running, nothing else on
    them ("would `dev` fit a 24 GB card?"), whatever this machine has."""
    from aitherctl.gpu.model import assumed_inventory
    from aitherctl.switching.export import parse_gpu_memory, require_totals
    from aitherctl.switching.switch import prepare_offline

    profile = runtime.catalog().load(name)
    indices = sorted({index for svc in profile.services.values() for index in svc.gpus})
    totals = parse_gpu_memory(gpu_memory, indices)
    require_totals(totals, indices)
    return prepare_offline(profile, assumed_inventory(totals))


@profile_app.command("plan")
def plan(name: ProfileArg, gpu_memory: GpuMemoryOpt = None, json_out: JsonOpt = False) -> None:
    """Show what `switch NAME` would do, and the VRAM arithmetic, without changing anything.
    With --gpu-memory, plan for GPUs of that size on an empty machine, without needing one."""
    from aitherctl.cli.plan_json import fits_json, plan_json
    from aitherctl.cli.render import plan_table
    from aitherctl.cli.switch_exec import on_demand_lines, vram_json
    from aitherctl.gpu.vram import describe_vram
    from aitherctl.models.check import short_context_warnings

    out = Output(json_mode=json_out)
    images: tuple[ImageStatus, ...] | None = None
    if gpu_memory is None:
        prepared, images = _prepare(name)
    else:
        prepared = _prepare_assumed(name, gpu_memory)
    unusable = [status for status in images or () if not status.usable]
    for warning in short_context_warnings(prepared.fits):
        out.warn(warning)
    if json_out:
        out.data(
            {
                **plan_json(prepared.plan),
                "vram": vram_json(prepared.vram),
                "models": fits_json(prepared.fits),
                "nodes": nodes_json(prepared.profile),
                "images": None
                if images is None
                else [
                    {
                        "image": status.image,
                        "present": status.present,
                        "pullable": status.present or status.pull_refusal is None,
                        "reason": status.pull_refusal,
                    }
                    for status in images
                ],
            }
        )
    else:
        out.print(plan_table(prepared.plan))
        for line in on_demand_lines(prepared):
            out.print(line, markup=False)
        for line in describe_vram(prepared.vram):
            out.print(line, markup=False)
        if prepared.fits:
            out.print("Models (an upper bound, before any download):", markup=False)
        from rich.markup import escape

        for fit in prepared.fits:
            out.wrapped(fit.summary(), lead=escape(f"  {fit.service:<20} "))
            if fit.estimate is not None:
                out.wrapped(fit.estimate.describe(), lead="    ")
        for status in images or ():
            if status.usable and not status.present:
                out.print(status.describe(), markup=False)
        if prepared.profile is not None and prepared.profile.nodes:
            from aitherctl.nodes.model import describe_nodes

            for line in describe_nodes(
                list(prepared.profile.nodes.values()), prepared.profile.cloud
            ):
                out.print(line, markup=False, soft_wrap=False)
    if unusable:
        # A switch would refuse: say so as it would, and exit as it would.
        out.error(
            unusable[0].describe().replace(": the switch would refuse", "; a switch refuses it"),
            "Build or load it (`docker load`), or give the service another `image`.",
        )
        raise typer.Exit(int(ExitCode.REFUSED))


@profile_app.command("switch")
def switch(  # noqa: PLR0917 - Typer passes options by keyword; click counts them
    name: ProfileArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    lock_timeout: Annotated[
        float, typer.Option("--lock-timeout", help="Seconds to wait for another switch.")
    ] = 900.0,
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
    """Move the machine to profile NAME: check VRAM and ports, touch only what differs, wait until
    every service answers, and roll back if anything fails (or on Ctrl-C, SIGTERM, SIGHUP)."""
    from aitherctl.cli.switch_exec import switch_command

    code = switch_command(
        name, dry_run=dry_run, yes=yes, lock_timeout=lock_timeout, no_pull=no_pull,
        json_out=json_out,
    )  # fmt: skip
    if code:
        raise typer.Exit(code)


class ExportFormat(StrEnum):
    COMPOSE = "compose"
    K8S = "k8s"


@profile_app.command("export")
def export(
    name: ProfileArg,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            "-f",
            help="compose (the default): a Compose file; k8s: Kubernetes manifests.",
        ),
    ] = ExportFormat.COMPOSE,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE (default: stdout).")
    ] = None,
    gpu_memory: Annotated[
        str | None,
        typer.Option(
            "--gpu-memory",
            metavar="SIZE",
            help="GPU memory when a container depends on it (a budget in bytes, ComfyUI): "
            "24GiB for every GPU, or 0=24GiB,1=48GiB.",
        ),
    ] = None,
) -> None:
    """Write profile NAME as a Compose file or as Kubernetes manifests, with the containers a
    switch runs (same images, arguments, environment, volumes). Warnings go to stderr."""
    from aitherctl.switching.export import export_profile, parse_gpu_memory

    out = Output()
    # As written: `${VAR}` references stay references (Compose reads them; Kubernetes gets them
    # from a Secret), so no value of the environment ends up in the file.
    profile = runtime.catalog().load(name, expand=False)
    totals = None
    if gpu_memory is not None:
        indices = sorted({index for svc in profile.services.values() for index in svc.gpus})
        totals = parse_gpu_memory(gpu_memory, indices)
    exported = export_profile(profile, fmt.value, totals)
    for warning in exported.warnings:
        out.warn(warning)
    if output is None:
        sys.stdout.write(exported.text)
        sys.stdout.flush()
        return
    output.write_text(exported.text)
    count = len(profile.services)
    out.info(f"wrote {output} ({fmt.value}, {count} service{'' if count == 1 else 's'})")


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app, name="profile")


__all__ = ["ConfigError", "RefusedError", "register"]
