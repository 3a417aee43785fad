"""The scheduler driven step by step through the effects fake (tests/serve/unit/fake_effects.py):
each effect returns when the test says, so every interleaving below happens exactly, with no
Docker, no sleeps and no timing."""

from __future__ import annotations

import asyncio

import pytest

from aitherctl.errors import RefusedError, SwitchFailedError
from aitherctl.routing.table import build_routing
from aitherctl.serve.effects import GpuReading
from aitherctl.serve.errors import LoadFailed, SchedulerError
from aitherctl.serve.model import Pool, Priority
from aitherctl.serve.states import BackendState, InvalidTransition
from tests.serve.unit.fake_effects import FakeEffects
from tests.serve.unit.scenario import (
    GIB,
    Clock,
    llama,
    profile,
    ram_pools,
    run,
    scheduler,
    settle,
    vllm_sleeping,
)

READY, STOPPED, ASLEEP = BackendState.READY, BackendState.STOPPED, BackendState.ASLEEP


# ---- idle_after counts from when serve knew the service ------------------------------------


@run
async def test_idle_after_counts_from_when_serve_starts_not_from_boot() -> None:
    effects = FakeEffects(running={"chat"})
    clock = Clock()
    sched = scheduler(
        profile({"chat": llama(1, on_demand=False, idle_after="60s")}), effects, clock
    )
    clock.advance(1)
    await sched._tick()
    assert effects.kinds("stop") == []  # one second after start: still there
    clock.advance(60)
    tick = asyncio.create_task(sched._tick())
    (await effects.next_call("stop", "chat")).succeed()
    await tick
    assert sched.backends["chat"].state is STOPPED


@run
async def test_idle_after_counts_from_a_hand_run_up() -> None:
    effects = FakeEffects()
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1, idle_after="60s")}), effects, clock)
    clock.advance(600)
    effects.running.add("chat")  # `aitherctl up chat` in another terminal
    await sched.reconcile()
    assert sched.backends["chat"].state is READY
    clock.advance(1)
    await sched._tick()
    assert effects.kinds("stop") == []


@run
async def test_idle_after_counts_from_a_followed_switch() -> None:
    effects = FakeEffects(running={"old"})
    clock = Clock()
    sched = scheduler(profile({"old": llama(1)}, "first"), effects, clock)
    clock.advance(3600)
    effects.running = {"new"}
    second = profile({"new": llama(2, on_demand=False, idle_after="60s")}, "second")
    sched.adopt(second, build_routing(second), ram_pools(), {"new"})
    clock.advance(1)
    await sched._tick()
    assert effects.kinds("stop") == []
    assert sched.backends["new"].state is READY


@run
async def test_a_resident_put_away_to_make_room_comes_back_when_it_fits() -> None:
    effects = FakeEffects(running={"home"})
    clock = Clock()
    sched = scheduler(
        profile({"home": llama(1, on_demand=False), "guest": llama(2, idle_after="30s")}),
        effects,
        clock,
        ram_pools(600),
    )
    asking = asyncio.create_task(sched.acquire("guest", Priority.NORMAL))
    (await effects.next_call("stop", "home")).succeed()
    (await effects.next_call("start", "guest")).succeed()
    sched.release(await asking)
    assert sched.backends["home"].state is STOPPED
    clock.advance(31)
    tick = asyncio.create_task(sched._tick())
    (await effects.next_call("stop", "guest")).succeed()
    await tick
    (await effects.next_call("start", "home")).succeed()
    await settle()
    assert sched.backends["home"].state is READY
    assert effects.kinds("start", "stop") == [
        ("stop", "home"),
        ("start", "guest"),
        ("stop", "guest"),
        ("start", "home"),
    ]


# ---- what Docker says, read across an await ------------------------------------------------


