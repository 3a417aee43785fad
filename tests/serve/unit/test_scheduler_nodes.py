"""Rented nodes in the scheduler, driven step by step through the effects fake
(tests/serve/unit/fake_effects.py): when a node is created (a request's effort, the local queue,
a request that named it, `always_on`), when it is destroyed (idle, the daily cap), and what the
requests see meanwhile. No provider, no Docker, no sleeps: each create and destroy returns when
the test says (the real effects keep their end-to-end test against the Vast double,
tests/serve/docker/test_serve_nodes.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from aitherctl.errors import AitherError
from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.profile import Profile
from aitherctl.routing.table import build_routing
from aitherctl.serve.effects import NodeAddress
from aitherctl.serve.errors import LoadFailed
from aitherctl.serve.model import Priority
from aitherctl.serve.scheduler import NODE_RETRY_S, Scheduler
from aitherctl.serve.states import BackendState
from tests.serve.unit.fake_effects import FakeEffects, address
from tests.serve.unit.scenario import Clock, llama, ram_pools, run, settle

READY, STOPPED, LOADING = BackendState.READY, BackendState.STOPPED, BackendState.LOADING


def node(**extra: Any) -> dict[str, Any]:
    return {
        "provider": "vast",
        "gpu": "RTX 3090",
        "max_price_per_hour": 0.20,
        "engine": "llamacpp",
        "image": "llama",
        "model": "/models/x.gguf",
        "port": 8080,
        **extra,
    }


def node_profile(
    nodes: dict[str, dict[str, Any]],
    services: dict[str, dict[str, Any]] | None = None,
    cloud: dict[str, Any] | None = None,
) -> Profile:
    doc = {
        "name": "p",
        "services": services or {},
        "nodes": nodes,
        "cloud": cloud or {"daily_cap": 5.0},
    }
    return load_profile_text(yaml.safe_dump(doc), "p.yaml")


def scheduler(
    prof: Profile,
    effects: FakeEffects,
    clock: Clock,
    nodes_running: dict[str, NodeAddress] | None = None,
    log: list[str] | None = None,
) -> Scheduler:
    return Scheduler(
        prof,
        build_routing(prof),
        effects,
        ram_pools(),
        clock=clock,
        running=set(effects.running),
        nodes=effects,
        nodes_running=nodes_running,
        log=(log.append if log is not None else None),
    )


def events(sched: Scheduler, *kinds: str) -> list[tuple[str, str | None, str]]:
    return [
        (e.kind, e.backend, e.detail) for e in sched.events.recent if not kinds or e.kind in kinds
    ]


# ---- serve routes to a node whose instance runs ---------------------------------------------


@run
async def test_a_node_running_when_serve_starts_is_ready_at_its_address_with_its_key() -> None:
    effects = FakeEffects()
    sched = scheduler(
        node_profile({"big": node(), "other": node()}),
        effects,
        Clock(),
        nodes_running={"big": address("r1", port=41234)},
    )
    big, other = sched.backends["big"], sched.backends["other"]
    assert big.state is READY
    assert big.candidate.base_url == "http://127.0.0.1:41234/v1"
    assert big.candidate.api_key == "key-r1"
    assert "key-r1" not in repr(big.candidate)  # never in a log line or a traceback
    assert sched.try_acquire("big") is not None
    # No instance: not a running candidate (the gateway passes it over, as a stopped service).
    assert other.state is STOPPED
    assert other.candidate.base_url == ""
    assert sched.snapshot()["backends"][1]["kind"] == "node"


# ---- waking an on-demand node ---------------------------------------------------------------


@run
async def test_a_request_whose_effort_reaches_wake_on_creates_the_node_once() -> None:
    effects = FakeEffects()
    sched = scheduler(node_profile({"big": node(wake_on={"effort": 7})}), effects, Clock())
    sched.note_request(6)
    await settle()
    assert effects.kinds("create_node") == []
    sched.note_request(7, "req-1")
    create = await effects.next_call("create_node", "big")
    assert sched.backends["big"].state is LOADING
    assert sched.backends["big"].candidate.base_url == ""  # requests go elsewhere meanwhile
    sched.note_request(9)  # a second heavy request while it boots: no second instance
    await settle()
    assert effects.kinds("create_node") == [("create_node", "big")]
    create.succeed(address("r1"))
    await settle()
    assert sched.backends["big"].state is READY
    assert sched.backends["big"].candidate.base_url == "http://127.0.0.1:41234/v1"
    assert ("node_waking", "big", "effort 7 ≥ 7") in events(sched, "node_waking")
    assert [e.request for e in sched.events.recent if e.kind == "node_waking"] == ["req-1"]


@run
async def test_the_local_queue_reaching_wake_on_creates_the_node() -> None:
    effects = FakeEffects()
    prof = node_profile(
        {"big": node(wake_on={"queue_depth": 3})},
        services={"chat": llama(1, max_concurrency=1)},
    )
    sched = scheduler(prof, effects, Clock())
    waiting = [asyncio.create_task(sched.acquire("chat", Priority.NORMAL)) for _ in range(2)]
    await effects.next_call("start", "chat")  # the local service loads; two wait for it
    sched.note_request(None)
    await settle()
    assert effects.kinds("create_node") == []  # two waiting: under the threshold
    waiting.append(asyncio.create_task(sched.acquire("chat", Priority.NORMAL)))
    await settle()
    sched.note_request(None)
    await effects.next_call("create_node", "big")
    assert ("node_waking", "big", "3 waiting locally ≥ 3") in events(sched, "node_waking")
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


@run
async def test_a_request_that_named_the_node_waits_for_it_and_is_then_served_there() -> None:
    effects = FakeEffects()
    sched = scheduler(node_profile({"big": node()}), effects, Clock())
    lease_task = asyncio.create_task(sched.acquire("big", Priority.NORMAL, "req-9"))
    create = await effects.next_call("create_node", "big")
    assert not lease_task.done()
    create.succeed(address("r1"))
    lease = await lease_task
    assert lease.backend.candidate.base_url == "http://127.0.0.1:41234/v1"
    kinds = [kind for kind, _, _ in events(sched)]
    assert kinds[:3] == ["queued", "loading", "node_created"]
    sched.release(lease)


@run
async def test_a_create_that_fails_fails_its_waiters_and_is_not_tried_again_at_once() -> None:
    effects = FakeEffects()
    clock = Clock()
    sched = scheduler(node_profile({"big": node(wake_on={"effort": 7})}), effects, clock)
    lease_task = asyncio.create_task(sched.acquire("big", Priority.NORMAL))
    (await effects.next_call("create_node", "big")).fail(
        AitherError("node 'big': no vast offer of RTX 3090 at most $0.200/h")
    )
    with pytest.raises(LoadFailed, match="no vast offer"):
        await lease_task
    assert sched.backends["big"].state is STOPPED
    assert sched.wake_node("big", "effort 8 ≥ 7") is False  # not hammering a failing provider
    clock.advance(NODE_RETRY_S)
    assert sched.wake_node("big", "effort 8 ≥ 7") is True
    await effects.next_call("create_node", "big")


# ---- idle destroy and always_on --------------------------------------------------------------


@run
async def test_an_idle_node_is_destroyed_after_its_idle_time_counted_from_its_last_request() -> (
    None
):
    effects = FakeEffects()
    clock = Clock()
    sched = scheduler(
        node_profile({"big": node(idle_after="60s")}),
        effects,
        clock,
        nodes_running={"big": address("r1")},
    )
    effects.nodes_running = {"big": address("r1")}
    clock.advance(50)
    lease = sched.try_acquire("big")
    assert lease is not None
    clock.advance(100)  # busy: never destroyed under a request
    await sched._tick()
    sched.release(lease)
    clock.advance(59)
    await sched._tick()
    assert effects.kinds("destroy_node") == []
    clock.advance(1)
    tick = asyncio.create_task(sched._tick())
    destroy = await effects.next_call("destroy_node", "big")
    assert destroy.args == ("r1",)
    assert sched.backends["big"].state is BackendState.EVICTING
    destroy.succeed()
    await tick
    assert sched.backends["big"].state is STOPPED
    assert sched.backends["big"].candidate.base_url == ""
    assert ("destroyed", "big", "idle for 60s") in events(sched, "destroyed")


@run
async def test_a_node_found_running_at_start_is_idle_from_when_serve_knew_it() -> None:
    """Not from when the instance was created (hours ago, perhaps): serve's clock far from zero
    and the node's record older than serve do not make it look idle at once."""
    effects = FakeEffects()
    clock = Clock()
    sched = scheduler(
        node_profile({"big": node(idle_after="60s")}),
        effects,
        clock,
        nodes_running={"big": address("r1")},
    )
    effects.nodes_running = {"big": address("r1")}
    await sched._tick()
    clock.advance(59)
    await sched._tick()
    assert effects.kinds("destroy_node") == []
    clock.advance(1)
    tick = asyncio.create_task(sched._tick())
    (await effects.next_call("destroy_node", "big")).succeed()
    await tick
    assert sched.backends["big"].state is STOPPED


