"""`aitherctl pull`: the models a profile's services need, downloaded before any switch.
The operation: `aitherctl.models.pull`."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output
from aitherctl.errors import RefusedError, UsageError

if TYPE_CHECKING:
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
        import time

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
        line = progress_line(event)
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


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
