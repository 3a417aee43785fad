"""`aitherctl chat [MODEL]` (and `aitherctl run` with no prompt on a terminal): an interactive
chat, as `ollama run MODEL` opens one. Each message goes the way `run` sends one (through a
running `aitherctl serve` for the same profile, else straight to the backends), with the
session's earlier turns; Ctrl-C stops an answer (what came stays in the history), Ctrl-D or
`/bye` leaves.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aitherctl.cli import runtime
from aitherctl.cli.prompt_options import MaxTokensOpt, ProfileOpt, SystemOpt, TemperatureOpt
from aitherctl.errors import AitherError, NotFoundError

if TYPE_CHECKING:
    from aitherctl.routing.table import RoutingTable

PROMPT = ">>> "
LEAVE = ("/bye", "/exit", "/quit")
History = list[tuple[str, str]]
Send = Callable[[str, tuple[tuple[str, str], ...], Callable[[str], None]], None]


def chat(  # noqa: PLR0917 - Typer passes options by position
    model: Annotated[
        str | None,
        typer.Argument(help="A tier, service or endpoint of the profile (default: by effort)."),
    ] = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    local_only: Annotated[
        bool, typer.Option("--local-only", help="Never send a message off this machine.")
    ] = False,
    profile: ProfileOpt = None,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct", help="Go straight to the backends even when `aitherctl serve` is running."
        ),
    ] = False,
) -> None:
    """Chat with a model of the profile, as `ollama run` does: the session's history is sent
    with each message, Ctrl-C stops an answer, Ctrl-D or /bye leaves."""
    options: dict[str, Any] = {
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "local_only": local_only,
    }
    code = open_chat(model, options, profile, direct)
    if code:
        raise typer.Exit(code)


def open_chat(model: str | None, options: dict[str, Any], profile: str | None, direct: bool) -> int:
    """Run the chat until Ctrl-D or /bye; the exit code. `options` are `run`'s (system,
    max_tokens, temperature, local_only, and effort, tier, backend when `run` forced them)."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started from a script in the background (SIGINT ignored, and kept so across exec):
        # this chat says Ctrl-C stops an answer, so it does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with _sender(model, options, profile, direct) as (send, where):
        sys.stderr.write(f"{where}: Ctrl-C stops an answer, Ctrl-D or /bye leaves\n")
        sys.stderr.flush()
        return _loop(send)


def _loop(send: Send) -> int:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and the session's input history in input()
    history: History = []
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n(Ctrl-D or /bye to leave)\n")
            continue
        if not line.strip():
            continue
        if line.strip() in LEAVE:
            return 0
        pieces: list[str] = []
        try:
            send(line, tuple(history), _printer(pieces))
        except KeyboardInterrupt:
            sys.stdout.write("\n(stopped)")
        except AitherError as exc:
            if pieces:
                sys.stdout.write("\n")
            sys.stdout.flush()
            sys.stderr.write(f"error: {exc.message}\n" + (f"{exc.detail}\n" if exc.detail else ""))
            sys.stderr.flush()
            if not pieces:
                continue
        sys.stdout.write("\n\n")
        sys.stdout.flush()
        history += [("user", line), ("assistant", "".join(pieces))]


def _printer(pieces: list[str]) -> Callable[[str], None]:
    def on_text(piece: str) -> None:
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()

    return on_text


def pick(table: RoutingTable, model: str | None) -> dict[str, str]:
    """`MODEL` as --tier or --backend; NotFoundError naming what the profile has."""
    if model is None:
        return {}
    if any(tier.name == model for tier in table.tiers):
        return {"tier": model}
    if model in table.backends:
        return {"backend": model}
    for name, candidate in table.backends.items():
        if candidate.model == model:
            return {"backend": name}
    tiers = ", ".join(t.name for t in table.tiers)
    backends = ", ".join(sorted(table.backends)) or "none"
    raise NotFoundError(
        f"profile {table.profile!r} has no tier, service or endpoint {model!r} (tiers: {tiers}; "
        f"services and endpoints: {backends})"
    )


@contextlib.contextmanager
def _sender(
    model: str | None, options: dict[str, Any], profile: str | None, direct: bool
) -> Iterator[tuple[Send, str]]:
    from aitherctl.routing.table import build_routing

    if not direct:
        from aitherctl.serve.discovery import find_gateway

        found = find_gateway()
        if found is not None and profile in (None, found[1]):
            url, served = found
            chosen = pick(build_routing(runtime.catalog().load(served)), model)

            def via_gateway(
                text: str, history: tuple[tuple[str, str], ...], on_text: Callable[[str], None]
            ) -> None:
                from aitherctl.routing.gateway_client import run_via_gateway

                run_via_gateway(url, text, on_text, history=history, **{**options, **chosen})

            yield via_gateway, f"profile {served} via {url}"
            return
    from aitherctl.routing.router import RunOptions, open_router, resolve_profile

    profile_found, stack = resolve_profile(profile, runtime.catalog(), runtime.docker_reader)
    with open_router(profile_found, stack) as router:
        chosen = pick(router.table, model)

        def straight(
            text: str, history: tuple[tuple[str, str], ...], on_text: Callable[[str], None]
        ) -> None:
            router.run(RunOptions(prompt=text, history=history, **{**options, **chosen}), on_text)

        yield straight, f"profile {profile_found.name}"


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