@run
async def test_a_dead_asleep_vllm_is_started_again_not_woken() -> None:
    effects = FakeEffects(running={"v"})
    clock = Clock()
    sched = scheduler(profile({"v": vllm_sleeping(1)}), effects, clock)
    clock.advance(10)
    evicting = asyncio.create_task(sched._evict(sched.backends["v"], "test"))
    (await effects.next_call("sleep", "v")).succeed()
    await evicting
    assert sched.backends["v"].state is ASLEEP
    effects.running.discard("v")  # OOM-killed, or `aitherctl down v`
    asking = asyncio.create_task(sched.acquire("v", Priority.NORMAL))
    (await effects.next_call("start", "v")).succeed()
    sched.release(await asking)
    assert ("wake", "v") not in effects.kinds()


@run
async def test_an_asleep_backend_whose_container_died_is_seen_stopped() -> None:
    effects = FakeEffects(running={"v"})
    sched = scheduler(profile({"v": vllm_sleeping(1)}), effects, Clock())
    evicting = asyncio.create_task(sched._evict(sched.backends["v"], "test"))
    (await effects.next_call("sleep", "v")).succeed()
    await evicting
    effects.running.clear()
    await sched.reconcile()
    assert sched.backends["v"].state is STOPPED


@run
async def test_a_stale_read_never_marks_an_evicted_service_ready() -> None:
    effects = FakeEffects(running={"chat"}, instant=("read_gpus", "close"))
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1, idle_after="60s")}), effects, clock)
    reading = asyncio.create_task(sched.reconcile())
    read = await effects.next_call("observe")  # Docker lists `chat` running ...
    clock.advance(61)
    tick = asyncio.create_task(sched._tick())  # ... while idle_after stops it
    (await effects.next_call("stop", "chat")).succeed()
    await tick
    read.succeed()  # the list read before the stop arrives now
    await reading
    assert sched.backends["chat"].state is STOPPED
    assert not sched.try_acquire("chat")  # no request goes to a stopped port


@run
async def test_a_stale_read_never_marks_a_freshly_loaded_service_gone() -> None:
    effects = FakeEffects(instant=("read_gpus", "close"))
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    reading = asyncio.create_task(sched.reconcile())
    read = await effects.next_call("observe")  # Docker lists nothing running ...
    asking = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    (await effects.next_call("start", "chat")).succeed()  # ... while a request starts it
    lease = await asking
    read.succeed()
    await reading
    assert sched.backends["chat"].state is READY
    sched.release(lease)


@run
async def test_a_container_killed_behind_its_back_is_noticed_and_started_again() -> None:
    effects = FakeEffects(running={"chat"})
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    effects.running.clear()  # `docker kill`
    await sched.reconcile()
    assert sched.backends["chat"].state is STOPPED
    asking = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    (await effects.next_call("start", "chat")).succeed()
    sched.release(await asking)


@run
async def test_requests_refused_together_share_one_reading_begun_after_their_refusal() -> None:
    """The dispatcher's `recheck` (a request found the server refusing connections): requests
    refused while a reading runs that began before them wait for a reading of their own, since
    the earlier one may predate the death; requests refused together share it."""
    effects = FakeEffects(running={"chat"}, instant=("read_gpus", "close"))  # readings held
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1)}), effects, clock)
    clock.advance(1)
    early = asyncio.create_task(sched.recheck("chat", refused_at=clock()))
    before = await effects.next_call("observe")  # read while the container still ran
    clock.advance(1)
    effects.running.clear()  # `docker kill`; two requests are refused
    first = asyncio.create_task(sched.recheck("chat", refused_at=clock()))
    second = asyncio.create_task(sched.recheck("chat", refused_at=clock()))
    await settle()
    before.succeed()
    assert await early is False  # its reading saw it running
    after = await effects.next_call("observe")
    await settle()
    assert effects.kinds("observe") == [("observe", None)] * 2  # one for both late requests
    after.succeed()
    assert (await first, await second) == (True, True)
    assert sched.backends["chat"].state is STOPPED