@run
async def test_an_always_on_node_is_created_at_start_and_replaced_when_it_dies() -> None:
    effects = FakeEffects()
    sched = scheduler(node_profile({"orch": node(always_on=True)}), effects, Clock())
    await sched._tick()
    (await effects.next_call("create_node", "orch")).succeed(address("r1"))
    await settle()
    assert sched.backends["orch"].state is READY
    effects.nodes_running.clear()  # the instance died at the provider
    await sched.reconcile()
    assert sched.backends["orch"].state is STOPPED
    assert ("gone", "orch", "its instance is no longer running") in events(sched, "gone")
    await sched._tick()
    (await effects.next_call("create_node", "orch")).succeed(address("r2", port=41235))
    await settle()
    assert sched.backends["orch"].candidate.base_url == "http://127.0.0.1:41235/v1"
    assert effects.kinds("create_node") == [("create_node", "orch")] * 2


@run
async def test_serve_stopping_destroys_the_nodes_it_would_destroy_once_idle() -> None:
    """Nothing ends an on-demand node once serve is gone, and it pays by the second: it is
    destroyed at shutdown. An always-on node, and one with no idle time, keep running, as they
    would while serve runs."""
    effects = FakeEffects()
    running = {"big": address("r1"), "orch": address("r2"), "keep": address("r3")}
    sched = scheduler(
        node_profile({"big": node(idle_after="15m"), "orch": node(always_on=True), "keep": node()}),
        effects,
        Clock(),
        nodes_running=running,
    )
    effects.nodes_running = dict(running)
    closing = asyncio.create_task(sched.close(drain_s=0))
    destroy = await effects.next_call("destroy_node", "big")
    assert destroy.args == ("r1",)
    destroy.succeed()
    await closing
    assert effects.kinds("destroy_node") == [("destroy_node", "big")]
    assert ("destroyed", "big", "serve stopped") in events(sched, "destroyed")
    assert sched.backends["orch"].state is READY
    assert sched.backends["keep"].state is READY


