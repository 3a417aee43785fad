"""Which columns of a table fit a terminal's width: the one rule `status` and `ps` share.

A column never wraps a cell mid-word (a size split between its number and its unit reads as two
readings). When the whole table is too wide, columns in which no row has a reading go first,
then the columns of a drop order one after another, then the shrinkable ones (the model name,
ending in `…`) are drawn at their least, then the last resort's columns go. The caller names
what it left out under the table, so nothing is lost without a word, and draws a shrinkable
column with `least_width` as its minimum, so that the table is as wide as counted here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

COLUMN_GAP = 2  # rich's Table with box=None pads each cell by one on each side


@dataclass(frozen=True)
class ColumnRules:
    """How a table gives way to a narrow terminal."""

    optional: Collection[str] = ()  # left out when no row has a reading in it
    drop_order: Sequence[str] = ()  # then these, one after another
    last_drop: Sequence[str] = ()  # after the shrinkable columns are at their least
    # column → (least width, the width it keeps until the drop order is exhausted)
    shrink: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    missing: str = "-"  # a cell that has no reading


def fit_columns(
    names: Sequence[str], rows: Sequence[Sequence[str]], width: int | None, rules: ColumnRules
) -> list[str]:
    """The names of the columns to show at `width` (None: all of them), in table order."""
    from rich.cells import cell_len

    widths = {
        name: max([cell_len(name), *(cell_len(row[index]) for row in rows)])
        for index, name in enumerate(names)
    }
    for name, (_least, wanted) in rules.shrink.items():
        if name in widths:
            widths[name] = min(widths[name], wanted)

    def fits(chosen: list[str]) -> bool:
        return (
            width is None
            or sum(widths[name] for name in chosen) + COLUMN_GAP * (len(chosen) - 1) <= width
        )

    chosen = list(names)
    if fits(chosen):
        return chosen
    chosen = [
        name
        for index, name in enumerate(names)
        if name not in rules.optional or any(row[index] != rules.missing for row in rows)
    ]
    for name in rules.drop_order:
        if fits(chosen):
            return chosen
        if name in chosen:
            chosen.remove(name)
    for name, (least, _wanted) in rules.shrink.items():
        if name in widths:
            widths[name] = min(widths[name], least)
    for name in rules.last_drop:
        if fits(chosen):
            break
        if name in chosen:
            chosen.remove(name)
    return chosen


def least_width(name: str, rows: Sequence[Sequence[str]], index: int, least: int) -> int:
    """The narrowest a shrinkable column is drawn: its least, or its widest cell if that is
    narrower (a column of short names is not padded out)."""
    from rich.cells import cell_len

    return min(least, max([cell_len(name), *(cell_len(row[index]) for row in rows)]))


def left_out(
    names: Sequence[str], rows: Sequence[Sequence[str]], chosen: Collection[str], missing: str = "-"
) -> list[str]:
    """The columns not shown that had a reading in some row: what the note under the table
    names."""
    return [
        name
        for index, name in enumerate(names)
        if name not in chosen and any(row[index] != missing for row in rows)
    ]
