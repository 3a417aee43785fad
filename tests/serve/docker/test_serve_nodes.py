"""`aitherctl serve` (its own process) creates, routes to and destroys rented nodes through the
Vast.ai contract double (tests/doubles/vast_api.py), which starts a REAL llama.cpp container
(SmolLM2) per instance after its boot delay: so the node really answers, with the key aitherctl
generated for it.

What is waited on is always a condition (`GET /status`, the double's state, the records),
never a length of time."""

from __future__ import annotations

import re
import threading
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
    clean_namespace: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
    tmp_path: Path,
) -> None:
    state = _double(clean_namespace, namespace)
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


def test_the_local_queue_reaching_wake_on_wakes_the_node_while_local_answers_everyone(
    clean_namespace: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
) -> None:
    state = _double(clean_namespace, namespace)
    local = llama_service(free_port(), max_concurrency=1)
    profile = {
        "services": {"local": local},
        "nodes": {"reasoning": _node(wake_on={"queue_depth": 2})},
        "cloud": {"daily_cap": 5.0},
        "routing": {
            "tiers": {
                "any": {
                    "effort": "1-10",
                    "candidates": [{"service": "local"}, {"node": "reasoning"}],
                },
            }
        },
    }
    (profile_dir / "dev.yaml").write_text(yaml.safe_dump(profile))
    with serve_vast(state) as vast_url:
        env = {"VAST_URL": vast_url, "VAST_API_KEY": state.api_key}
        with serving("dev", env=env) as served:
            served.wait_state("local", "ready", timeout_s=120)
            answers: list[httpx.Response] = []

            def slow() -> None:  # llama.cpp's ignore_eos: exactly 300 tokens, a few seconds
                answers.append(
                    httpx.post(
                        served.url + "/v1/chat/completions",
                        json={
                            "model": "local",
                            "messages": CHAT["messages"],
                            "max_tokens": 300,
                            "ignore_eos": True,
                        },
                        timeout=300,
                        trust_env=False,
                    )
                )

            busy = [threading.Thread(target=slow) for _ in range(3)]
            for thread in busy:
                thread.start()
            _wait(lambda: served.backend("local")["queued"] == 2, "two waiting locally")
            fourth = _chat(served.url)  # arrives with two waiting: the node is woken
            for thread in busy:
                thread.join(timeout=300)
            assert fourth.status_code == 200, fourth.text
            assert [a.status_code for a in answers] == [200, 200, 200]
            waking = [e for e in served.events() if e["event"] == "node_waking"]
            assert [(e["backend"], e["detail"]) for e in waking] == [
                ("reasoning", "2 waiting locally ≥ 2")
            ]
            served.wait_state("reasoning", "ready", timeout_s=180)


def test_the_provider_down_the_node_is_not_created_and_the_local_tier_answers(
    clean_namespace: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
) -> None:
    state = _double(clean_namespace, namespace)
    state.down = True  # every route answers 503
    profile = {
        "services": {"local": llama_service(free_port())},
        "nodes": {"reasoning": _node(wake_on={"effort": 7})},
        "cloud": {"daily_cap": 5.0},
        "routing": {
            "tiers": {
                "heavy": {
                    "effort": "1-10",
                    "candidates": [{"node": "reasoning"}, {"service": "local"}],
                },
            }
        },
    }
    (profile_dir / "dev.yaml").write_text(yaml.safe_dump(profile))
    with serve_vast(state) as vast_url:
        env = {"VAST_URL": vast_url, "VAST_API_KEY": state.api_key}
        with serving("dev", env=env) as served:
            answer = _chat(served.url, effort=9)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-aither-backend"] == "local"

            def failed() -> list[dict[str, Any]]:
                return [e for e in served.events() if e["event"] == "load_failed"]

            _wait(failed, "the failed create", timeout_s=60)
            assert failed()[0]["backend"] == "reasoning"
            assert "503" in failed()[0]["detail"]
            assert served.backend("reasoning")["state"] == "stopped"
            # Tried again at once by the next heavy request? No: not before NODE_RETRY_S.
            again = _chat(served.url, effort=9)
            assert again.headers["x-aither-backend"] == "local"
            assert [e["event"] for e in served.events()].count("node_waking") == 1
    assert state.instances == {}


def test_a_request_that_names_a_stopped_node_waits_for_it_and_gets_its_answer(
    clean_namespace: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
) -> None:
    state = _double(clean_namespace, namespace)
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


