"""`aitherctl run`, `ps --json` and `profile switch` without building the Typer app.

Shell scripts call them in loops; through the gateway `run` is one HTTP request, and Typer (with
click) costs more start-up than the request itself. `try_run` handles the common case itself:
the options below, through a gateway serving the profile asked for, else straight to the
backends (`aitherctl.cli.run_exec`, the code the Typer command runs too). Anything else
(`--help`, `--explain`, an option it does not know, a value it cannot read, no prompt) returns
None and the Typer command runs as usual, with its own messages. A test checks that every option
here is one of the Typer command's, with the same meaning.

`profile switch NAME` with its usual options (`parse_switch`) runs `switch_exec.switch_command`,
the Typer command's own code: a switch's wall time beyond its services' own start is mostly
start-up, and Typer's share of it (about 0.1 s) is the largest.
"""

from __future__ import annotations

import os
import sys

# Not `typing.TYPE_CHECKING`: importing typing costs `run` through serve a few ms (mypy reads
# any name TYPE_CHECKING as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn

# option -> (takes a value, the keyword of run_via_gateway / how it is used)
VALUED = {
    "--file": "file",
    "-f": "file",
    "--system": "system",
    "--max-tokens": "max_tokens",
    "--temperature": "temperature",
    "--effort": "effort",
    "--tier": "tier",
    "--backend": "backend",
    "--profile": "profile",
    "-p": "profile",
}
FLAGS = {"--local-only": "local_only", "--json": "json", "--direct": "direct"}
_INTS = {"max_tokens": (1, None), "effort": (1, 10)}


def parse(args: list[str]) -> dict[str, object] | None:
    """The options and prompt of `run ARGS`, or None when Typer should handle them."""
    options: dict[str, object] = {}
    prompt: str | None = None
    position = 0
    while position < len(args):
        arg = args[position]
        name, sep, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in VALUED:
            if sep:
                value = inline
            elif position + 1 < len(args):
                position += 1
                value = args[position]
            else:
                return None
            key = VALUED[name]
            if key in options:
                return None
            options[key] = value
        elif arg in FLAGS and not sep:
            options[FLAGS[arg]] = True
        elif arg == "--":
            rest = args[position + 1 :]
            if prompt is not None or len(rest) != 1:
                return None
            prompt = rest[0]
            break
        elif arg.startswith("-") and arg != "-":
            return None  # --help, --explain, --direct, or one Typer will explain
        elif prompt is None:
            prompt = arg
        else:
            return None
        position += 1
    for key, (low, high) in _INTS.items():
        if key in options:
            text = str(options[key])
            if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
                return None
            options[key] = int(text)
    if "temperature" in options:
        try:
            temperature = float(str(options["temperature"]))
        except ValueError:
            return None
        if not 0.0 <= temperature <= 2.0:
            return None
        options["temperature"] = temperature
    options["prompt"] = prompt
    return options


def try_run(args: list[str]) -> int | None:
    """Answer `run ARGS` (through a running gateway, else straight to the backends) and return
    the exit code, or None to leave it to Typer."""
    options = parse(args)
    if options is None:
        return None
    from aitherctl.cli.prompt_input import read_prompt
    from aitherctl.errors import AitherError, UsageError

    try:
        text = read_prompt(options.get("prompt"), options.get("file"))  # type: ignore[arg-type]
    except UsageError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return int(exc.exit_code)
    if text is None:
        return None  # nothing given on a terminal: Typer's command says what to do
    keywords: dict[str, object] = {
        key: options[key]
        for key in (
            "system",
            "max_tokens",
            "temperature",
            "effort",
            "tier",
            "backend",
            "local_only",
        )
        if key in options
    }
    profile = options.get("profile")
    if not options.get("direct"):
        from aitherctl.serve.discovery import find_gateway

        found = find_gateway()
        if found is not None and profile in (None, found[1]):
            return answer_via_gateway(found[0], text, bool(options.get("json")), keywords)
    from aitherctl.cli.run_exec import answer_direct

    try:
        answer_direct(
            text, bool(options.get("json")), keywords, profile if isinstance(profile, str) else None
        )
    except AitherError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"error: {exc.message}\n" + (f"{exc.detail}\n" if exc.detail else ""))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stdout.flush()
        return 130
    return 0


def answer_via_gateway(
    url: str, text: str, json_output: bool, keywords: Mapping[str, object]
) -> int:
    """Stream the answer to stdout and the status line (or the JSON) as `run` does; the exit
    code. Shared by this fast path and the Typer command."""
    from aitherctl.errors import AitherError
    from aitherctl.routing.gateway_client import run_via_gateway

    wrote: list[str] = []

    def on_text(piece: str) -> None:
        if not json_output:
            sys.stdout.write(piece)
            sys.stdout.flush()
            wrote.append(piece)

    try:
        answer = run_via_gateway(url, text, on_text, **keywords)  # type: ignore[arg-type]
    except AitherError as exc:
        if wrote and not wrote[-1].endswith("\n"):
            sys.stdout.write("\n")
        if json_output and exc.result is not None and exc.result.report is not None:
            import json

            document = {**exc.result.to_json(url), "error": exc.message}
            sys.stdout.write(json.dumps(document, indent=2) + "\n")
        sys.stdout.flush()
        sys.stderr.write(f"error: {exc.message}\n" + (f"{exc.detail}\n" if exc.detail else ""))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stdout.flush()
        return 130
    if json_output:
        import json

        sys.stdout.write(json.dumps(answer.to_json(url), indent=2) + "\n")
        sys.stdout.flush()
    else:
        if not answer.answer.endswith("\n"):
            sys.stdout.write("\n")
            sys.stdout.flush()
        from aitherctl.cli.terminal import stderr_width
        from aitherctl.routing.run_report import fold

        sys.stderr.write(fold(answer.status_line(url), stderr_width()) + "\n")
    warning = (answer.report or {}).get("warning")
    if warning:
        sys.stderr.write(f"warning: {warning}\n")
    return 0


