"""What an inference server says about its own load: the reading and the tools to parse it.

Pure: text or decoded JSON in, an `EngineMetrics` out. Each engine's pages, metric names and
parsers live in its driver (`aitherctl.engines.<engine>`); the HTTP side is
`aitherctl.monitor.scrape`. This module holds what they share: the reading, Prometheus text
sampling, Go timestamps and counter rates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime


class MetricsFormatError(ValueError):
    """A payload that is not what the engine documents (not Prometheus text, wrong JSON shape)."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model an Ollama server holds in memory (`GET /api/ps`)."""

    name: str
    size_bytes: int | None
    vram_bytes: int | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One reading of one server. `None` means the server does not report that number."""

    requests_running: int | None = None
    requests_waiting: int | None = None
    kv_cache_usage_ratio: float | None = None  # 0..1
    generation_tokens_total: float | None = None  # a counter: rates come from deltas
    prompt_tokens_total: float | None = None
    slots_busy: int | None = None  # llama.cpp /slots
    slots_total: int | None = None
    loaded_models: tuple[LoadedModel, ...] = ()  # Ollama
    engine_vram_bytes: int | None = None  # what the engine says it holds (Ollama, ComfyUI)

    def merged(self, other: EngineMetrics) -> EngineMetrics:
        """Fields of `other` that are known override this one's (two endpoints, one reading)."""
        changes = {
            item.name: getattr(other, item.name)
            for item in fields(other)
            if getattr(other, item.name) not in (None, ())
        }
        return replace(self, **changes)


class PrometheusSamples:
    """Sample name → its values over every label set (several models or engine cores)."""

    def __init__(self, text: str, wanted: tuple[str, ...]) -> None:
        self._values: dict[str, list[float]] = {}
        # Only the wanted samples go through the parser: vLLM's page is mostly histogram buckets,
        # and this runs for every server on every refresh. A sample line starts with its name.
        kept = "\n".join(line for line in text.splitlines() if line.startswith(wanted))
        if not kept:  # nothing wanted: fine for a page without them, not for HTML or JSON
            for line in text.splitlines():
                head = line.strip()[:1]
                if head and head != "#" and not (head.isalpha() or head in "_:"):
                    raise MetricsFormatError(f"not Prometheus text: {line.strip()[:60]!r}")
        try:
            from prometheus_client.parser import text_string_to_metric_families

            for family in text_string_to_metric_families(kept + "\n" if kept else ""):
                for sample in family.samples:
                    self._values.setdefault(sample.name, []).append(float(sample.value))
        except ValueError as exc:
            raise MetricsFormatError(f"not Prometheus text: {exc}") from None

    def total(self, *names: str) -> float | None:
        """Sum over label sets of the first name present (counts and counters add up)."""
        for name in names:
            if name in self._values:
                return sum(self._values[name])
        return None

    def highest(self, *names: str) -> float | None:
        """Largest value of the first name present (a ratio does not add up)."""
        for name in names:
            if name in self._values:
                return max(self._values[name])
        return None


def as_int(value: float | None) -> int | None:
    return None if value is None else round(value)


def parse_timestamp(text: object) -> datetime | None:
    """An RFC 3339 time as Go writes it (Ollama, Docker): nanoseconds and `Z` allowed."""
    if not isinstance(text, str) or not text or text.startswith("0001-01-01"):
        return None
    # Go writes nanoseconds (".93355-07:00" or 9 digits); fromisoformat takes at most 6.
    head, sep, rest = text.partition(".")
    if sep:
        count = next((i for i, ch in enumerate(rest) if not ch.isdigit()), len(rest))
        digits, zone = rest[:count], rest[count:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def opt_int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class CounterReading:
    """A counter's value and when it was read (monotonic seconds)."""

    value: float
    at_s: float


def rate_per_s(previous: CounterReading | None, current: CounterReading | None) -> float | None:
    """Per-second rate between two readings of a counter; `None` without two usable readings.

    A counter that went down was reset (server restarted): no rate for that interval.
    """
    if previous is None or current is None:
        return None
    elapsed = current.at_s - previous.at_s
    delta = current.value - previous.value
    if elapsed <= 0 or delta < 0:
        return None
    return delta / elapsed


def sum_known(values: Iterable[int | None]) -> int | None:
    """Sum of the known values; `None` when none is known."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None