@run
async def test_a_request_refused_with_another_waits_for_the_load_the_other_began() -> None:
    effects = FakeEffects(running={"chat"}, instant=("read_gpus", "close"))
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1)}), effects, clock)
    refused_at = clock()  # two requests refused at once; the container is gone
    effects.running.clear()
    clock.advance(0.1)
    first = asyncio.create_task(sched.recheck("chat", refused_at))
    (await effects.next_call("observe")).succeed()
    assert await first is True
    loading = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))  # its new attempt
    await settle()
    assert sched.backends["chat"].state is BackendState.LOADING
    # The other, resumed only now, shares that reading and waits for the load too.
    assert await sched.recheck("chat", refused_at) is True
    assert effects.kinds("observe") == [("observe", None)]
    (await effects.next_call("start", "chat")).succeed()
    sched.release(await loading)


@run
async def test_a_recheck_without_an_answer_from_docker_says_nothing_changed() -> None:
    effects = FakeEffects(running={"chat"}, instant=("read_gpus", "close"))  # readings held
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1)}), effects, clock)
    checking = asyncio.create_task(sched.recheck("chat", refused_at=clock()))
    (await effects.next_call("observe")).fail(RuntimeError("Docker went away"))
    assert await checking is False
    assert sched.backends["chat"].state is READY


# ---- one schedule across a followed switch ---------------------------------------------------


@run
async def test_a_followed_switch_never_stops_a_container_still_streaming() -> None:
    effects = FakeEffects(running={"chat"})
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1)}, "first"), effects, clock)
    streaming = sched.try_acquire("chat")
    assert streaming is not None
    second = profile({"chat": llama(1, idle_after="10s"), "big": llama(2, ram="500MiB")}, "second")
    sched.adopt(second, build_routing(second), ram_pools(600), {"chat"})
    clock.advance(60)
    await sched._tick()
    asking = asyncio.create_task(sched.acquire("big", Priority.NORMAL))
    await settle()
    assert effects.kinds("stop") == []  # neither idle_after nor room for `big` stops it
    assert sched.backends["chat"].in_flight == 1
    sched.release(streaming)  # the stream ends where it started
    (await effects.next_call("stop", "chat")).succeed()
    (await effects.next_call("start", "big")).succeed()
    sched.release(await asking)


@run
async def test_a_backend_that_left_the_profile_finishes_its_requests_and_takes_none() -> None:
    effects = FakeEffects(running={"gone", "kept"})
    sched = scheduler(profile({"gone": llama(1), "kept": llama(2)}, "first"), effects, Clock())
    lease = sched.try_acquire("gone")
    assert lease is not None
    second = profile({"kept": llama(2)}, "second")
    sched.adopt(second, build_routing(second), ram_pools(), {"kept"})
    assert "gone" not in sched.backends
    assert sched.in_flight() == 1
    sched.release(lease)
    assert sched.in_flight() == 0
    assert sched.retired == {}


@run
async def test_a_profile_edited_while_serving_starts_the_spec_it_routes_to() -> None:
    effects = FakeEffects()
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    edited = profile({"chat": llama(1, args=["--ctx-size", "4096"])})
    sched.adopt(edited, build_routing(edited), ram_pools(), set())
    asking = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    start = await effects.next_call("start", "chat")
    assert start.args[0] is edited.services["chat"]
    start.succeed()
    sched.release(await asking)


# ---- pools that agree with the switch ----------------------------------------------------------


def _on_gpu(port: int, **extra: object) -> dict[str, object]:
    service = {**llama(port), "gpu": 0, "vram": "10GiB", **extra}
    del service["ram"]
    return service


def _gpu_profile() -> dict[str, dict[str, object]]:
    return {"a": _on_gpu(1, on_demand=False), "b": _on_gpu(2)}


def _gpu_pools() -> dict[str, Pool]:
    return {"gpu:0": Pool.sized("gpu:0", 24 * GIB), "ram": Pool.sized("ram", 64 * GIB)}


