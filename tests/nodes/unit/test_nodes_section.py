"""A profile's `nodes:` and `cloud:`: read with the same one-line file:line errors as services,
and a node is a routing candidate that is skipped until an instance of it runs."""

from __future__ import annotations

import textwrap

import pytest

from aitherctl.errors import ConfigError
from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.problems import problems_of
from aitherctl.profiles.profile import Engine, NodeMode, WakeOn
from aitherctl.routing.table import RouteContext, build_routing, static_skip_reason
from aitherctl.units import GIB

GOOD = """
services:
  local: {engine: llamacpp, model: /models/smol.gguf, port: 18080}
nodes:
  reasoning:
    provider: vast
    gpu: RTX 3090
    vram: 24GiB
    max_price_per_hour: 0.20
    engine: vllm
    model: casperhansen/deepseek-r1-distill-qwen-14b-awq
    args: [--max-model-len, 8192]
    env: {HF_TOKEN: "${TOKEN:-none}"}
    on_demand: true
    wake_on: {effort: 7, queue_depth: 3}
    idle_after: 15m
  orchestrator:
    provider: vast
    gpu: RTX 4090
    max_price_per_hour: 0.3
    engine: llamacpp
    model: /models/orch.gguf
    always_on: true
cloud: {daily_cap: 5, warn_at: 80%, hard_stop: true}
routing:
  tiers:
    low: {effort: 1-6, candidates: [local]}
    high: {effort: 7-10, candidates: [{node: reasoning}, local]}
"""


def load(text: str):  # type: ignore[no-untyped-def]
    return load_profile_text(textwrap.dedent(text).lstrip(), "p.yaml", env={})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [problem.message for problem in problems_of(caught.value)]


def test_nodes_and_the_cloud_budget_are_read_with_the_engines_defaults() -> None:
    profile = load(GOOD)
    reasoning = profile.nodes["reasoning"]
    assert reasoning.provider == "vast"
    assert reasoning.gpu == "RTX 3090"
    assert reasoning.vram is not None
    assert reasoning.vram.bytes == 24 * GIB
    assert reasoning.max_price_per_hour_usd == 0.20
    assert reasoning.engine is Engine.VLLM
    assert reasoning.image.startswith("vllm/vllm-openai:")  # the driver's GPU image
    assert reasoning.port == 8000  # vLLM's own port in its container
    assert reasoning.args == ("--max-model-len", "8192")
    assert reasoning.env == (("HF_TOKEN", "none"),)
    assert reasoning.mode is NodeMode.ON_DEMAND
    assert reasoning.wake_on == WakeOn(effort=7, queue_depth=3)
    assert reasoning.idle_after_s == 900
    assert profile.nodes["orchestrator"].mode is NodeMode.ALWAYS_ON
    assert profile.cloud is not None
    assert (profile.cloud.daily_cap_usd, profile.cloud.warn_share, profile.cloud.hard_stop) == (
        5.0,
        0.8,
        True,
    )


def test_a_node_is_a_candidate_skipped_until_an_instance_of_it_runs() -> None:
    table = build_routing(load(GOOD))
    high = table.tier_for(8)
    assert [c.name for c in high.candidates] == ["reasoning", "local"]
    node = high.candidates[0]
    assert (node.origin, node.local, node.model) == (
        "node",
        False,
        "casperhansen/deepseek-r1-distill-qwen-14b-awq",
    )
    ctx = RouteContext(running=frozenset({"local"}), env_keys=frozenset())
    assert static_skip_reason(node, ctx) == "cloud node has no running instance"
    assert static_skip_reason(high.candidates[1], ctx) is None


def test_every_mistake_of_a_node_is_one_line_with_its_file_and_line() -> None:
    assert problems("""
        services: {}
        nodes:
          bad:
            provider: runpod
            gpu: 3090
            vram: 50%
            max_price_per_hour: -1
            engine: vllm
            wake_on: {effort: 12, depth: 3}
            idle_after: soon
            colour: red
          half: {provider: vast, engine: llamacpp, model: m.gguf}
          both:
            provider: vast
            gpu: A100
            max_price_per_hour: 1
            engine: generic
            image: me/server
            port: 9000
            always_on: true
            on_demand: true
        cloud: {daily_cap: 0, warn_at: 150%}
        """) == [
        "p.yaml:3: node 'bad': engine vllm needs a `model` to serve",
        "p.yaml:4: node 'bad': provider: 'runpod' is not a provider (use one of: vast)",
        "p.yaml:5: node 'bad': gpu: must be text, not 3090",
        "p.yaml:6: node 'bad': vram: must be an amount (e.g. 24GiB): a share means nothing "
        "on a rented GPU",
        "p.yaml:7: node 'bad': max_price_per_hour: must be a price in USD an hour above zero, "
        "e.g. 0.20, not -1",
        "p.yaml:9: unknown key 'depth' in wake_on (did you mean 'queue_depth'?)",
        "p.yaml:10: node 'bad': idle_after: 'soon' is not a duration (write e.g. 15m, 90s or 1h)",
        "p.yaml:11: unknown key 'colour' in node 'bad'",
        "p.yaml:12: node 'half': missing `gpu` (the GPU model wanted, e.g. RTX 3090)",
        "p.yaml:12: node 'half': missing `max_price_per_hour` (the most it may cost, in USD an "
        "hour, e.g. 0.20)",
        "p.yaml:13: node 'both': `always_on` and `on_demand` are both true (choose one)",
        "p.yaml:22: cloud.daily_cap must be USD a day above zero, e.g. 5.00, not 0",
    ]


def test_a_node_may_not_share_a_name_with_a_service_and_a_tier_names_it_as_a_node() -> None:
    assert problems("""
        services:
          same: {engine: llamacpp, model: /m.gguf, port: 18080}
        nodes:
          same: {provider: vast, gpu: RTX 3090, max_price_per_hour: 0.2, engine: llamacpp,
                 model: /m.gguf}
        """) == [
        "p.yaml:4: nodes.same: a service or endpoint has the same name; rename one of them"
    ]
    assert problems("""
        services:
          a: {engine: llamacpp, model: /m.gguf, port: 18080}
        routing:
          tiers:
            all: {effort: 1-10, candidates: [{node: a}]}
        """) == ["p.yaml:5: routing.tiers.all.candidates: 'a' is not a node"]
