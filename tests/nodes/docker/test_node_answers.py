"""A node created through the Vast.ai double really answers: the double starts a real
llama.cpp container (SmolLM2) on the test engine after its boot delay, the survey learns the
node's address from the provider, the engine answers a chat, and destroy removes it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aitherctl.nodes.model import NodeState
from aitherctl.nodes.operations import accrue, create_node, destroy, survey
from aitherctl.nodes.records import NodeRecords
from aitherctl.nodes.vast import VastProvider
from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.profile import CloudBudget
from aitherctl.routing.ledger import Ledger
from tests.conftest import MODEL_FILE, MODELS_DIR, sdk_of
from tests.doubles.vast_api import VastState, serve_vast
from tests.nodes.conftest import standard_offers

pytestmark = pytest.mark.docker

BUDGET = {"cloud": CloudBudget(daily_cap_usd=5.0), "spent_today_usd": 0.0}

PROFILE = f"""
services: {{}}
nodes:
  reasoning:
    provider: vast
    gpu: RTX 3090
    max_price_per_hour: 0.20
    engine: llamacpp
    image: aither-test/llamacpp:latest
    model: /models/{MODEL_FILE}
    served_name: smollm2
    port: 8080
    args: [--ctx-size, "1024", --threads, "1", -ngl, "0"]
"""


def real_node_double(docker: Any, namespace: str) -> VastState:
    """The Vast double that starts a real llama.cpp container (SmolLM2) per instance, after a
    1 s boot delay, in this test session's namespace."""
    return VastState(
        offers=standard_offers(),
        boot_delay_s=1.0,
        docker=docker,
        models_dir=MODELS_DIR,
        namespace=namespace,
    )


def test_a_created_node_answers_a_chat_and_destroy_removes_its_container(
    docker_engine: object, llama_image: str, namespace: str, tmp_path: Path
) -> None:
    docker = sdk_of(docker_engine)
    state = real_node_double(docker, namespace)
    node = load_profile_text(PROFILE.lstrip(), "dev.yaml", env={}).nodes["reasoning"]
    records = NodeRecords(tmp_path / "nodes")
    with serve_vast(state) as url, httpx.Client(timeout=30) as client:
        vast = VastProvider(client, url, state.api_key)
        record = create_node(vast, records, profile="dev", node=node, machine="box", **BUDGET)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            [view] = survey(vast, records, machine="box").views
            assert view.record is not None
            if view.record.url:
                break
            state.timers[-1].join(timeout=0.5)  # the double's boot
        base = view.record.url
        assert base is not None
        assert base.startswith("http://127.0.0.1:")
        while time.monotonic() < deadline:  # the engine loads its model: /health says when
            try:
                if client.get(base + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a condition, not synchronising on time
        chat = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
        }
        # The engine requires the key aitherctl generated for this node.
        assert client.post(base + "/v1/chat/completions", json=chat).status_code == 401
        answer = client.post(
            base + "/v1/chat/completions",
            json=chat,
            headers={"Authorization": f"Bearer {record.api_key}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        assert [
            c.name
            for c in docker.containers.list(filters={"label": "vast.double"})
            if c.labels.get("ai.aitherctl.namespace") == namespace
        ] == [f"aither-{namespace}-vast-{record.instance_id}"]
        gone = destroy(vast, records, view)
        assert gone.state is NodeState.GONE
        assert [
            c
            for c in docker.containers.list(all=True, filters={"label": "vast.double"})
            if c.labels.get("ai.aitherctl.namespace") == namespace
        ] == []
        # The ledger's spend (accrued per second from the offer's price) and the double's own
        # charges agree to within one second's price.
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        accrue(records, ledger)
        charged = state.charges_usd()
        in_ledger = ledger.spent_since(0)
        assert in_ledger > 0
        assert abs(charged - in_ledger) <= (gone.price_per_hour_usd or 0) / 3600


def test_run_answers_through_a_running_node_with_its_key(
    docker_engine: object,
    llama_image: str,
    namespace: str,
    profile_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tier that names a node: skipped while no instance runs, then, once `aitherctl nodes`
    has seen it running, `run` streams the answer from it (the engine refuses requests without
    the key aitherctl generated, so the answer proves the key went with the request)."""
    from tests.conftest import run_cli

    docker = sdk_of(docker_engine)
    state = real_node_double(docker, namespace)
    tiers = """
cloud: {daily_cap: 5.00}
routing:
  tiers:
    heavy: {effort: 1-10, candidates: [{node: reasoning}]}
"""
    (profile_dir / "dev.yaml").write_text(PROFILE.lstrip() + tiers)
    with serve_vast(state) as url:
        monkeypatch.setenv("VAST_URL", url)
        monkeypatch.setenv("VAST_API_KEY", state.api_key)
        before = run_cli("run", "--direct", "-p", "dev", "--max-tokens", "8", "Say hello.")
        assert before.returncode != 0
        assert "cloud node has no running instance" in before.stderr
        created = run_cli("nodes", "create", "reasoning", "-p", "dev", "--yes")
        assert created.returncode == 0, created.stderr
        deadline = time.monotonic() + 120
        answered = None
        while time.monotonic() < deadline:
            listing = run_cli("nodes", "--json")  # the survey learns the running node's address
            assert listing.returncode == 0, listing.stderr
            if '"state": "running"' in listing.stdout:
                answered = run_cli(
                    "run", "--direct", "-p", "dev", "--max-tokens", "8", "Say hello."
                )
                if answered.returncode == 0:
                    break  # else its engine is still loading the model: ask again
            time.sleep(0.5)  # polling a condition (the double's boot, the model's load)
        assert answered is not None, "the node never ran"
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout.strip()
        status = answered.stderr.strip().splitlines()[-1]
        assert "heavy · reasoning (smollm2)" in status, status
        destroyed = run_cli("nodes", "destroy", "--all", "--yes")
        assert destroyed.returncode == 0, destroyed.stderr
        assert [
            c
            for c in docker.containers.list(all=True, filters={"label": "vast.double"})
            if c.labels.get("ai.aitherctl.namespace") == namespace
        ] == []
