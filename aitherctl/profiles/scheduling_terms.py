"""The words a profile uses for the scheduler: a service's `priority:` (its eviction rank) and
`idle_after:` (a duration). Pure; the profile loader and `aitherctl.serve` both read them."""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any


class Rank(IntEnum):
    """A service's eviction rank (`priority:` in a profile): low goes first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2


def parse_rank(value: Any) -> Rank:
    if isinstance(value, str):
        try:
            return Rank[value.strip().upper()]
        except KeyError:
            pass
    raise ValueError(f"{value!r} is not one of: low, normal, high")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """`15m`, `90s`, `1h`, `500ms` or a number of seconds → seconds (> 0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) * _SECONDS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration (write e.g. 15m, 90s or 1h)")
