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
    from collections.abc import Sequence

    from rich.table import Table

    from aitherctl.docker.engine import DockerEngine
    from aitherctl.docker.model_folders import HostFolders
    from aitherctl.models.local_model import ModelListing
    from aitherctl.models.pull_model import NotPullable, PullEvent, PullTarget
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.profiles.profile import Host, Profile, Service

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
        moving = event.phase in (PullPhase.PROGRESS, PullPhase.COPY)
        live = self.terminal and moving
        line = progress_line(event, shutil.get_terminal_size().columns if live else None)
        if event.phase is PullPhase.COPY and not event.done_bytes:
            moving = False  # a file's copy begins: its own line, as a download's start
        if moving:
            if self.terminal:
                sys.stderr.write(f"\r{line}\x1b[K")
                sys.stderr.flush()
                return
            now = self.clock()
            if now - self.last_plain < PLAIN_PROGRESS_EVERY_S:
                return
            self.last_plain = now
        elif self.terminal and event.phase in (PullPhase.DONE, PullPhase.COPIED):
            line = f"\r{line}\x1b[K"
        self.out.info(line)


def _event_json(event: PullEvent) -> dict[str, Any]:
    where = {"host": event.host} if event.host is not None else {}
    return {
        **where,
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
    from aitherctl.models.pull import pull_targets, settle_remote
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
    hosts, found = _host_folders(loaded, found)
    targets = [item for item in found if isinstance(item, PullTarget)]
    skipped = [item for item in found if isinstance(item, NotPullable)]
    for item in skipped:
        if not json_out:
            out.warn(f"service {item.service!r}: not pulled: {item.reason}")
    from aitherctl.models.downloads import end_download, report_download

    hub = HubClient.open()
    shown = _Progress(out, json_out)

    by_service = {t.service: t for t in targets}

    def progress(event: PullEvent) -> None:
        target = by_service.get(event.service)
        engine, model = (target.engine, target.repo) if target else (None, None)
        host = target.host if target else "local"
        report_download(host, event, engine, model)  # what the monitor shows
        shown(event)

    try:
        results = run_pull(settle_remote(targets, hosts), hub, progress, hosts=hosts)
    except KeyboardInterrupt as exc:
        exc.summary = "the download stopped; `aitherctl pull` continues it"  # type: ignore[attr-defined]
        raise
    finally:
        hub.close()
        for target in targets:
            end_download(target.host, target.service)
        for folders in hosts.values():
            folders.client.close()
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


def _host_folders(
    profile: Profile, found: list[PullTarget | NotPullable]
) -> tuple[dict[str, HostFolders], list[PullTarget | NotPullable]]:
    """The folders of each other host a target is on (its engine, and an image already there to
    copy with: the service's own, else another of its services'); a target whose host cannot
    be reached, or has none of those images, becomes a NotPullable saying so."""
    from aitherctl.docker.model_folders import HostFolders
    from aitherctl.errors import AitherError
    from aitherctl.models.pull_model import NotPullable, PullTarget

    hosts: dict[str, HostFolders] = {}
    refused: dict[str, str] = {}
    result: list[PullTarget | NotPullable] = []
    for item in found:
        if not isinstance(item, PullTarget) or not item.remote:
            result.append(item)
            continue
        name = item.host
        if name not in hosts and name not in refused:
            try:
                engine = _connect_host(profile.hosts[name])
            except AitherError as exc:
                refused[name] = exc.message
            else:
                own = profile.services[item.service].image
                image = own if own and engine.image_exists(own) else None
                image = image or _probe_image(engine, [profile], name)
                if image is None:
                    engine.close()
                    refused[name] = (
                        f"host {name!r}: none of its services' images is there to copy the model "
                        "with (`aitherctl profile switch` brings them)"
                    )
                else:
                    hosts[name] = HostFolders(engine.client, image, name)
        if name in refused:
            result.append(NotPullable(item.service, refused[name]))
        else:
            result.append(item)
    return hosts, result


models_app = typer.Typer(
    help="The models on this machine that the profiles point at (and the others beside them).",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _listing(loaded: list[Profile] | None = None) -> ModelListing:
    """Every profile's models, here and on the other hosts they name, with whether the services
    that use them run now. `loaded` receives the profiles read."""
    from aitherctl.errors import AitherError, NotFoundError
    from aitherctl.models.inventory import list_models, running_services

    catalog = runtime.catalog()
    profiles: list[Profile] = [] if loaded is None else loaded
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

    remote = _remote_listings(profiles)
    listing = replace(
        listing,
        models=(*listing.models, *(m for part in remote for m in part.models)),
        notes=(*listing.notes, *(n for part in remote for n in part.notes)),
    )
    try:
        listing = with_last_used(listing, profiles, Ledger().last_local_use())
    except AitherError as exc:
        notes.append(f"when models were last used is unknown: {exc.message}")
    return replace(listing, notes=(*notes, *listing.notes))


def _remote_hosts(profiles: list[Profile]) -> dict[str, Host]:
    """The other Docker hosts to look at: those the profiles' services name, and those the last
    multi-host switch left services on (`hosts.json`)."""
    from aitherctl.profiles.profile import LOCAL_HOST
    from aitherctl.switching.remembered_hosts import remembered_hosts

    hosts = dict(remembered_hosts())
    for profile in profiles:
        for service in profile.services.values():
            if service.host != LOCAL_HOST and service.host in profile.hosts:
                hosts.setdefault(service.host, profile.hosts[service.host])
    return hosts


def _probe_image(engine: DockerEngine, profiles: list[Profile], host: str) -> str | None:
    """An image already on `host` to look at its folders with: one of its services' (never
    pulled for this)."""
    images = sorted({s.image for p in profiles for s in p.services.values() if s.host == host})
    return next((image for image in images if image and engine.image_exists(image)), None)


def _connect_host(host: Host) -> DockerEngine:
    from aitherctl.docker.engine import DockerEngine

    return DockerEngine.connect_host(host.name, host.docker, host.address)


def _remote_listing(host: Host, profiles: list[Profile]) -> ModelListing:
    """The models in the folders the profiles' services mount on `host`, read there, and those
    its Ollama servers list (`GET /api/tags`, where this machine reaches them)."""
    import httpx

    from aitherctl.docker.model_folders import list_remote
    from aitherctl.errors import AitherError, NotFoundError
    from aitherctl.models.inventory import ollama_listing, remote_listing, running_services
    from aitherctl.models.local_model import ModelListing
    from aitherctl.models.ollama_pull import ollama_sizes
    from aitherctl.switching.readiness import netloc, probe_host

    try:
        engine = _connect_host(host)
    except AitherError as exc:
        return ModelListing((), (f"{exc.message}: its models are not listed",))
    try:
        running = running_services(engine.list_managed())

        def base_of(service: Service) -> str:
            where = probe_host(service.bind, engine.endpoint, engine.address)
            return f"http://{netloc(where)}:{service.port}"

        with httpx.Client(timeout=10.0) as client:
            ollama = ollama_listing(
                profiles, running, lambda base: ollama_sizes(client, base), host.name, base_of
            )
        image = _probe_image(engine, profiles, host.name)
        if image is None:
            return ModelListing(ollama.models, (*ollama.notes, (
                f"host {host.name!r}: none of its services' images is there to look at its "
                "folders with: its models are not listed"
            )))  # fmt: skip

        def volume_exists(name: str) -> bool:
            try:
                engine.volume_folder(name, create=False)
            except NotFoundError:
                return False
            return True

        files = remote_listing(
            host.name, profiles, running, volume_exists,
            lambda folders: list_remote(engine.client, image, folders),
        )  # fmt: skip
        return ModelListing((*files.models, *ollama.models), (*files.notes, *ollama.notes))
    except AitherError as exc:
        return ModelListing((), (f"host {host.name!r}: {exc.message}: its models are not listed",))
    finally:
        engine.close()


def _remote_listings(profiles: list[Profile]) -> list[ModelListing]:
    """Every other host's listing, read in parallel."""
    hosts = _remote_hosts(profiles)
    if not hosts:
        return []
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        return list(pool.map(lambda h: _remote_listing(h, profiles), hosts.values()))


def _remote_delete(
    profiles: list[Profile], host_name: str, source: str, paths: Sequence[str]
) -> None:
    from aitherctl.docker.model_folders import remove_remote
    from aitherctl.errors import AitherError

    host = _remote_hosts(profiles)[host_name]
    engine = _connect_host(host)
    try:
        image = _probe_image(engine, profiles, host_name)
        if image is None:
            raise AitherError(f"host {host_name!r}: none of its services' images is there")
        remove_remote(engine.client, image, source, paths)
    finally:
        engine.close()


def models_table(listing: ModelListing, now: float | None = None) -> Table:
    """One row per model: name, engine, size on disk, state, the services that use it, and how
    long ago one of them last answered a request (`-`: never, as far as the ledger knows)."""
    from rich.table import Table

    from aitherctl.profiles.profile import LOCAL_HOST
    from aitherctl.units import format_bytes, format_duration

    now = time.time() if now is None else now
    hosts = any(model.host != LOCAL_HOST for model in listing.models)
    table = Table(box=None, pad_edge=False)
    columns = ("model", *(("host",) if hosts else ()), "engine", "size", "state", "used by")
    for column in (*columns, "last used"):
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
            model.name, *((model.host,) if hosts else ()), model.engine,
            format_bytes(model.size_bytes), model.state.value, used, last,
        )  # fmt: skip
    return table


def _listing_json(listing: ModelListing) -> dict[str, Any]:
    return {
        "models": [
            {"name": m.name, "host": m.host, "engine": m.engine, "kind": m.kind.value,
             "path": m.path,
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
    host: Annotated[
        str | None,
        typer.Option("--host", help="The host it is on (a profile's name for it; `local`)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Delete a model's files (refused while a running service uses it); an Ollama model
    through its server; on another host, through a short-lived container there."""
    from aitherctl.models.inventory import find_model, removal_refusal, remove_model
    from aitherctl.units import format_bytes

    out = Output(json_mode=json_out)
    profiles: list[Profile] = []
    model = find_model(_listing(profiles), name, host)
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
        remove_model(
            model,
            lambda base, name: ollama_delete(client, base, name),
            lambda host, source, paths: _remote_delete(profiles, host, source, paths),
        )
    if json_out:
        out.data({
            "removed": model.name, "host": model.host, "path": model.path,
            "size_bytes": model.size_bytes,
        })  # fmt: skip
    else:
        out.print(f"removed {model.name}: {format_bytes(model.size_bytes)} freed", markup=False)


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
    app.add_typer(models_app, name="models")