@run
async def test_the_pools_count_memory_outside_aitherctl_as_the_switch_does() -> None:
    # Budgets alone say 10 + 10 of 24 GiB fits; 6 GiB held by a desktop app says it does not.
    reading = GpuReading(0, 24 * GIB, 4 * GIB, outside_bytes=6 * GIB)
    effects = FakeEffects(running={"a"}, gpus={0: reading})
    sched = scheduler(profile(_gpu_profile()), effects, Clock(), _gpu_pools())
    asking = asyncio.create_task(sched.acquire("b", Priority.NORMAL))
    (await effects.next_call("stop", "a")).succeed()
    effects.gpus = {0: GpuReading(0, 24 * GIB, 14 * GIB, outside_bytes=6 * GIB)}
    (await effects.next_call("start", "b")).succeed()
    sched.release(await asking)
    assert effects.kinds("start", "stop") == [("stop", "a"), ("start", "b")]


@run
async def test_a_service_over_its_budget_counts_at_its_real_use() -> None:
    reading = GpuReading(0, 24 * GIB, 4 * GIB, real_use_bytes={"a": 20 * GIB})
    effects = FakeEffects(running={"a"}, gpus={0: reading})
    sched = scheduler(profile(_gpu_profile()), effects, Clock(), _gpu_pools())
    asking = asyncio.create_task(sched.acquire("b", Priority.NORMAL))
    (await effects.next_call("stop", "a")).succeed()
    effects.gpus = {0: GpuReading(0, 24 * GIB, 24 * GIB)}
    (await effects.next_call("start", "b")).succeed()
    sched.release(await asking)


@run
async def test_a_refusal_by_the_switch_evicts_what_it_can_then_tries_again() -> None:
    effects = FakeEffects(running={"a"})  # no GPU reading: the pools say it fits
    sched = scheduler(profile(_gpu_profile()), effects, Clock(), _gpu_pools())
    asking = asyncio.create_task(sched.acquire("b", Priority.NORMAL))
    (await effects.next_call("start", "b")).fail(
        RefusedError("profile 'p' does not fit in VRAM on GPU 0 (missing 2.0 GiB)")
    )
    (await effects.next_call("stop", "a")).succeed()
    (await effects.next_call("start", "b")).succeed()
    sched.release(await asking)
    assert [e.kind for e in sched.events.recent if e.backend == "b"] == [
        "queued",
        "loading",
        "refused",
        "loaded",
    ]


# ---- a load always ends ------------------------------------------------------------------------


@run
async def test_an_unexpected_exception_in_a_load_does_not_leave_it_loading() -> None:
    effects = FakeEffects()
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    asking = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    (await effects.next_call("start", "chat")).fail(RuntimeError("a bug in an effect"))
    with pytest.raises(LoadFailed, match="a bug in an effect"):
        await asking
    assert sched.backends["chat"].state is STOPPED
    again = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    (await effects.next_call("start", "chat")).succeed()
    sched.release(await again)


@run
async def test_a_load_failing_fails_all_three_waiters_with_one_start() -> None:
    effects = FakeEffects()
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    waiters = [asyncio.create_task(sched.acquire("chat", Priority.NORMAL)) for _ in range(3)]
    (await effects.next_call("start", "chat")).fail(SwitchFailedError("the image is missing"))
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LoadFailed) and "the image is missing" in r.message for r in results)
    assert effects.kinds("start") == [("start", "chat")]
    assert sched.backends["chat"].state is STOPPED


def test_a_state_change_from_a_state_it_is_not_in_is_refused() -> None:
    effects = FakeEffects(running={"chat"})
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    backend = sched.backends["chat"]
    with pytest.raises(InvalidTransition, match="expected stopped, found ready"):
        sched.set_state(backend, STOPPED, BackendState.LOADING)
    with pytest.raises(InvalidTransition, match="not allowed"):
        sched.set_state(backend, READY, BackendState.ASLEEP)
    assert backend.state is READY


