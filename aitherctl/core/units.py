"""Sizes and shares of GPU memory as profiles write them: `12GiB`, `512MiB`, `35%`."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    return int(float(number) * factor)


@dataclass(frozen=True, slots=True)
class MemoryAmount:
    """A share of one GPU's memory (`fraction`) or an absolute amount (`bytes`); exactly one is set."""

    fraction: float | None = None
    bytes: int | None = None

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
            share = float(percent.group(1)) / 100
            if share <= 0 or share > 1:
                raise ValueError(f"{value} is outside 0–100% of a GPU")
            return cls(fraction=share)
        amount = parse_size(value)
        if amount <= 0:
            raise ValueError(f"{value!r} must be more than zero")
        return cls(bytes=amount)

    def resolve(self, total_bytes: int) -> int:
        """Bytes of a GPU with `total_bytes` of memory."""
        if self.fraction is not None:
            return int(self.fraction * total_bytes)
        assert self.bytes is not None
        return self.bytes

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
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
