"""The routing table built from a profile, and the skip reasons (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aitherctl.adapters.profile_store import ProfileCatalog
from aitherctl.core.profile import Engine, Profile, Service
from aitherctl.core.routing import (
    RouteContext,
    Tier,
    build_routing,
    queue_skip_reason,
    service_candidate,
    static_skip_reason,
    tier_for_effort_default,
)
from aitherctl.core.units import MemoryAmount
from aitherctl.errors import ConfigError, NotFoundError

REPO = Path(__file__).resolve().parents[2]


def _profile(
    services: dict[str, Service] | None = None,
    routing: dict[str, Any] | None = None,
    endpoints: dict[str, Any] | None = None,
) -> Profile:
    return Profile(
        name="p",
        description="",
        services=services or {},
        gpu_reserve=MemoryAmount.parse("5%"),
        source="p.yaml",
        routing=routing or {},
        endpoints=endpoints or {},
    )


def _svc(name: str, port: int, engine: Engine = Engine.LLAMACPP, **extra: Any) -> Service:
    return Service(name=name, engine=engine, image="img", port=port, model="/m.gguf", **extra)


CLOUD = {
    "base_url": "https://api.deepseek.com/v1",
    "model": "deepseek-chat",
    "api_key_env": "DEEPSEEK_API_KEY",
    "price": {"input": 0.27, "output": 1.1},
}


def test_default_table_is_the_articles() -> None:
    assert [tier_for_effort_default(e) for e in range(1, 11)] == (
        ["reflex"] * 3 + ["orchestrator"] * 3 + ["reasoning"] * 2 + ["frontier"] * 2
    )


def test_service_candidate_urls() -> None:
    vllm = service_candidate(_svc("orch", 8120, Engine.VLLM, served_name="orchestrator"))
    assert vllm.base_url == "http://127.0.0.1:8120/v1"
    assert vllm.model == "orchestrator"
    assert vllm.health_url == "http://127.0.0.1:8120/health"
    assert vllm.queue_metric == "vllm:num_requests_waiting"
    ollama = service_candidate(_svc("ol", 11434, Engine.OLLAMA, bind="0.0.0.0"))
    assert ollama.health_url == "http://127.0.0.1:11434/api/version"
    assert ollama.metrics_url is None
    assert ollama.local


def test_without_routing_section_every_tier_tries_role_first() -> None:
    profile = _profile({
        "assistant": _svc("assistant", 8090, role="orchestrator"),
        "thinker": _svc("thinker", 8091, role="reasoning"),
        "art": _svc("art", 8188, Engine.COMFYUI),
    })
    table = build_routing(profile)
    assert [t.name for t in table.tiers] == ["reflex", "orchestrator", "reasoning", "frontier"]
    assert [c.name for c in table.tier("reasoning").candidates] == ["thinker", "assistant"]
    assert [c.name for c in table.tier_for(5).candidates] == ["assistant", "thinker"]
    assert "art" not in table.backends  # ComfyUI does not chat


def test_explicit_tiers_and_endpoints() -> None:
    profile = _profile(
        {"fast": _svc("fast", 8001)},
        routing={
            "max_tokens": 256,
            "tiers": {
                "low": {"effort": "1-6", "candidates": ["fast"], "max_queue": 2},
                "high": {"effort": [7, 10], "candidates": [{"endpoint": "deepseek"}, "fast"]},
            },
        },
        endpoints={"deepseek": CLOUD, "ollama": {"base_url": "http://localhost:11434",
                                                 "model": "llama3", "engine": "ollama"}},
    )
    table = build_routing(profile)
    assert table.default_max_tokens == 256
    assert table.tier_for(7).name == "high"
    deepseek = table.backend("deepseek")
    assert not deepseek.local
    assert deepseek.price is not None
    assert deepseek.api_key_env == "DEEPSEEK_API_KEY"
    ollama = table.backend("ollama")
    assert ollama.base_url == "http://localhost:11434/v1"
    assert ollama.local
    assert table.tier("low").max_queue == 2
    with pytest.raises(NotFoundError, match="no tier 'mid'"):
        table.tier("mid")


@pytest.mark.parametrize(
    ("routing", "endpoints", "message"),
    [
        ({"tiers": {"a": {"effort": "1-5", "candidates": ["fast"]}}}, {},
         "no tier covers effort 6-10"),
        ({"tiers": {"a": {"effort": "1-6", "candidates": ["fast"]},
                    "b": {"effort": "6-10", "candidates": ["fast"]}}}, {},
         "effort 6 is already in tier 'a'"),
        ({"tiers": {"a": {"effort": "1-10", "candidates": ["nope"]}}}, {},
         "no service or endpoint 'nope'"),
        ({"tiers": {"a": {"effort": "0-10", "candidates": ["fast"]}}}, {}, "within 1-10"),
        ({"tierz": {}}, {}, "unknown keys ['tierz']"),
        ({}, {"x": {"base_url": "ftp://x", "model": "m"}}, "must start with http:// or https://"),
        ({}, {"x": {"base_url": "https://x", "model": "m", "api_key_env": "sk-123-abc"}},
         "NAME of an environment variable"),
        ({}, {"fast": {"base_url": "https://x", "model": "m"}}, "a service has the same name"),
        ({"tiers": {"a": {"effort": "1-10", "candidates": [{"endpoint": "fast"}]}}}, {},
         "'fast' is not a endpoint"),
    ],
)
def test_config_errors_name_the_file(
    routing: dict[str, Any], endpoints: dict[str, Any], message: str
) -> None:
    profile = _profile({"fast": _svc("fast", 8001)}, routing=routing, endpoints=endpoints)
    with pytest.raises(ConfigError, match=r"p\.yaml") as caught:
        build_routing(profile)
    assert message in caught.value.message


def test_skip_reasons_in_order() -> None:
    profile = _profile(
        {"fast": _svc("fast", 8001), "lazy": _svc("lazy", 8002, on_demand=True)},
        endpoints={"deepseek": CLOUD},
    )
    table = build_routing(profile)
    ctx = RouteContext(running=frozenset({"fast"}), env_keys=frozenset())
    assert static_skip_reason(table.backend("fast"), ctx) is None
    lazy = static_skip_reason(table.backend("lazy"), ctx) or ""
    assert "on-demand service not running" in lazy
    assert static_skip_reason(table.backend("deepseek"), ctx) == "$DEEPSEEK_API_KEY is not set"
    local_only = RouteContext(None, frozenset({"DEEPSEEK_API_KEY"}), local_only=True)
    assert static_skip_reason(table.backend("deepseek"), local_only) == (
        "--local-only: endpoint leaves the machine"
    )
    unknown_state = RouteContext(
        None, frozenset(), remembered_failures={"lazy": "refused (3s ago)"}
    )
    assert static_skip_reason(table.backend("lazy"), unknown_state) == (
        "failed recently: refused (3s ago)"
    )


def test_queue_threshold() -> None:
    candidate = service_candidate(_svc("fast", 8001))
    tier = Tier("t", 1, 10, (candidate,), max_queue=2)
    assert queue_skip_reason(candidate, 2, tier) is None
    assert queue_skip_reason(candidate, None, tier) is None
    assert queue_skip_reason(candidate, 3, tier) == (
        "queue 3 waiting > max_queue 2 (llamacpp:requests_deferred)"
    )
    assert queue_skip_reason(candidate, 99, Tier("t", 1, 10, (candidate,))) is None


@pytest.mark.parametrize("name", ["cpu", "dev", "production", "creative"])
def test_builtin_profiles_have_valid_routing(name: str) -> None:
    catalog = ProfileCatalog(builtin_dir=REPO / "profiles", user_dir=REPO / "no-such-dir")
    table = build_routing(catalog.load(name))
    assert {t.effort_min for t in table.tiers} >= {1}
    assert all(t.candidates for t in table.tiers)


def test_cpu_profile_sends_every_tier_to_llamacpp_first() -> None:
    catalog = ProfileCatalog(builtin_dir=REPO / "profiles", user_dir=REPO / "no-such-dir")
    table = build_routing(catalog.load("cpu"))
    assert {t.candidates[0].name for t in table.tiers} == {"assistant"}
    frontier = [c.name for c in table.tier_for(10).candidates]
    assert frontier == ["assistant", "deepseek", "gemini", "anthropic", "openai"]


def test_extends_inherits_routing_and_endpoints(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        "name: child\nextends: cpu\n"
        "endpoints:\n  mine: {base_url: 'http://127.0.0.1:9999/v1', model: x}\n"
    )
    catalog = ProfileCatalog(builtin_dir=REPO / "profiles", user_dir=tmp_path)
    table = build_routing(catalog.load("child"))
    assert table.tier("frontier").candidates[1].name == "deepseek"
    assert {"mine", "deepseek", "assistant"} <= set(table.backends)
