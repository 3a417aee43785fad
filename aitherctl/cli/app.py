"""`aitherctl`: the root command.

Sub-commands live one module per group and are imported only when that command runs (click's
lazy-group pattern): `aitherctl --version`, `aitherctl --help` and `aitherctl ps --help` import
none of the other commands' modules. Each module imports its heavy dependencies (docker, httpx,
pynvml, textual) inside the command. The root `--help` lists every command from `COMMANDS`
below, without importing them (tests/cli/test_startup_imports.py checks the summaries match).
"""

from __future__ import annotations

import os
import re
import sys
from importlib import import_module
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from aitherctl import __version__
from aitherctl.errors import AitherError

# Command → (module under aitherctl/cli, the first paragraph of its help as one line), in the
# order `--help` lists them. A module's `register(app)` adds every command it defines.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": (
        "service_cmds",
        "Start services of the active profile (on-demand ones too, when named), after the same "
        "VRAM, port and readiness checks as a switch, downloading missing models first as a "
        "switch does; nothing else is stopped. After `down --all`, the last active profile's.",
    ),
    "down": (
        "service_cmds",
        "Stop and remove services' containers (name them, or pass --all).",
    ),
    "ps": (
        "service_cmds",
        "What aitherctl runs: service, engine, model, state, health, port, GPU, VRAM (real use "
        "against the budget, flagged when over), uptime.",
    ),
    "logs": ("service_cmds", "Print a service's container log."),
    "recover": (
        "service_cmds",
        "Finish or undo a switch that was killed (kill -9, power cut): its record on the engine "
        "says what was set aside. `switch`, `up` and `down` do this first by themselves.",
    ),
    "gpu": (
        "gpu_cmd",
        "GPUs, memory, utilisation, temperature, power and processes, as NVML reports them (the "
        "same numbers as `nvidia-smi`). Exit 5 when there is no usable NVIDIA GPU.",
    ),
    "doctor": (
        "doctor_cmd",
        "Check Docker, the NVIDIA container runtime, GPUs, profiles and their ports. Each "
        "profile mistake is one line `file:line: message`. Exit 3 when a profile is wrong, 1 "
        "when another check fails (warnings do not fail).",
    ),
    "run": (
        "run_cmd",
        "Send a prompt to the right model: score its effort, pick the tier, fall back on failure.",
    ),
    "chat": (
        "chat_cmd",
        "Chat with a model of the profile, as `ollama run` does: the session's history is sent "
        "with each message, Ctrl-C stops an answer, Ctrl-D or /bye leaves.",
    ),
    "serve": (
        "serve_cmd",
        "Serve every model of the profile on one OpenAI-compatible endpoint that queues by "
        "priority, starts on-demand models and evicts idle ones (127.0.0.1:8150).",
    ),
    "usage": (
        "usage_cmd",
        "Spending against the daily budget, requests per tier and backend, the share answered "
        "locally, and p50/p95 latency per backend, from the ledger `aitherctl run` keeps.",
    ),
    "status": (
        "status_cmd",
        "Show the active profile, GPUs, services, their load and the host, once or repeatedly. "
        "With --watch --json, one JSON object per line (NDJSON), one line per reading.",
    ),
    "monitor": (
        "monitor_cmd",
        "GPUs (VRAM against budgets, utilisation, temperature, power), services (state, VRAM, "
        "queue, tokens/s), GPU memory held outside aitherctl, host CPU/RAM/swap and recent "
        "events.",
    ),
    "profile": ("profile_cmd", "Declare GPU profiles and switch between them."),
    "models": (
        "models_cmd",
        "The models on this machine that the profiles point at (and the others beside them).",
    ),
    "pull": (
        "models_cmd",
        "Download the models a profile's services need into the places their engines read (the "
        "Hugging Face cache for vLLM, a llama.cpp service's `source:` file at its `model` path), "
        "with progress, resuming an interrupted download. HF_TOKEN is sent for gated models.",
    ),
    "nodes": (
        "nodes_cmd",
        "Rented GPU nodes: list them (state, price per hour, age, cost so far), create, "
        "destroy, and recover the ones a crash left unknown.",
    ),
}


