"""The routing table built from a profile, and the skip reasons (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aitherctl.errors import ConfigError, NotFoundError
from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.profiles.profile import Engine, Profile, Service
from aitherctl.routing.table import (
    RouteContext,
    Tier,
    build_routing,
    is_loopback_host,
    model_defaults,
    queue_skip_reason,
    service_candidate,
    static_skip_reason,
    tier_for_effort_default,
)
from aitherctl.units import MemoryAmount

REPO = Path(__file__).resolve().parents[3]


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
    profile = _profile(
        {
            "assistant": _svc("assistant", 8090, role="orchestrator"),
            "thinker": _svc("thinker", 8091, role="reasoning"),
            "art": _svc("art", 8188, Engine.COMFYUI),
        }
    )
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
        endpoints={
            "deepseek": CLOUD,
            "ollama": {"base_url": "http://localhost:11434", "model": "llama3", "engine": "ollama"},
        },
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
        (
            {"tiers": {"a": {"effort": "1-5", "candidates": ["fast"]}}},
            {},
            "no tier covers effort 6-10",
        ),
        (
            {
                "tiers": {
                    "a": {"effort": "1-6", "candidates": ["fast"]},
                    "b": {"effort": "6-10", "candidates": ["fast"]},
                }
            },
            {},
            "effort 6 is already in tier 'a'",
        ),
        (
            {"tiers": {"a": {"effort": "1-10", "candidates": ["nope"]}}},
            {},
            "no service, endpoint or node 'nope'",
        ),
        ({"tiers": {"a": {"effort": "0-10", "candidates": ["fast"]}}}, {}, "within 1-10"),
        ({"tierz": {}}, {}, "unknown keys ['tierz']"),
        ({}, {"x": {"base_url": "ftp://x", "model": "m"}}, "must start with http:// or https://"),
        (
            {},
            {"x": {"base_url": "https://x", "model": "m", "api_key_env": "sk-123-abc"}},
            "NAME of an environment variable",
        ),
        ({}, {"fast": {"base_url": "https://x", "model": "m"}}, "a service has the same name"),
        (
            {"tiers": {"a": {"effort": "1-10", "candidates": [{"endpoint": "fast"}]}}},
            {},
            "'fast' is not a endpoint",
        ),
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


# ---- where this machine ends (issue 7 §4: --local-only is loopback only) --------------------


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("api.localhost", True),
        ("::ffff:127.0.0.1", True),
        ("192.168.1.20", False),
        ("10.0.0.5", False),
        ("172.16.3.4", False),
        ("0.0.0.0", False),
        ("gpu-box", False),
        ("gpu-box.lan", False),
        ("8.8.8.8", False),
    ],
)
def test_only_loopback_is_this_machine(host: str, local: bool) -> None:
    assert is_loopback_host(host) is local


def test_lan_endpoint_is_not_local_and_local_only_skips_it() -> None:
    lan = {"base_url": "http://192.168.1.20:8080/v1", "model": "m"}
    table = build_routing(
        _profile(
            endpoints={"lan": lan, "here": {"base_url": "http://localhost:8081/v1", "model": "m"}}
        )
    )
    assert not table.backend("lan").local
    assert table.backend("here").local
    ctx = RouteContext(running=None, env_keys=frozenset(), local_only=True)
    assert static_skip_reason(table.backend("lan"), ctx) == (
        "--local-only: endpoint leaves the machine"
    )
    assert static_skip_reason(table.backend("here"), ctx) is None


def test_local_true_cannot_make_a_lan_host_local() -> None:
    spec = {"base_url": "http://10.0.0.5:8080/v1", "model": "m", "local": True}
    with pytest.raises(ConfigError, match=r"local: true, but 10\.0\.0\.5 is not this machine"):
        build_routing(_profile(endpoints={"lan": spec}))


@pytest.mark.parametrize("url", ["http://192.168.1.20:8080/v1", "http://gpu-box:8000/v1"])
def test_api_key_never_over_plain_http_to_another_host(url: str) -> None:
    spec = {"base_url": url, "model": "m", "api_key_env": "LAN_KEY"}
    with pytest.raises(ConfigError, match="API key would travel unencrypted"):
        build_routing(_profile(endpoints={"lan": spec}))
    for fine in ("https://gpu-box/v1", "http://127.0.0.1:8080/v1"):
        build_routing(_profile(endpoints={"ok": {**spec, "base_url": fine}}))


# ---- request body per endpoint (issue 7 §3) ---------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-5", ("max_completion_tokens", "omit")),
        ("gpt-5-mini", ("max_completion_tokens", "omit")),
        ("gpt-5.1", ("max_completion_tokens", "omit")),
        ("o1", ("max_completion_tokens", "omit")),
        ("o3-mini", ("max_completion_tokens", "omit")),
        ("o4-mini", ("max_completion_tokens", "omit")),
        ("openai/gpt-5", ("max_completion_tokens", "omit")),
        ("gpt-4o", ("max_tokens", "pass")),
        ("gpt-4.1-mini", ("max_tokens", "pass")),
        ("deepseek-v4-flash", ("max_tokens", "pass")),
        ("omni-7b", ("max_tokens", "pass")),
    ],
)
def test_model_family_defaults(model: str, expected: tuple[str, str]) -> None:
    assert model_defaults(model) == expected


def test_endpoint_body_settings_override_the_family() -> None:
    table = build_routing(
        _profile(
            endpoints={
                "o": {"base_url": "https://api.example.test/v1", "model": "gpt-5"},
                "custom": {
                    "base_url": "https://api.example.test/v1",
                    "model": "gpt-5",
                    "max_tokens_field": "max_tokens",
                    "temperature": 1,
                },
                "local": {"base_url": "http://127.0.0.1:9/v1", "model": "gpt-5", "engine": "vllm"},
            }
        )
    )
    assert (table.backend("o").max_tokens_field, table.backend("o").temperature) == (
        "max_completion_tokens",
        "omit",
    )
    assert (table.backend("custom").max_tokens_field, table.backend("custom").temperature) == (
        "max_tokens",
        1.0,
    )
    # A self-hosted server (vllm, llamacpp engine) takes max_tokens whatever the model's name.
    assert table.backend("local").max_tokens_field == "max_tokens"
    with pytest.raises(ConfigError, match="max_tokens_field must be one of"):
        build_routing(
            _profile(
                endpoints={
                    "x": {
                        "base_url": "https://a.test/v1",
                        "model": "m",
                        "max_tokens_field": "max_len",
                    }
                }
            )
        )
    with pytest.raises(ConfigError, match="temperature must be pass, omit or a number"):
        build_routing(
            _profile(
                endpoints={
                    "x": {"base_url": "https://a.test/v1", "model": "m", "temperature": "hot"}
                }
            )
        )


# ---- checked when the profile loads, with file:line (issue 7 §4) ------------------------------

GOOD_HEAD = """\
name: {name}
services:
  fast:
    engine: llamacpp
    image: img
    model: /m.gguf
    port: 8001
