"""`aitherctl pull`: the models a profile's services need, downloaded before any switch
(`aitherctl.models.pull`); `aitherctl models` and `models rm`: what is on this machine
(`aitherctl.models.inventory`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import RefusedError, UsageError

if TYPE_CHECKING:
    from rich.table import Table

    from aitherctl.models.local_model import ModelListing
    from aitherctl.models.pull_model import PullEvent
    from aitherctl.profiles.catalog import ProfileCatalog

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON event per line on stdout.")]
PLAIN_PROGRESS_EVERY_S = 10.0  # without a terminal, a progress line at most this often


def _profile_and_services(
    catalog: ProfileCatalog, names: list[str], profile: str | None
) -> tuple[str, list[str] | None]:
    """`pull PROFILE`, `pull SERVICE...` (of --profile or the active profile), or `pull`."""
    if profile is None and len(names) == 1 and names[0] in catalog.names():
        return names[0], None
    if profile is None:
        profile = os.environ.get("AITHER_GPU_PROFILE")
    if profile is None:
        from aitherctl.switching.state import observe

        state = observe(runtime.docker())
        profile = state.active_profile or state.last_profile
    if not profile:
        raise UsageError("no active profile: name one (`aitherctl pull PROFILE`) or pass --profile")
    return profile, names or None


class _Progress:
    """Each event as a line on stderr; on a terminal a file's progress rewrites its line."""

    def __init__(self, out: Output, json_mode: bool) -> None:
        self.out = out
        self.json_mode = json_mode
        self.terminal = sys.stderr.isatty()
        self.clock = time.monotonic
        self.last_plain = 0.0

    def __call__(self, event: PullEvent) -> None:
        from aitherctl.models.pull_model import PullPhase, progress_line

        if self.json_mode:
            body = {"event": event.phase.value, **_event_json(event)}
            sys.stdout.write(json.dumps(body) + "\n")
            sys.stdout.flush()
            return
        if self.out.quiet:
            return
        # Only the live line is rewritten in place: it must not wrap.
        live = self.terminal and event.phase is PullPhase.PROGRESS
        line = progress_line(event, shutil.get_terminal_size().columns if live else None)
        if event.phase is PullPhase.PROGRESS:
            if self.terminal:
                sys.stderr.write(f"\r{line}\x1b[K")
                sys.stderr.flush()
                return
            now = self.clock()
            if now - self.last_plain < PLAIN_PROGRESS_EVERY_S:
                return
            self.last_plain = now
        elif self.terminal and event.phase is PullPhase.DONE:
            line = f"\r{line}\x1b[K"
        self.out.info(line)


def _event_json(event: PullEvent) -> dict[str, Any]:
    return {
        "service": event.service,
        "file": event.file,
        "done_bytes": event.done_bytes,
        "total_bytes": event.total_bytes,
        "rate_bytes_per_s": event.rate_bytes_per_s,
        "eta_s": event.eta_s,
        "resumed_from_bytes": event.resumed_from_bytes,
        "note": event.note,
    }


