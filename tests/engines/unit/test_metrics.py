"""Metric parsing against real llama.cpp output and documented vLLM, Ollama and ComfyUI payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from aitherctl.engines.comfyui import parse_comfyui_queue, parse_comfyui_system_stats
from aitherctl.engines.llamacpp import parse_llamacpp_metrics, parse_llamacpp_slots
from aitherctl.engines.metrics import (
    CounterReading,
    EngineMetrics,
    MetricsFormatError,
    parse_timestamp,
    rate_per_s,
)
from aitherctl.engines.ollama import parse_ollama_ps
from aitherctl.engines.vllm import parse_vllm_metrics

FIXTURES = Path(__file__).parents[2] / "fixtures" / "metrics"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture_json(name: str) -> object:
    return json.loads(fixture_text(name))


def test_vllm_current_names() -> None:
    metrics = parse_vllm_metrics(fixture_text("vllm_metrics.prom"))
    assert metrics.requests_running == 2
    assert metrics.requests_waiting == 3
    assert metrics.kv_cache_usage_ratio == pytest.approx(0.4375)
    assert metrics.generation_tokens_total == 5678.0
    assert metrics.prompt_tokens_total == 1234.0


def test_vllm_older_kv_cache_name() -> None:
    metrics = parse_vllm_metrics(fixture_text("vllm_metrics_v0_6.prom"))
    assert metrics.kv_cache_usage_ratio == pytest.approx(0.125)
    assert (metrics.requests_running, metrics.requests_waiting) == (1, 0)
    assert metrics.generation_tokens_total == 42.0


def test_vllm_sums_counts_over_engine_cores_but_not_ratios() -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 2\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 3\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7\n'
    )
    metrics = parse_vllm_metrics(text)
    assert metrics.requests_running == 5
    assert metrics.kv_cache_usage_ratio == pytest.approx(0.7)


def test_vllm_server_without_the_metrics_reads_unknown() -> None:
    assert parse_vllm_metrics("") == EngineMetrics()


def test_garbage_is_a_format_error() -> None:
    with pytest.raises(MetricsFormatError):
        parse_vllm_metrics("<html>not metrics</html> {")


# Captured from aither-test/llamacpp:latest by tests/fixtures/metrics/capture_llamacpp.sh.
needs_capture = pytest.mark.skipif(
    not (FIXTURES / "llamacpp_slots.json").exists(),
    reason="llama.cpp fixtures not captured yet: run tests/fixtures/metrics/capture_llamacpp.sh",
)


@needs_capture
def test_llamacpp_metrics_from_the_real_server_idle() -> None:
    metrics = parse_llamacpp_metrics(fixture_text("llamacpp_metrics_idle.prom"))
    assert metrics.requests_running == 0
    assert metrics.requests_waiting == 0
    assert metrics.generation_tokens_total == 0


@needs_capture
def test_llamacpp_metrics_from_the_real_server_after_requests() -> None:
    metrics = parse_llamacpp_metrics(fixture_text("llamacpp_metrics_after.prom"))
    assert metrics.requests_running == 0
    assert metrics.generation_tokens_total is not None
    assert metrics.generation_tokens_total > 0
    assert metrics.prompt_tokens_total is not None
    assert metrics.prompt_tokens_total > 0


@needs_capture
def test_llamacpp_slots_from_the_real_server() -> None:
    payload = fixture_json("llamacpp_slots.json")
    metrics = parse_llamacpp_slots(payload)
    assert isinstance(payload, list)
    assert metrics.slots_total == len(payload) >= 1
    assert metrics.slots_busy == 0


def test_llamacpp_slots_counts_busy_slots() -> None:
    slots = [{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]
    assert parse_llamacpp_slots(slots) == EngineMetrics(slots_busy=1, slots_total=2)


def test_llamacpp_slots_rejects_an_error_object() -> None:
    with pytest.raises(MetricsFormatError):
        parse_llamacpp_slots({"error": {"code": 501, "message": "This server does not support"}})


def test_ollama_ps_documented_example() -> None:
    metrics = parse_ollama_ps(fixture_json("ollama_api_ps.json"))
    names = [model.name for model in metrics.loaded_models]
    assert names == ["gemma3", "nomic-embed-text:latest"]
    first = metrics.loaded_models[0]
    assert first.size_bytes == 6591830464
    assert first.vram_bytes == 5333539264
    assert first.expires_at == datetime(
        2025, 10, 17, 16, 47, 7, 933550, tzinfo=timezone(timedelta(hours=-7))
    )
    assert metrics.loaded_models[1].expires_at == datetime(2025, 10, 17, 16, 50, tzinfo=UTC)
    assert metrics.engine_vram_bytes == 5333539264 + 849000000


def test_ollama_with_nothing_loaded_holds_no_vram() -> None:
    assert parse_ollama_ps({"models": []}) == EngineMetrics(engine_vram_bytes=0)


def test_ollama_error_payload() -> None:
    with pytest.raises(MetricsFormatError):
        parse_ollama_ps(["not", "an", "object"])


def test_comfyui_queue_documented_shape() -> None:
    metrics = parse_comfyui_queue(fixture_json("comfyui_queue.json"))
    assert (metrics.requests_running, metrics.requests_waiting) == (1, 2)


def test_comfyui_system_stats_reports_torch_memory() -> None:
    metrics = parse_comfyui_system_stats(fixture_json("comfyui_system_stats.json"))
    assert metrics.engine_vram_bytes == 9663676416


def test_comfyui_on_cpu_reports_no_vram() -> None:
    payload = {"system": {}, "devices": [{"name": "cpu", "type": "cpu", "index": None}]}
    assert parse_comfyui_system_stats(payload).engine_vram_bytes is None


def test_merged_keeps_known_fields_of_both() -> None:
    first = EngineMetrics(requests_running=1, generation_tokens_total=10)
    second = EngineMetrics(slots_busy=1, slots_total=4)
    merged = first.merged(second)
    assert merged == EngineMetrics(
        requests_running=1, generation_tokens_total=10, slots_busy=1, slots_total=4
    )


def test_tokens_per_second_from_counter_deltas() -> None:
    assert rate_per_s(CounterReading(100, 10.0), CounterReading(160, 12.0)) == 30.0


def test_no_rate_from_one_reading_or_a_reset_counter() -> None:
    assert rate_per_s(None, CounterReading(5, 1.0)) is None
    assert rate_per_s(CounterReading(500, 1.0), CounterReading(3, 2.0)) is None
    assert rate_per_s(CounterReading(5, 2.0), CounterReading(6, 2.0)) is None


def test_docker_timestamps_with_nanoseconds() -> None:
    parsed = parse_timestamp("2024-05-01T10:20:30.123456789Z")
    assert parsed == datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=UTC)
    assert parse_timestamp("0001-01-01T00:00:00Z") is None
    assert parse_timestamp("yesterday") is None