"""


def _load_text(tmp_path: Path, name: str, body: str) -> ConfigError:
    path = tmp_path / f"{name}.yaml"
    path.write_text(GOOD_HEAD.format(name=name) + body)
    catalog = ProfileCatalog(builtin_dir=tmp_path / "none", user_dir=tmp_path)
    with pytest.raises(ConfigError) as caught:
        catalog.load(name)
    return caught.value


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        # line 8 is `routing:`, 9 `tiers:`, 10 the first tier, 11 the second
        (
            "routing:\n  tiers:\n    a: {effort: 1-5, candidates: [fast]}\n"
            "    b: {effort: 7-10, candidates: [fast]}\n",
            9,
            "no tier covers effort 6 (tiers must cover 1-10)",
        ),
        (
            "routing:\n  tiers:\n    a: {effort: 1-6, candidates: [fast]}\n"
            "    b: {effort: 6-10, candidates: [fast]}\n",
            11,
            "effort 6 is already in tier 'a'",
        ),
        (
            "routing:\n  tiers:\n    a:\n      effort: 1-10\n      candidates:\n        - fast\n"
            "        - nope\n",
            14,
            "no service, endpoint or node 'nope'",
        ),
        (
            "endpoints:\n  x:\n    base_url: 'htp://api.example.test/v1'\n    model: m\n",
            10,
            "must start with http:// or https://",
        ),
        (
            "endpoints:\n  x:\n    base_url: 'https://api.example.test:99999/v1'\n    model: m\n",
            10,
            "invalid port",
        ),
        (
            "endpoints:\n  x:\n    base_url: 'https://api.example.test/v1'\n    model: m\n"
            "    price: {input: -1, output: 2}\n",
            12,
            "must be a number >= 0",
        ),
        (
            "endpoints:\n  x:\n    base_url: 'https://api.example.test/v1'\n    model: m\n"
            "    price: {input: cheap, output: 2}\n",
            12,
            "must be a number >= 0",
        ),
        (
            "budget:\n  warn_at: 50%\n  daily_usd: -3\n",
            10,
            "budget.daily_usd must be a number of US dollars >= 0",
        ),
        ("budget:\n  daily_usd: five\n", 9, "budget.daily_usd must be a number"),
    ],
)
def test_routing_mistakes_name_file_and_line_at_load(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    error = _load_text(tmp_path, "broken", body)
    assert error.source == str(tmp_path / "broken.yaml")
    assert error.line == line, error.message
    assert message in error.message
    assert error.message.startswith(f"{tmp_path / 'broken.yaml'}:{line}: ")


def test_inherited_endpoint_mistake_names_the_parent_file(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        GOOD_HEAD.format(name="base")
        + "endpoints:\n  lan:\n    base_url: 'http://192.168.1.9:8000/v1'\n    model: m\n"
        "    api_key_env: LAN_KEY\n"
    )
    (tmp_path / "child.yaml").write_text("name: child\nextends: base\nbudget: {daily_usd: 1}\n")
    catalog = ProfileCatalog(builtin_dir=tmp_path / "none", user_dir=tmp_path)
    with pytest.raises(ConfigError) as caught:
        catalog.load("child")
    assert caught.value.source == str(tmp_path / "base.yaml")
    assert caught.value.line == 10  # base_url
    assert "API key would travel unencrypted" in caught.value.message