# ---- the README's promises -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "victim"), [(None, "old"), ("recent", "recent")], ids=["lru", "low-priority-first"]
)
@run
async def test_eviction_takes_the_lowest_priority_then_the_least_recently_used(
    low: str | None, victim: str
) -> None:
    effects = FakeEffects(running={"old", "recent"})
    clock = Clock()
    services = {
        name: llama(port, **({"priority": "low"} if name == low else {}))
        for port, name in enumerate(("old", "recent", "new"), 1)
    }
    sched = scheduler(profile(services), effects, clock, ram_pools(1000))
    for name in ("old", "recent"):  # used in this order
        clock.advance(1)
        lease = sched.try_acquire(name)
        assert lease is not None
        sched.release(lease)
    asking = asyncio.create_task(sched.acquire("new", Priority.NORMAL))
    (await effects.next_call("stop")).succeed()
    (await effects.next_call("start", "new")).succeed()
    sched.release(await asking)
    assert effects.kinds("stop") == [("stop", victim)]


@run
async def test_a_busy_or_pinned_service_is_never_evicted() -> None:
    effects = FakeEffects(running={"pinned", "busy"})
    services = {"pinned": llama(1, pinned=True, on_demand=False), "busy": llama(2), "new": llama(3)}
    sched = scheduler(profile(services), effects, Clock(), ram_pools(1000))
    busy = sched.try_acquire("busy")
    assert busy is not None
    asking = asyncio.create_task(sched.acquire("new", Priority.NORMAL))
    await settle()
    assert effects.kinds("stop", "start") == []
    assert "waiting_for_room" in [e.kind for e in sched.events.recent]
    sched.release(busy)
    (await effects.next_call("stop", "busy")).succeed()
    (await effects.next_call("start", "new")).succeed()
    sched.release(await asking)
    assert ("stop", "pinned") not in effects.kinds()


@run
async def test_no_request_reaches_a_sleeping_server_before_it_woke() -> None:
    effects = FakeEffects(running={"v"})
    sched = scheduler(profile({"v": vllm_sleeping(1)}), effects, Clock())
    evicting = asyncio.create_task(sched._evict(sched.backends["v"], "test"))
    (await effects.next_call("sleep", "v")).succeed()
    await evicting
    asking = asyncio.create_task(sched.acquire("v", Priority.NORMAL))
    wake = await effects.next_call("wake", "v")
    await settle()
    assert not asking.done()
    assert sched.try_acquire("v") is None
    wake.succeed()
    sched.release(await asking)


@run
async def test_priority_and_the_twenty_second_starvation_bound() -> None:
    effects = FakeEffects(running={"chat"})
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1, max_concurrency=1)}), effects, clock)
    holding = sched.try_acquire("chat")
    assert holding is not None
    order: list[str] = []

    async def ask(label: str, priority: Priority) -> None:
        lease = await sched.acquire("chat", priority)
        order.append(label)
        sched.release(lease)

    tasks = [asyncio.create_task(ask("batch", Priority.BATCH))]
    await settle()
    clock.advance(5)
    tasks.append(asyncio.create_task(ask("interactive, 5 s later", Priority.INTERACTIVE)))
    await settle()
    clock.advance(15)  # the batch request has waited 20 s, the interactive one 15 s
    sched.release(holding)
    await asyncio.gather(*tasks)
    assert order == ["batch", "interactive, 5 s later"]


@run
async def test_interactive_goes_first_before_the_bound() -> None:
    effects = FakeEffects(running={"chat"})
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1, max_concurrency=1)}), effects, clock)
    holding = sched.try_acquire("chat")
    assert holding is not None
    order: list[str] = []

    async def ask(label: str, priority: Priority) -> None:
        lease = await sched.acquire("chat", priority)
        order.append(label)
        sched.release(lease)

    tasks = [asyncio.create_task(ask("batch", Priority.BATCH))]
    await settle()
    clock.advance(5)
    tasks.append(asyncio.create_task(ask("interactive", Priority.INTERACTIVE)))
    await settle()
    clock.advance(10)
    sched.release(holding)
    await asyncio.gather(*tasks)
    assert order == ["interactive", "batch"]


@run
async def test_cancelled_while_queued_gives_the_place_up() -> None:
    effects = FakeEffects(running={"chat"})
    sched = scheduler(profile({"chat": llama(1, max_concurrency=1)}), effects, Clock())
    holding = sched.try_acquire("chat")
    assert holding is not None
    asking = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    await settle()
    assert len(sched.backends["chat"].queue) == 1
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    assert len(sched.backends["chat"].queue) == 0
    sched.release(holding)
    assert sched.backends["chat"].in_flight == 0