def test_a_streaming_request_that_names_a_stopped_node_hears_keep_alives_while_it_boots(
    clean_namespace: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
) -> None:
    """The wait is longer than serve's first keep-alive (1 s): the double alone waits its 1 s
    boot delay after the create call before it starts the container."""
    state = _double(clean_namespace, namespace)
    profile = {"services": {}, "nodes": {"reasoning": _node()}, "cloud": {"daily_cap": 5.0}}
    (profile_dir / "dev.yaml").write_text(yaml.safe_dump(profile))
    with serve_vast(state) as vast_url:
        env = {"VAST_URL": vast_url, "VAST_API_KEY": state.api_key}
        with (
            serving("dev", env=env) as served,
            httpx.stream(
                "POST",
                served.url + "/v1/chat/completions",
                json={"model": "reasoning", "stream": True, **CHAT},
                timeout=300,
                trust_env=False,
            ) as response,
        ):
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line]
    assert lines[0] == ": waiting for a backend"
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    assert any('"content"' in line for line in data)


def test_at_the_daily_cap_serve_destroys_its_node_and_creates_none(
    clean_namespace: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
    tmp_path: Path,
) -> None:
    """An always-on node ($0.152/h with its storage) under a $0.0005 daily cap: about 12 s of
    it. The warning at 80%, then the hard stop: destroyed, and not created again (not even
    for a request that names it); the ledger's spend within one second's price of the
    double's own charges."""
    state = _double(clean_namespace, namespace)
    profile = {
        "services": {},
        "nodes": {"orch": _node(always_on=True)},
        "cloud": {"daily_cap": 0.0005, "warn_at": "80%"},
    }
    (profile_dir / "dev.yaml").write_text(yaml.safe_dump(profile))
    with serve_vast(state) as vast_url:
        env = {"VAST_URL": vast_url, "VAST_API_KEY": state.api_key}
        with serving("dev", env=env) as served:

            def kinds() -> list[str]:
                return [e["event"] for e in served.events()]

            _wait(lambda: "budget_cap" in kinds(), "the cap", timeout_s=300)
            _wait(lambda: state.instances == {}, "the hard stop's destroy", timeout_s=60)
            served.wait_state("orch", "stopped", timeout_s=60)
            assert kinds().index("budget_warning") < kinds().index("budget_cap")
            refused = _chat(served.url, model="orch")
            assert refused.status_code == 503, refused.text
            log = served.log()
        creates = [r for r in state.requests if r[0] == "PUT"]
        assert len(creates) == 1
        # (the spend is read once a second: its digits depend on when the tick came)
        assert re.search(r"warning: cloud spend today \$0\.000\d+ is \d+% of the \$0\.00 cap", log)
        assert re.search(r"cap reached: cloud spend today \$0\.000\d+ is \d+% of the", log)
        [record] = NodeRecords(tmp_path / "state" / "nodes").all()
        price = record.price_per_hour_usd or 0.0
        spent = Ledger(tmp_path / "data" / "ledger.sqlite3").spent_since(0)
        assert abs(spent - state.charges_usd()) <= price / 3600


def test_kill_9_of_serve_right_after_a_create_then_nodes_finds_and_destroys_it(
    vast_url: str, vast_state: VastState, profile_dir: Path
) -> None:
    """The first promise with a real serve: killed with SIGKILL once the provider created
    its always-on node's instance and before the answer reached it (its record holds the
    intent only), `aitherctl nodes destroy --all` finds the instance by its label."""
    import signal

    from tests.conftest import run_cli

    profile = {"services": {}, "nodes": {"orch": _node(always_on=True)}, "cloud": {"daily_cap": 5}}
    (profile_dir / "dev.yaml").write_text(yaml.safe_dump(profile))
    vast_state.hold_create = threading.Event()
    try:
        with serving("dev", expect_exit=None) as served:
            assert vast_state.created.wait(timeout=120), served.log_tail()
            served.process.send_signal(signal.SIGKILL)
            assert served.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        vast_state.hold_create.set()
    [record] = NodeRecords().all()
    assert (record.state.value, record.instance_id) == ("creating", None)
    assert len(vast_state.instances) == 1  # paid for, and its creator is dead
    gone = run_cli("nodes", "destroy", "--all", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert vast_state.instances == {}
    assert [r.state.value for r in NodeRecords().all()] == ["gone"]
