"""serve's real node effects (aitherctl.serve.node_control.NodeControl) against the Vast double
with its real llama.cpp container: a create that meets rate limits while it boots still comes
up, answers with its key and is destroyed with its cost in the ledger; a create abandoned while
it boots destroys what it made. Each step waits on the double's own state (its `created` event,
the create answer held until the test lets it go), never on time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aitherctl.nodes.records import NodeRecords
from aitherctl.nodes.vast import VastProvider
from aitherctl.profiles.loader import load_profile_text
from aitherctl.routing.ledger import Ledger
from aitherctl.serve.errors import LoadFailed
from aitherctl.serve.node_control import NodeControl
from tests.conftest import MODEL_FILE, MODELS_DIR, sdk_of
from tests.doubles.vast_api import VastState, serve_vast, standard_offers

pytestmark = pytest.mark.docker

PROFILE = f"""
services: {{}}
cloud: {{daily_cap: 5.00}}
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


@pytest.fixture
def double(
    docker_engine: object, llama_image: str, namespace: str
) -> Iterator[tuple[VastState, str]]:
    state = VastState(
        offers=standard_offers(),
        boot_delay_s=1.0,
        docker=sdk_of(docker_engine),
        models_dir=MODELS_DIR,
        namespace=namespace,
    )
    with serve_vast(state) as url:
        yield state, url


def _control(state: VastState, url: str, tmp_path: Path) -> NodeControl:
    profile = load_profile_text(PROFILE.lstrip(), "dev.yaml", env={})
    client = httpx.Client(timeout=30)
    return NodeControl(
        profile,
        records=NodeRecords(tmp_path / "nodes"),
        ledger=Ledger(tmp_path / "ledger.sqlite3"),
        provider_for=lambda _name: VastProvider(client, url, state.api_key),
        machine="box",
    )


def _once_created(state: VastState, then: Callable[[], None]) -> threading.Thread:
    """When the double has created the instance (its answer held), do `then`, then let the
    answer go."""
    state.hold_create = threading.Event()

    def act() -> None:
        try:
            if state.created.wait(timeout=120):
                then()
        finally:
            assert state.hold_create is not None
            state.hold_create.set()

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_rate_limits_while_it_boots_do_not_end_the_node_and_its_cost_reaches_the_ledger(
    double: tuple[VastState, str], tmp_path: Path
) -> None:
    state, url = double
    control = _control(state, url, tmp_path)
    node = control.profile.nodes["reasoning"]

    def limit() -> None:
        state.rate_limited = 3  # the next three calls (the boot's status polls) answer 429

    helper = _once_created(state, limit)
    address = control.create_blocking(node, threading.Event())
    helper.join(timeout=10)
    assert state.rate_limited == 0  # the 429s were met, and waited out
    assert len(state.instances) == 1
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    with httpx.Client(timeout=60) as client:
        refused = client.post(address.url + "/v1/chat/completions", json=chat)
        answered = client.post(
            address.url + "/v1/chat/completions",
            json=chat,
            headers={"Authorization": f"Bearer {address.api_key}"},
        )
    assert refused.status_code == 401
    assert answered.status_code == 200, answered.text
    assert control.observe_blocking()["reasoning"].record_id == address.record_id
    control.destroy_blocking(node, address.record_id)
    assert state.instances == {}
    assert control.observe_blocking() == {}
    spend = control.spend_blocking()
    price = address.price_per_hour_usd or 0.0
    assert spend.by_node_usd["reasoning"] > 0
    assert abs(spend.today_usd - state.charges_usd()) <= price / 3600
    assert abs(control.ledger.spent_since(0) - state.charges_usd()) <= price / 3600


def test_a_create_abandoned_while_it_boots_destroys_what_it_made(
    double: tuple[VastState, str], tmp_path: Path
) -> None:
    state, url = double
    control = _control(state, url, tmp_path)
    cancel = threading.Event()
    helper = _once_created(state, cancel.set)
    with pytest.raises(LoadFailed, match="abandoned"):
        control.create_blocking(control.profile.nodes["reasoning"], cancel)
    helper.join(timeout=10)
    assert state.instances == {}
    assert [r.state.value for r in control.records.all()] == ["gone"]
