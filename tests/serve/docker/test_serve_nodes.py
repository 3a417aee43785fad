"""`aitherctl serve` (its own process) creates, routes to and destroys rented nodes through the
Vast.ai contract double (tests/doubles/vast_api.py), which starts a REAL llama.cpp container
(SmolLM2) per instance after its boot delay: so the node really answers, with the key aitherctl
generated for it.

What is waited on is always a condition (`GET /status`, the double's state, the records),
never a length of time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aitherctl.nodes.records import NodeRecords
from aitherctl.routing.ledger import Ledger
from tests.conftest import MODEL_FILE, MODELS_DIR, free_port, llama_service, sdk_of
from tests.doubles.vast_api import VastState, serve_vast, standard_offers
from tests.serve.docker.serve_helpers import serving

pytestmark = pytest.mark.docker

CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}


def _node(**extra: Any) -> dict[str, Any]:
    return {
        "provider": "vast",
        "gpu": "RTX 3090",
        "max_price_per_hour": 0.20,
        "engine": "llamacpp",
        "image": "aither-test/llamacpp:latest",
        "model": f"/models/{MODEL_FILE}",
        "served_name": "smollm2",
        "port": 8080,
        "args": ["--ctx-size", "1024", "--threads", "1", "-ngl", "0"],
        **extra,
    }


def _double(docker_engine: object, namespace: str) -> VastState:
    return VastState(
        offers=standard_offers(),
        boot_delay_s=1.0,
        docker=sdk_of(docker_engine),
        models_dir=MODELS_DIR,
        namespace=namespace,
    )


def _wait(condition: Any, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling a condition, not synchronising on time


def _chat(url: str, effort: int | None = None, model: str = "auto") -> httpx.Response:
    headers = {"x-aither-effort": str(effort)} if effort else {}
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": model, **CHAT},
        headers=headers,
        timeout=300,
        trust_env=False,
    )


def test_effort_wakes_a_node_while_the_local_tier_answers_then_serve_routes_to_it_and_idle_destroys_it(  # noqa: E501
    docker_engine: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
    tmp_path: Path,
) -> None:
    state = _double(docker_engine, namespace)
    profile = {
        "services": {"local": llama_service(free_port())},
        "nodes": {"reasoning": _node(wake_on={"effort": 7}, idle_after="5s")},
        "cloud": {"daily_cap": 5.0},
        "routing": {
            "tiers": {
                "light": {"effort": "1-6", "candidates": [{"service": "local"}]},
                "heavy": {
                    "effort": "7-10",
                    "candidates": [{"node": "reasoning"}, {"service": "local"}],
                },
            }
        },
    }
    (profile_dir / "dev.yaml").write_text(yaml.safe_dump(profile))
    with serve_vast(state) as vast_url:
        env = {"VAST_URL": vast_url, "VAST_API_KEY": state.api_key}
        with serving("dev", env=env) as served:
            # No instance yet: the heavy request wakes the node and the local tier answers.
            first = _chat(served.url, effort=8)
            assert first.status_code == 200, first.text
            assert first.headers["x-aither-backend"] == "local"
            waking = [e for e in served.events() if e["event"] == "node_waking"]
            assert [(e["backend"], e["detail"]) for e in waking] == [("reasoning", "effort 8 ≥ 7")]
            served.wait_state("reasoning", "ready", timeout_s=180)
            # Once its engine answers, serve routes to it, with its generated key.
            second = _chat(served.url, effort=8)
            assert second.status_code == 200, second.text
            assert second.headers["x-aither-backend"] == "reasoning"
            assert second.json()["choices"][0]["message"]["content"]
            [record] = NodeRecords(tmp_path / "state" / "nodes").all()
            assert record.api_key
            # Idle for 5 s after its last request: destroyed, at the provider too.
            served.wait_state("reasoning", "stopped", timeout_s=60)
            assert state.instances == {}
            assert [i.label for i in state.destroyed] == [record.label.text()]
            log = served.log()
        assert record.api_key not in log  # the key never reaches serve's log
        assert "node reasoning: created" in log
        assert "node reasoning: destroyed (idle for 5s)" in log
        # The ledger's spend and the double's own charges agree within one second's price.
        price = record.price_per_hour_usd or 0.0
        spent = Ledger(tmp_path / "data" / "ledger.sqlite3").spent_since(0)
        assert spent > 0
        assert abs(spent - state.charges_usd()) <= price / 3600


def test_a_request_that_names_a_stopped_node_waits_for_it_and_gets_its_answer(
    docker_engine: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
) -> None:
    state = _double(docker_engine, namespace)
    profile = {"services": {}, "nodes": {"reasoning": _node()}, "cloud": {"daily_cap": 5.0}}
    (profile_dir / "dev.yaml").write_text(yaml.safe_dump(profile))
    with serve_vast(state) as vast_url:
        env = {"VAST_URL": vast_url, "VAST_API_KEY": state.api_key}
        with serving("dev", env=env) as served:
            answer = _chat(served.url, model="reasoning")
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-aither-backend"] == "reasoning"
            kinds = [e["event"] for e in served.events() if e["backend"] == "reasoning"]
            assert kinds[:4] == ["queued", "loading", "node_created", "loaded"]
            assert len(state.instances) == 1