@run
async def test_cancelled_while_loading_leaves_the_load_to_finish_with_no_slot_taken() -> None:
    effects = FakeEffects()
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    asking = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    start = await effects.next_call("start", "chat")
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    start.succeed()
    await settle()
    backend = sched.backends["chat"]
    assert (backend.state, backend.in_flight, len(backend.queue)) == (READY, 0, 0)


@run
async def test_cancelled_while_streaming_frees_the_slot_once() -> None:
    effects = FakeEffects(running={"chat"})
    sched = scheduler(profile({"chat": llama(1, max_concurrency=1)}), effects, Clock())
    lease = await sched.acquire("chat", Priority.NORMAL)
    waiting = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    await settle()
    sched.release(lease)  # the client went away mid-stream: the dispatcher releases ...
    sched.release(lease)  # ... and its finally releases again: counted once
    second = await waiting
    assert sched.backends["chat"].in_flight == 1
    sched.release(second)


@run
async def test_shutdown_fails_the_waiters_of_a_load_it_cancels() -> None:
    effects = FakeEffects()
    sched = scheduler(profile({"chat": llama(1)}), effects, Clock())
    asking = asyncio.create_task(sched.acquire("chat", Priority.NORMAL))
    await effects.next_call("start", "chat")
    await sched.close(0)
    with pytest.raises(SchedulerError, match="shutting down"):
        await asking
    assert sched.backends["chat"].state is STOPPED


@run
async def test_a_displaced_resident_comes_back_only_when_it_fits_as_the_switch_counts() -> None:
    # `b` holds 20 GiB though its budget says 10: `a` (resident, stopped) does not fit beside it.
    reading = GpuReading(0, 24 * GIB, 4 * GIB, real_use_bytes={"b": 20 * GIB})
    effects = FakeEffects(running={"b"}, gpus={0: reading})
    sched = scheduler(profile(_gpu_profile()), effects, Clock(), _gpu_pools())
    assert sched.backends["a"].displaced
    await sched._tick()
    await settle()
    assert effects.kinds("start", "stop") == []
    effects.gpus = {0: GpuReading(0, 24 * GIB, 14 * GIB, real_use_bytes={"b": 10 * GIB})}
    await sched._tick()
    (await effects.next_call("start", "a")).succeed()
    await settle()
    assert sched.backends["a"].state is READY


@run
async def test_shutdown_during_a_recheck_answers_it_with_nothing_changed() -> None:
    """`serve` stopping while a refused request waits for its Docker reading: the request ends
    with the refusal it met (no retry, nothing started), not with the reading's cancellation."""
    effects = FakeEffects(running={"chat"}, instant=("read_gpus", "close"))  # readings held
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1)}), effects, clock)
    effects.running.clear()  # `docker kill`
    checking = asyncio.create_task(sched.recheck("chat", refused_at=clock()))
    await effects.next_call("observe")  # Docker has not answered yet
    await sched.close(0)
    assert await checking is False
    assert effects.kinds("start") == []
    assert await sched.recheck("chat", refused_at=clock()) is False  # closed: no new reading
    assert effects.kinds("observe") == [("observe", None)]


@run
async def test_a_client_gone_during_a_recheck_leaves_the_shared_reading_to_the_others() -> None:
    effects = FakeEffects(running={"chat"}, instant=("read_gpus", "close"))  # readings held
    clock = Clock()
    sched = scheduler(profile({"chat": llama(1)}), effects, clock)
    effects.running.clear()  # `docker kill`; two requests are refused
    gone = asyncio.create_task(sched.recheck("chat", refused_at=clock()))
    staying = asyncio.create_task(sched.recheck("chat", refused_at=clock()))
    reading = await effects.next_call("observe")
    gone.cancel()  # its client disconnected
    with pytest.raises(asyncio.CancelledError):
        await gone
    reading.succeed()
    assert await staying is True
    assert sched.backends["chat"].state is STOPPED
