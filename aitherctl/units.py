"""Sizes and shares of GPU memory as profiles write them: `12GiB`, `512MiB`, `35%`.

Shares are exact (`fractions.Fraction` parsed from the decimal text), so `35%` is 35/100, not the
binary float 0.35000000000000003: a budget resolves to `floor(35 * total / 100)` bytes on every
card and reaches vLLM as `--gpu-memory-utilization 0.35`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Imported where a share or a decimal size is computed: `fractions` (with `decimal`) costs
    # every command's start-up about 5 ms, and most read neither.
    from fractions import Fraction

GIB = 1024**3
MIB = 1024**2

_UNITS = {
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": MIB,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": GIB,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_size(text: str) -> int:
    """`12GiB` → bytes. Raises ValueError with what was wrong."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (write e.g. 12GiB or 512MiB)")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower() if unit else "b")
    if factor is None:
        raise ValueError(f"{text!r} has an unknown unit {unit!r} (use MiB, GiB, MB or GB)")
    if number.isdigit():
        return int(number) * factor
    from fractions import Fraction

    return int(Fraction(number) * factor)  # exact: 1.1GiB is floor(1.1 * 1024**3) bytes


def decimal_text(value: Fraction) -> str:
    """The exact decimal of a fraction whose denominator has only the factors 2 and 5 (any share
    parsed from decimal text): 7/20 → `0.35`, 1/8 → `0.125`, 3/1 → `3`."""
    denominator = value.denominator
    for factor in (2, 5):
        while denominator % factor == 0:
            denominator //= factor
    if denominator != 1:
        raise ValueError(f"{value} has no finite decimal form")
    from decimal import Decimal  # only to print a share: not worth importing on every start

    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def floor_to(value: Fraction, places: int) -> Fraction:
    """`value` rounded down to `places` decimals, exactly."""
    from fractions import Fraction

    scale = 10**places
    return Fraction(value.numerator * scale // value.denominator, scale)


@dataclass(frozen=True, slots=True)
class MemoryAmount:
    """A share of one GPU's memory (`share`, exact) or an absolute amount (`bytes`); exactly one is
    set. A share is kept as its numerator and denominator (`ratio`, lowest terms): a profile
    remembered between commands (profiles/memo.py) is read back without importing `fractions`,
    which only `share` does."""

    ratio: tuple[int, int] | None = None
    bytes: int | None = None

    @property
    def is_share(self) -> bool:
        return self.ratio is not None

    @property
    def share(self) -> Fraction | None:
        """The share, exact (None for an absolute amount)."""
        if self.ratio is None:
            return None
        from fractions import Fraction

        return Fraction(*self.ratio)

    @property
    def fraction(self) -> float | None:
        """The share as a float (for display and sums that tolerate rounding); `share` is exact."""
        return None if self.ratio is None else self.ratio[0] / self.ratio[1]

    @classmethod
    def parse(cls, value: object) -> MemoryAmount:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an amount of memory (write 35% or 12GiB)")
        if isinstance(value, (int, float)):
            raise ValueError(
                f"{value!r} has no unit (write {value}% for a share or {value}GiB for an amount)"
            )
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not an amount of memory (write 35% or 12GiB)")
        percent = _PERCENT.match(value)
        if percent:
            from fractions import Fraction

            share = Fraction(percent.group(1)) / 100
            if share <= 0 or share > 1:
                raise ValueError(f"{value} is outside 0–100% of a GPU")
            return cls(ratio=(share.numerator, share.denominator))
        amount = parse_size(value)
        if amount <= 0:
            raise ValueError(f"{value!r} must be more than zero")
        return cls(bytes=amount)

    def resolve(self, total_bytes: int) -> int:
        """Bytes of a GPU with `total_bytes` of memory; a share rounds down to whole bytes."""
        if self.ratio is not None:
            return self.ratio[0] * total_bytes // self.ratio[1]
        assert self.bytes is not None
        return self.bytes

    def of(self, total_bytes: int | None) -> int | None:
        """Bytes as written, or the share of `total_bytes` when that is known (None when not)."""
        if self.bytes is not None:
            return int(self.bytes)
        return self.resolve(total_bytes) if total_bytes else None

    def __str__(self) -> str:
        if self.share is not None:
            return f"{decimal_text(self.share * 100)}%"
        assert self.bytes is not None
        return format_bytes(self.bytes)


def format_bytes(value: int | None) -> str:
    """Binary units, one decimal: 12.0 GiB. `None` renders as N/A."""
    if value is None:
        return "N/A"
    if abs(value) >= GIB:
        return f"{value / GIB:.1f} GiB"
    if abs(value) >= MIB:
        return f"{value / MIB:.0f} MiB"
    return f"{value} B"


def over_budget(used_bytes: int | None, budget_bytes: int | None) -> bool:
    """Whether a service holds more than its budget (unknown use or no budget: no). `ps` and the
    monitor flag it; the planner counts such a service at what it holds."""
    return used_bytes is not None and budget_bytes is not None and used_bytes > budget_bytes


def format_duration(seconds: float | None, unknown: str = "N/A") -> str:
    """An uptime as `ps`, `status` and the monitor all show it: 45s, 1m22s, 3h05m, 2d4h."""
    if seconds is None:
        return unknown
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
