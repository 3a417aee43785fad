"""The one place output goes through: data on stdout, diagnostics on stderr.

`--json` turns `data()` into one JSON document on stdout and silences decoration; `--quiet`
silences `info()`; `NO_COLOR` is honoured by Rich itself.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {key: _plain(item) for key, item in asdict(value).items()}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    return value


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._out: Console | None = None
        self._err: Console | None = None

    # Rich is imported and its consoles built only when something is printed through them:
    # `--json` commands write with `json` alone (Rich costs 15-25 ms of start-up).
    @property
    def out(self) -> Console:
        if self._out is None:
            from rich.console import Console

            self._out = Console(highlight=False, soft_wrap=True)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty()

    def data(self, value: Any) -> None:
        """Write `value` as JSON (the documented shape of a `--json` command)."""
        sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")
        sys.stdout.flush()

    def print(self, *renderables: Any, **kwargs: Any) -> None:
        if not self.json_mode:
            self.out.print(*renderables, **kwargs)

    def wrapped(self, text: str, *, lead: str = "") -> None:
        """`lead` (Rich markup) then `text` (plain), word-wrapped at the terminal's width with
        the lines after the first indented under the text's start, so a long reading is never
        cut mid-word by the terminal (a word longer than the line is left whole)."""
        if self.json_mode:
            return
        import textwrap

        from rich.text import Text

        head = Text.from_markup(lead)
        hang = head.cell_len
        room = max(self.out.width - hang, 20)
        lines = textwrap.wrap(text, room, break_long_words=False, break_on_hyphens=False)
        lines = lines or [""]
        self.out.print(head + Text(lines[0]))
        for line in lines[1:]:
            self.out.print(" " * hang + line, markup=False, highlight=False)

    def info(self, message: str) -> None:
        """A plain line on stderr (progress, a run's status line): no Rich needed to write it."""
        if not self.quiet:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {message}", markup=False, style="yellow")

    def error(self, message: str, detail: str | None = None) -> None:
        self.err.print(f"error: {message}", markup=False, style="bold red")
        if detail:
            self.err.print(detail, markup=False)

    def confirm(self, question: str, *, assume_yes: bool) -> bool:
        """Ask before changing containers. Without a terminal, only `--yes` says yes."""
        from aitherctl.errors import UsageError

        if assume_yes:
            return True
        if not self.interactive:
            raise UsageError(
                f"{question.rstrip('?')}: standard input is not a terminal, pass --yes"
            )
        # markup=False: Rich would take `[y/N]` for a style tag and print nothing of it.
        try:
            answer = self.err.input(f"{question} [y/N] ", markup=False).strip().lower()
        except EOFError:  # Ctrl-D: no answer, and no is the default
            self.err.print()
            return False
        return answer in ("y", "yes")


def report_failure(exc: BaseException) -> int:
    """Say on stderr why a command failed and return its exit code: an `AitherError` as one
    line (and its detail), a `KeyboardInterrupt` (a switch interrupted by SIGINT, SIGTERM or
    SIGHUP rolled back first) as what was done, with 128+N as a shell reports a process ended
    by signal N. The Typer app and the console script's fast paths report alike through it."""
    from aitherctl.errors import AitherError

    if isinstance(exc, AitherError):
        Output().error(exc.message, exc.detail)
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", 2)
        summary = getattr(exc, "summary", "")
        try:  # noqa: SIM105 - contextlib costs a fast path's start-up
            sys.stderr.write(f"interrupted{': ' + summary if summary else ''}\n")
        except OSError:
            pass
        return 128 + int(signum)
    raise exc
