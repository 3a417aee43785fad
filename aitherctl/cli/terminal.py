"""The terminal's width for what `run` writes on standard error, with nothing but `os` (`run`'s
fast path through `serve` imports it)."""

from __future__ import annotations


def stderr_width() -> int | None:
    """How wide a line on standard error may be: `COLUMNS` when set, else the terminal's when
    standard error is one, else None (a pipe, a file)."""
    import os

    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(2).columns if os.isatty(2) else None
    except OSError:
        return None
