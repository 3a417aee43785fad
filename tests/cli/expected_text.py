"""The expected-output files of tests/cli/expected/: `=== CASE @ WIDTH` then the lines a
command prints at that width (trailing blanks stripped)."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent / "expected"


def sections(name: str) -> dict[str, list[str]]:
    """`expected/NAME`'s sections by their `CASE @ WIDTH` heading."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (FOLDER / name).read_text().splitlines():
        if line.startswith("=== "):
            current = found.setdefault(line[4:], [])
        else:
            current.append(line)
    return found