def pull(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="A profile, or services of the active profile (default: the active profile).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="The profile of the services named.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Download the models a profile's services need into the places their engines read (the
    Hugging Face cache for vLLM, a llama.cpp service's `source:` file at its `model` path),
    with progress, resuming an interrupted download. HF_TOKEN is sent for gated models."""
    from aitherctl.models.hub import HubClient
    from aitherctl.models.pull import pull as run_pull
    from aitherctl.models.pull import pull_targets
    from aitherctl.models.pull_model import NotPullable, PullTarget
    from aitherctl.units import format_bytes

    out = Output(json_mode=json_out)
    catalog = runtime.catalog()
    name, services = _profile_and_services(catalog, list(names or []), profile)
    loaded = catalog.load(name)
    engines: list[Any] = []

    def volume_folder(volume: str) -> str:
        if not engines:
            engines.append(runtime.docker())
        return str(engines[0].volume_folder(volume))

    found = pull_targets(loaded, services, volume_folder)
    targets = [item for item in found if isinstance(item, PullTarget)]
    skipped = [item for item in found if isinstance(item, NotPullable)]
    for item in skipped:
        if not json_out:
            out.warn(f"service {item.service!r}: not pulled: {item.reason}")
    hub = HubClient.open()
    progress = _Progress(out, json_out)
    try:
        results = run_pull(targets, hub, progress)
    except KeyboardInterrupt as exc:
        exc.summary = "the download stopped; `aitherctl pull` continues it"  # type: ignore[attr-defined]
        raise
    finally:
        hub.close()
    missing = [item for item in skipped if item.missing]
    if json_out:
        document = {
            "event": "result",
            "profile": loaded.name,
            "pulled": [
                {"service": r.service, "repo": r.repo, "destination": r.destination,
                 "downloaded_bytes": r.downloaded_bytes, "files": r.files,
                 "already_present": r.already_present}
                for r in results
            ],
            "not_pulled": [
                {"service": s.service, "reason": s.reason, "missing": s.missing} for s in skipped
            ],
        }  # fmt: skip
        sys.stdout.write(json.dumps(document) + "\n")
    else:
        for result in results:
            what = (
                "already there"
                if result.already_present
                else f"{format_bytes(result.downloaded_bytes)} downloaded"
            )
            out.print(f"{result.service}: {what}: {result.destination}", markup=False)
    if missing:
        names_text = ", ".join(repr(item.service) for item in missing)
        raise RefusedError(f"no model could be pulled for {names_text} (see above)")


models_app = typer.Typer(
    help="The models on this machine that the profiles point at (and the others beside them).",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _listing() -> ModelListing:
    """Every profile's models, with whether the services that use them run now."""
    from aitherctl.errors import AitherError, NotFoundError
    from aitherctl.models.inventory import list_models, running_services

    catalog = runtime.catalog()
    profiles = []
    notes = []
    for name in catalog.names():
        try:
            profiles.append(catalog.load(name, expand=False))
        except AitherError:
            notes.append(f"profile {name}: not readable (see `aitherctl profile validate`)")
    engines: list[Any] = []
    running: set[tuple[str, str]] | None
    try:
        engines.append(runtime.docker())
        running = running_services(engines[0].list_managed())
    except AitherError as exc:
        running = None
        notes.append(f"whether services run is unknown: {exc.message}")

    def volume_folder(volume: str) -> str | None:
        if not engines:
            raise UsageError("the Docker engine cannot be reached")
        try:
            return str(engines[0].volume_folder(volume, create=False))
        except NotFoundError:
            return None

    import httpx

    from aitherctl.models.ollama_pull import ollama_sizes

    with httpx.Client(timeout=10.0) as client:
        listing = list_models(
            profiles, volume_folder, running, lambda base: ollama_sizes(client, base)
        )
    from dataclasses import replace

    from aitherctl.models.inventory import with_last_used
    from aitherctl.routing.ledger import Ledger

    try:
        listing = with_last_used(listing, profiles, Ledger().last_local_use())
    except AitherError as exc:
        notes.append(f"when models were last used is unknown: {exc.message}")
    return replace(listing, notes=(*notes, *listing.notes))


def models_table(listing: ModelListing, now: float | None = None) -> Table:
    """One row per model: name, engine, size on disk, state, the services that use it, and how
    long ago one of them last answered a request (`-`: never, as far as the ledger knows)."""
    from rich.table import Table

    from aitherctl.units import format_bytes, format_duration

    now = time.time() if now is None else now
    table = Table(box=None, pad_edge=False)
    for column in ("model", "engine", "size", "state", "used by", "last used"):
        fixed = column in ("engine", "size", "state", "last used")
        table.add_column(column, no_wrap=fixed, overflow="fold")
    for model in listing.models:
        used = ", ".join(use.label for use in model.used_by) or "-"
        last = (
            f"{format_duration(max(0.0, now - model.last_used_ts))} ago"
            if model.last_used_ts is not None
            else "-"
        )
        table.add_row(
            model.name, model.engine, format_bytes(model.size_bytes), model.state.value, used,
            last,
        )  # fmt: skip
    return table


def _listing_json(listing: ModelListing) -> dict[str, Any]:
    return {
        "models": [
            {"name": m.name, "engine": m.engine, "kind": m.kind.value, "path": m.path,
             "size_bytes": m.size_bytes, "state": m.state.value,
             "last_used_ts": m.last_used_ts,
             "used_by": [{"profile": u.profile, "service": u.service, "running": u.running}
                         for u in m.used_by]}
            for m in listing.models
        ],
        "notes": list(listing.notes),
    }  # fmt: skip


@models_app.callback()
def models(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """The models on this machine that the profiles point at (and the others beside them):
    engine, size on disk, state, and the profiles' services that use them."""
    if ctx.invoked_subcommand is not None:
        return
    out = Output(json_mode=json_out)
    listing = _listing()
    if json_out:
        out.data(_listing_json(listing))
        return
    for note in listing.notes:
        out.warn(note)
    if not listing.models:
        out.info("no models on this machine yet: `aitherctl pull PROFILE` downloads them")
        return
    out.print(models_table(listing))


@models_app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="The model: its name as listed, or its path.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Delete a model's files (refused while a running service uses it); an Ollama model
    through its server."""
    from aitherctl.models.inventory import find_model, removal_refusal, remove_model
    from aitherctl.units import format_bytes

    out = Output(json_mode=json_out)
    model = find_model(_listing(), name)
    refusal = removal_refusal(model)
    if refusal is not None:
        raise RefusedError(refusal)
    if not out.confirm(
        f"delete {model.name} ({format_bytes(model.size_bytes)}, {model.path})?", assume_yes=yes
    ):
        raise typer.Exit(1)
    import httpx

    from aitherctl.models.ollama_pull import ollama_delete

    with httpx.Client(timeout=30.0) as client:
        remove_model(model, lambda base, name: ollama_delete(client, base, name))
    if json_out:
        out.data({"removed": model.name, "path": model.path, "size_bytes": model.size_bytes})
    else:
        out.print(f"removed {model.name}: {format_bytes(model.size_bytes)} freed", markup=False)


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
    app.add_typer(models_app, name="models")
