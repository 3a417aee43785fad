"""`aitherctl`: the root command. Sub-commands live one module per group and are imported here,
but each imports its heavy dependencies (docker, httpx, pynvml, textual) inside the command."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from aitherctl import __version__
from aitherctl.errors import AitherError


class AitherGroup(TyperGroup):
    """Turns `AitherError` into one line on stderr and its exit code, for every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AitherError as exc:
            from aitherctl.cli.output import Output

            Output().error(exc.message, exc.detail)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt as exc:
            # A switch interrupted by SIGINT/SIGTERM/SIGHUP rolled back first; say what it did.
            # Exit 128+N, as a shell reports a process ended by signal N.
            signum = getattr(exc, "signum", 2)
            summary = getattr(exc, "summary", "")
            with contextlib.suppress(OSError):
                sys.stderr.write(f"interrupted{': ' + summary if summary else ''}\n")
            raise typer.Exit(128 + int(signum)) from None


app = typer.Typer(
    name="aitherctl",
    cls=AitherGroup,
    help="Control plane for a workstation's local LLM stack: GPU profiles, routing, monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aitherctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    profile_dir: Annotated[
        str | None,
        typer.Option(
            "--profile-dir",
            envvar="AITHER_PROFILE_DIR",
            metavar="DIR",
            help="Folder of user profiles (default: the user's config folder).",
        ),
    ] = None,
) -> None:
    del version
    if profile_dir:
        os.environ["AITHER_PROFILE_DIR"] = profile_dir


def _register() -> None:
    from importlib import import_module

    for name in (
        "profile_cmd",
        "service_cmds",
        "gpu_cmd",
        "doctor_cmd",
        "run_cmd",
        "usage_cmd",
        "status_cmd",
        "monitor_cmd",
    ):
        try:
            module = import_module(f"aitherctl.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"aitherctl.cli.{name}":
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    app(prog_name="aitherctl")