@run
async def test_a_node_that_left_the_profile_is_destroyed_once_its_last_request_ends() -> None:
    """A followed switch to a profile without the node: nothing would look after it any more.
    An always-on node that left keeps running, as it does at shutdown."""
    effects = FakeEffects()
    running = {"big": address("r1"), "orch": address("r2")}
    first = node_profile({"big": node(idle_after="15m"), "orch": node(always_on=True)})
    sched = scheduler(first, effects, Clock(), nodes_running=running)
    effects.nodes_running = dict(running)
    lease = sched.try_acquire("big")
    assert lease is not None
    second = node_profile({}, services={"chat": llama(port=9101)})
    sched.adopt(second, build_routing(second), ram_pools(), {"chat"})
    await settle()
    assert effects.kinds("destroy_node") == []  # still answering its request
    sched.release(lease)
    destroy = await effects.next_call("destroy_node", "big")
    assert destroy.args == ("r1",)
    destroy.succeed()
    await settle()
    assert effects.kinds("destroy_node") == [("destroy_node", "big")]
    assert ("destroyed", "big", "not in the profile any more") in events(sched, "destroyed")


@run
async def test_a_node_created_elsewhere_is_found_and_used() -> None:
    effects = FakeEffects()
    sched = scheduler(node_profile({"big": node()}), effects, Clock())
    effects.nodes_running = {"big": address("r7")}  # `aitherctl nodes create big`
    await sched.reconcile()
    assert sched.backends["big"].state is READY
    assert sched.backends["big"].candidate.api_key == "key-r7"