class AitherGroup(TyperGroup):
    """The root command: loads a sub-command's module on first use, and turns `AitherError`
    into one line on stderr and its exit code, for every command."""

    def list_commands(self, ctx: Any) -> list[str]:  # noqa: ARG002 - click's signature
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:  # noqa: ARG002 - click's signature
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name = COMMANDS[cmd_name][0]
            try:
                loaded = _load(module_name)
            except ModuleNotFoundError as exc:
                # A command whose module is not there (a partial checkout) is left out.
                if exc.name != f"aitherctl.cli.{module_name}":
                    raise
                return None
            for name, command in loaded.items():
                self.commands.setdefault(name, command)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """As click's, but a command not loaded yet is described by its `COMMANDS` entry."""
        from typer._click.utils import make_default_short_help

        names = [
            name
            for name in self.list_commands(ctx)
            if name in COMMANDS or not self.commands[name].hidden
        ]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                if self.commands[name].hidden:
                    continue
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(COMMANDS[name][1], limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # Typer suggests close names from the loaded commands only; offer every command.
        from typer._click.exceptions import UsageError

        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            from difflib import get_close_matches

            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if self.suggest_commands and matches:
                suggestions = ", ".join(f"{name!r}" for name in matches)
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        for param in self.params:
            _light_coercion(param)
        return super().parse_args(ctx, args)

    def get_help_option(self, ctx: Any) -> Any:
        return _light_coercion(super().get_help_option(ctx))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (AitherError, KeyboardInterrupt) as exc:
            from aitherctl.cli.output import report_failure

            raise typer.Exit(report_failure(exc)) from None


def _load(module_name: str) -> dict[str, Any]:
    """The click commands that `aitherctl.cli.<module_name>` registers, built as Typer builds
    them for the root app (same markup mode, so the same help text)."""
    module = import_module(f"aitherctl.cli.{module_name}")
    holder = typer.Typer(rich_markup_mode=None, add_completion=False)
    module.register(holder)
    commands = dict(typer.main.get_group(holder).commands)
    for command in commands.values():
        _lighten(command)
    return commands


def _lighten(command: Any) -> None:
    for param in command.params:
        _light_coercion(param)
        _plain_metavar(param)
    # click builds `--help` on first use, from the context's help option names.
    build_help_option = command.get_help_option
    command.get_help_option = lambda ctx: _light_coercion(build_help_option(ctx))
    for sub in (getattr(command, "commands", None) or {}).values():
        _lighten(sub)


# What a value is, as help shows it (`--port PORT`, `--interval SECONDS`), instead of typer's
# types (`<int range>`, `<float range>`, `<str>`); any other option shows its name in capitals.
_METAVARS = {
    "port": "PORT",
    "host": "HOST",
    "interval": "SECONDS",
    "timeout": "SECONDS",
    "drain": "SECONDS",
    "lock_timeout": "SECONDS",
    "profile": "NAME",
    "tier": "NAME",
    "backend": "NAME",
    "file": "FILE",
    "keys_file": "FILE",
    "output": "FILE",
    "count": "N",
    "tail": "N",
    "max_tokens": "N",
    "effort": "1-10",
    "temperature": "0-2",
    "system": "TEXT",
    "since": "WHEN",
}


def _plain_metavar(param: Any) -> None:
    """Arguments as `NAME` (typer writes `{name}` and `name <str>`), options' values by what
    they are (`--port PORT`). Choices keep typer's list of them."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(descriptor, "is_choice", False):
        return
    if param.param_type_name == "argument":
        name = (param.metavar or param.name or "").upper()
        param.metavar = name
        many = param.nargs != 1
        shown = f"{name}..." if many else name
        param._usage_display_name = lambda: shown if param.required else f"[{shown}]"
        param._rich_display_name = lambda: shown
        param.display_type_rich = lambda ctx: None  # noqa: ARG005 - typer's signature
    elif param.metavar is None and not getattr(param, "is_flag", False):
        param.metavar = _METAVARS.get(param.name, (param.name or "").upper())


class _LightCoercion:
    """Typer (0.2x) coerces every parameter through a pydantic `TypeAdapter`, built the first
    time the parameter is processed, even when its value is the default `None`. Importing
    pydantic costs more than the rest of start-up, so the plain values skip it: `None` (what
    typer itself returns for it, `()` for a repeatable one), a `str` given for a `str` parameter
    (typer's adapter is `str(value)` then), and plain decimal digits for an `int` or `float`
    parameter that are within its min/max, and a value that already has the parameter's type
    (`bool`, `int`, `float`: a default) within them. Every other value (a bad one included, so
    its error message is typer's) goes through typer's own coercion, unchanged."""

    __slots__ = ("_real", "_typer_param")

    def __init__(self, typer_param: Any) -> None:
        self._typer_param = typer_param
        self._real: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        descriptor = self._typer_param.type_descriptor
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        info = descriptor.parameter_info
        kind = descriptor.annotation
        single = info.parser is None and not (param.multiple or param.nargs == -1)
        if single and type(value) is kind and kind in (bool, int, float) and _within(value, info):
            return value  # already the parameter's type: a default such as 900.0
        if isinstance(value, str) and single:
            if descriptor.annotation is str:
                return value
            number = _plain_number(value, descriptor.annotation)
            if (
                number is not None
                and not info.clamp
                and (info.min is None or number >= info.min)
                and (info.max is None or number <= info.max)
            ):
                return number
        if self._real is None:
            from typer._coercion import build_runtime_param

            self._real = build_runtime_param(descriptor)
        return self._real.coerce(value, param=param, ctx=ctx)


def _within(value: Any, info: Any) -> bool:
    """Whether typer's own coercion would return `value` unchanged (min/max, not clamped)."""
    if isinstance(value, bool):
        return True
    return (
        not info.clamp
        and (info.min is None or value >= info.min)
        and (info.max is None or value <= info.max)
    )


def _plain_number(text: str, kind: Any) -> int | float | None:
    if kind is int and _PLAIN_INT.fullmatch(text):
        return int(text)
    if kind is float and _PLAIN_FLOAT.fullmatch(text):
        return float(text)
    return None


_PLAIN_INT = re.compile(r"-?[0-9]+")
_PLAIN_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _light_coercion(param: Any) -> Any:
    # Only for the typer parameters this was written against; any other is left alone.
    if getattr(param, "_runtime_param", "absent") is None and hasattr(param, "type_descriptor"):
        param._runtime_param = _LightCoercion(param)
    return param


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


def main() -> None:
    # `import httpx` also imports httpx's own command-line tool (`httpx._main`) whenever click is
    # installed (import-linter, in the dev extra, brings it), and with it click, pygments and
    # rich's progress and syntax modules: 30-50 ms per start that aitherctl never uses. Marked
    # missing, httpx skips it, as it does wherever click is not installed.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    app(prog_name="aitherctl")