# `profile switch` options: flag -> keyword of switch_exec.switch_command
SWITCH_FLAGS = {
    "--dry-run": "dry_run",
    "--yes": "yes",
    "-y": "yes",
    "--no-pull": "no_pull",
    "--json": "json_out",
}


def parse_switch(args: list[str]) -> dict[str, object] | None:
    """The options of `profile switch ARGS` (the profile's name as `name`), or None when Typer
    should handle them (`--help`, an option it does not know, a value it cannot read)."""
    options: dict[str, object] = {}
    position = 0
    while position < len(args):
        arg = args[position]
        name, sep, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name == "--lock-timeout" and "lock_timeout" not in options:
            if not sep:
                position += 1
                if position == len(args):
                    return None
                inline = args[position]
            try:
                seconds = float(inline)
            except ValueError:
                return None
            if not 0.0 <= seconds < float("inf"):
                return None
            options["lock_timeout"] = seconds
        elif arg in SWITCH_FLAGS:
            options[SWITCH_FLAGS[arg]] = True
        elif arg.startswith("-") or "name" in options:
            return None
        else:
            options["name"] = arg
        position += 1
    return options if "name" in options else None


def try_switch(args: list[str]) -> int | None:
    """Run `profile switch ARGS` as the Typer command does and return its exit code, or None to
    leave it to Typer."""
    options = parse_switch(args)
    if options is None:
        return None
    if not options.get("dry_run"):  # the lock's key, the engine's ID, while the code loads
        from aitherctl.docker.engine import ask_info_ahead

        ask_info_ahead()
    from aitherctl.cli.switch_exec import switch_command
    from aitherctl.errors import AitherError

    name = str(options.pop("name"))
    try:
        return switch_command(name, **options)  # type: ignore[arg-type]
    except (AitherError, KeyboardInterrupt) as exc:
        from aitherctl.cli.output import report_failure

        return report_failure(exc)


def ps_json() -> int:
    """`aitherctl ps --json`, the same document as the Typer command's (one function builds
    it), for scripts that call it in a loop."""
    import json

    from aitherctl.cli import runtime
    from aitherctl.errors import AitherError
    from aitherctl.monitor.services import list_services, with_other_hosts

    try:
        listing = list_services(runtime.docker_reader(), runtime.catalog, runtime.gpu_inventory)
        listing = with_other_hosts(listing)
    except AitherError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return int(exc.exit_code)
    from aitherctl.monitor.node_rows import current_node_rows

    document = {**listing.to_json(), "nodes": [row.to_json() for row in current_node_rows()]}
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()
    return 0


def main() -> None:
    """The console script: `run`, `ps --json`, `profile switch` and `--version` here, everything
    else in Typer.
    AITHER_NO_FAST_RUN=1 sends everything to Typer."""
    # As in aitherctl.cli.app.main: httpx's own command-line tool (click, pygments, rich) is
    # not imported with httpx.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    args = sys.argv[1:]
    if not os.environ.get("AITHER_NO_FAST_RUN"):
        code = None
        if args[:1] == ["run"]:
            code = try_run(args[1:])
        elif args[:2] == ["profile", "switch"]:
            code = try_switch(args[2:])
        elif args == ["ps", "--json"]:
            code = ps_json()
        elif args == ["--version"]:  # scripts check it; Typer would print the same line
            from aitherctl import __version__

            sys.stdout.write(f"aitherctl {__version__}\n")
            code = 0
        if code is not None:
            exit_now(code)
    from aitherctl.cli.app import main as typer_main

    try:
        typer_main()
    except SystemExit as done:
        if isinstance(done.code, str):  # sys.exit("message"): Python prints it and exits 1
            sys.stderr.write(done.code + "\n")
            exit_now(1)
        exit_now(done.code or 0)
    exit_now(0)


def exit_now(code: int) -> NoReturn:
    """Leave once the command is done, without the interpreter's teardown: freeing every module
    and object one by one takes 0.1-0.25 s after a command that loaded the Docker client or the
    TUI, for nothing (the process ends). What a normal exit does that matters still happens: the
    atexit functions run and both output streams are flushed. While a thread that is not a daemon
    still runs, the normal exit (which waits for it) is taken instead."""
    threading = sys.modules.get("threading")  # never imported: no other thread was started
    if threading is not None and any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (importing contextlib: 1 ms more per command)
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more to write
    os._exit(code)