# ---- the daily cap -----------------------------------------------------------------------------


@run
async def test_the_warning_share_gives_one_event_and_one_log_line() -> None:
    effects = FakeEffects()
    log: list[str] = []
    sched = scheduler(node_profile({"big": node()}), effects, Clock(), log=log)
    effects.spent_usd = 3.99
    await sched._tick()
    assert events(sched, "budget_warning") == []
    effects.spent_usd = 4.0
    await sched._tick()
    await sched._tick()
    detail = "cloud spend today $4.0000 is 80% of the $5.00 cap"
    assert events(sched, "budget_warning") == [("budget_warning", None, detail)]
    assert log == [f"warning: {detail}"]


@run
async def test_at_the_cap_every_node_is_destroyed_and_none_is_created() -> None:
    effects = FakeEffects()
    log: list[str] = []
    prof = node_profile({"big": node(wake_on={"effort": 7}), "orch": node(always_on=True)})
    sched = scheduler(prof, effects, Clock(), nodes_running={"big": address("r1")}, log=log)
    effects.nodes_running = {"big": address("r1")}
    lease = sched.try_acquire("big")  # even a busy node: the cap is a hard stop
    assert lease is not None
    await sched._tick()  # under the cap: the always-on node is being created
    booting = await effects.next_call("create_node", "orch")
    effects.spent_usd = 5.0
    tick = asyncio.create_task(sched._tick())
    (await effects.next_call("destroy_node", "big")).succeed()
    await tick
    assert sched.backends["big"].state is STOPPED
    assert sched.backends["orch"].cancel.is_set()  # its create is abandoned...
    booting.succeed(address("r2"))
    (await effects.next_call("destroy_node", "orch")).succeed()  # ...and what it made destroyed
    await settle()
    assert sched.backends["orch"].state is STOPPED
    assert sched.cap_reached
    assert sched.wake_node("big", "effort 9 ≥ 7") is False
    await sched._tick()
    assert effects.kinds("create_node") == [("create_node", "orch")]
    assert events(sched, "budget_cap") == [
        (
            "budget_cap",
            None,
            "cloud spend today $5.0000 is 100% of the $5.00 cap: no node is created: "
            "every node is destroyed",
        )
    ]
    assert any(line.startswith("cap reached: ") for line in log)
    sched.release(lease)


# ---- what /status says of a node (ps, status and the monitor render it) ----------------------


@run
async def test_status_gives_each_node_its_price_spend_today_and_idle_time_left() -> None:
    effects = FakeEffects()
    clock = Clock()
    sched = scheduler(
        node_profile({"big": node(idle_after="15m"), "off": node()}),
        effects,
        clock,
        nodes_running={"big": address("r1", price=0.15222)},
    )
    effects.spent_usd = 0.02
    effects.spent_by_node = {"big": 0.0123}
    clock.advance(146)
    await sched._tick()
    snapshot = sched.snapshot()
    big, off = snapshot["backends"]
    assert (big["kind"], big["state"], big["mode"]) == ("node", "ready", "on_demand")
    assert big["price_per_hour_usd"] == 0.15222
    assert big["spent_today_usd"] == 0.0123
    assert big["idle_left_s"] == 900 - 146
    assert (off["state"], off["price_per_hour_usd"], off["idle_left_s"]) == ("stopped", None, None)
    assert snapshot["cloud"] == {
        "spent_today_usd": 0.02,
        "daily_cap_usd": 5.0,
        "cap_reached": False,
    }
    lease = sched.try_acquire("big")
    assert sched.snapshot()["backends"][0]["idle_left_s"] is None  # busy: not counting down
    assert lease is not None
    sched.release(lease)
