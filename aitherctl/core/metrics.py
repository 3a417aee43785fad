"""What each inference server says about its own load, parsed from what it serves.

Pure functions: text or decoded JSON in, an `EngineMetrics` out. The HTTP side lives in
`aitherctl.adapters.scrape`. Where each number comes from:

- vLLM `GET /metrics` (Prometheus text): `vllm:num_requests_running`, `vllm:num_requests_waiting`,
  `vllm:kv_cache_usage_perc` (0..1; called `vllm:gpu_cache_usage_perc` before v0.10),
  `vllm:generation_tokens_total`, `vllm:prompt_tokens_total`. Samples carry `model_name` and,
  on newer versions, `engine` labels; values are summed over them.
- llama.cpp `GET /metrics` (needs `--metrics`): `llamacpp:requests_processing`,
  `llamacpp:requests_deferred`, `llamacpp:tokens_predicted_total`,
  `llamacpp:prompt_tokens_total`; `GET /slots`: one object per slot with `is_processing`.
- Ollama `GET /api/ps` (it has no `/metrics`): `models[]` with `name`, `size`, `size_vram`,
  `expires_at`.
- ComfyUI `GET /queue` (`queue_running`, `queue_pending`: lists of prompts) and
  `GET /system_stats` (`devices[]` with `vram_total`, `vram_free`, `torch_vram_total`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


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


class _Samples:
    """Sample name → its values over every label set (several models or engine cores)."""

    def __init__(self, text: str, wanted: tuple[str, ...]) -> None:
        self._values: dict[str, list[float]] = {}
        # Only the wanted samples go through the parser: vLLM's page is mostly histogram buckets,
        # and this runs for every server on every refresh. A sample line starts with its name.
        kept = "\n".join(
            line for line in text.splitlines() if line.startswith(wanted)
        )
        if not kept:  # nothing wanted: fine for a page without them, not for HTML or JSON
            for line in text.splitlines():
                head = line.strip()[:1]
                if head and head != "#" and not (head.isalpha() or head in "_:"):
                    raise MetricsFormatError(f"not Prometheus text: {line.strip()[:60]!r}")
        try:
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


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


_VLLM = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
)
_LLAMACPP = (
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "llamacpp:kv_cache_usage_ratio",
    "llamacpp:tokens_predicted_total",
    "llamacpp:prompt_tokens_total",
)


def parse_vllm_metrics(text: str) -> EngineMetrics:
    """vLLM `GET /metrics`. Older servers call the KV gauge `vllm:gpu_cache_usage_perc`."""
    samples = _Samples(text, _VLLM)
    return EngineMetrics(
        requests_running=_int(samples.total("vllm:num_requests_running")),
        requests_waiting=_int(samples.total("vllm:num_requests_waiting")),
        kv_cache_usage_ratio=samples.highest(
            "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"
        ),
        generation_tokens_total=samples.total("vllm:generation_tokens_total"),
        prompt_tokens_total=samples.total("vllm:prompt_tokens_total"),
    )


def parse_llamacpp_metrics(text: str) -> EngineMetrics:
    """llama.cpp `GET /metrics` (the server runs with `--metrics`)."""
    samples = _Samples(text, _LLAMACPP)
    return EngineMetrics(
        requests_running=_int(samples.total("llamacpp:requests_processing")),
        requests_waiting=_int(samples.total("llamacpp:requests_deferred")),
        kv_cache_usage_ratio=samples.highest("llamacpp:kv_cache_usage_ratio"),
        generation_tokens_total=samples.total("llamacpp:tokens_predicted_total"),
        prompt_tokens_total=samples.total("llamacpp:prompt_tokens_total"),
    )


def parse_llamacpp_slots(payload: Any) -> EngineMetrics:
    """llama.cpp `GET /slots`: a list with one object per slot; `is_processing` marks busy ones."""
    if not isinstance(payload, list) or not all(isinstance(slot, dict) for slot in payload):
        raise MetricsFormatError("llama.cpp /slots is not a list of slot objects")
    busy = sum(1 for slot in payload if slot.get("is_processing"))
    return EngineMetrics(slots_busy=busy, slots_total=len(payload))


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


def _opt_int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_ollama_ps(payload: Any) -> EngineMetrics:
    """Ollama `GET /api/ps`: the loaded models and the VRAM each holds (`size_vram`)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models", []), list):
        raise MetricsFormatError("Ollama /api/ps has no `models` list")
    models = tuple(
        LoadedModel(
            name=str(entry.get("name") or entry.get("model") or "?"),
            size_bytes=_opt_int(entry.get("size")),
            vram_bytes=_opt_int(entry.get("size_vram")),
            expires_at=parse_timestamp(entry.get("expires_at")),
        )
        for entry in payload.get("models") or []
        if isinstance(entry, dict)
    )
    vram = [model.vram_bytes for model in models if model.vram_bytes is not None]
    return EngineMetrics(loaded_models=models, engine_vram_bytes=sum(vram) if models else 0)


def parse_comfyui_queue(payload: Any) -> EngineMetrics:
    """ComfyUI `GET /queue`: `queue_running` and `queue_pending` are lists of prompts."""
    if not isinstance(payload, dict):
        raise MetricsFormatError("ComfyUI /queue is not an object")
    running, pending = payload.get("queue_running"), payload.get("queue_pending")
    if not isinstance(running, list) or not isinstance(pending, list):
        raise MetricsFormatError("ComfyUI /queue lacks queue_running/queue_pending lists")
    return EngineMetrics(requests_running=len(running), requests_waiting=len(pending))


def parse_comfyui_system_stats(payload: Any) -> EngineMetrics:
    """ComfyUI `GET /system_stats`: memory PyTorch reserved (`torch_vram_total`) on its devices.

    `vram_total - vram_free` would be the whole GPU's use, other processes included; the
    torch figure is what ComfyUI itself holds.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("devices"), list):
        raise MetricsFormatError("ComfyUI /system_stats has no `devices` list")
    held = [
        _opt_int(device.get("torch_vram_total"))
        for device in payload["devices"]
        if isinstance(device, Mapping) and device.get("type") == "cuda"
    ]
    known = [value for value in held if value is not None]
    return EngineMetrics(engine_vram_bytes=sum(known) if known else None)


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
