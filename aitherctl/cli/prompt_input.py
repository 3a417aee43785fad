"""What `aitherctl run` sends as the prompt: the instruction, then the file or standard input.

As `llm` and `ollama run` combine them: `aitherctl run "Summarise this diff" -f change.patch`
and `git diff | aitherctl run "Review this"` send the instruction, a blank line, then the text.
Plain `open` and `sys` only: the console script's fast path calls this on every start.
"""

from __future__ import annotations

import sys

from aitherctl.errors import UsageError

# Not `typing.TYPE_CHECKING`: importing typing costs `run` through serve a few ms (mypy reads
# any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

SEPARATOR = "\n\n"


def read_prompt(prompt: str | None, file: str | None, stdin: TextIO | None = None) -> str | None:
    """The prompt text, or None when nothing was given and standard input is a terminal (the
    caller opens a chat). `prompt` '-' reads the instruction from standard input. Without '-',
    piped standard input is read only when no FILE is given. Raises UsageError (one line) for a
    file that cannot be read or an empty prompt; the file is read before standard input, so a
    bad file consumes nothing."""
    stream = sys.stdin if stdin is None else stdin
    instruction = prompt if prompt not in (None, "-") else None
    added: str | None = None
    if file is not None:
        added = _read_file(file)
    if prompt == "-":
        instruction = stream.read()
    elif file is None and not _is_terminal(stream):
        added = stream.read()
    parts = [part for part in (instruction, added) if part is not None]
    if not parts:
        return None
    text = SEPARATOR.join(part for part in parts if part.strip()) if len(parts) > 1 else parts[0]
    if not text.strip():
        raise UsageError("the prompt is empty")
    return text


def _read_file(file: str) -> str:
    try:
        with open(file, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{file} is not UTF-8 text") from None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False
