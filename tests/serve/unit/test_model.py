"""The scheduler's pure decisions: priorities with a starvation bound, and which idle services
a load evicts."""

from __future__ import annotations

import pytest

from aitherctl.profiles.scheduling_terms import Rank, parse_duration
from aitherctl.serve.model import (
    AGING_S,
    Holder,
    Pool,
    Priority,
    Waiter,
    WaitQueue,
    choose_victims,
    parse_priority,
)

MIB = 1024**2


def _queue(*items: tuple[int, Priority, float]) -> WaitQueue:
    queue = WaitQueue(capacity=10)
    for seq, priority, at in items:
        assert queue.push(Waiter(seq, priority, at))
    return queue


def test_interactive_goes_before_earlier_batch_and_normal() -> None:
    queue = _queue(
        (1, Priority.BATCH, 0.0), (2, Priority.NORMAL, 0.1), (3, Priority.INTERACTIVE, 0.2)
    )
    assert [queue.pop(1.0).seq for _ in range(3)] == [3, 2, 1]  # type: ignore[union-attr]


def test_a_batch_request_is_not_starved_beyond_two_ageing_periods() -> None:
    queue = _queue((1, Priority.BATCH, 0.0))
    # A steady stream of interactive requests keeps arriving; after 2 * AGING_S the old batch
    # request ranks as interactive and, being older, goes first.
    now = 2 * AGING_S
    queue.push(Waiter(2, Priority.INTERACTIVE, now - 0.1))
    assert queue.pop(now).seq == 1  # type: ignore[union-attr]


def test_a_full_queue_refuses_and_keeps_what_it_has() -> None:
    queue = WaitQueue(capacity=1)
    assert queue.push(Waiter(1, Priority.NORMAL, 0.0))
    assert not queue.push(Waiter(2, Priority.INTERACTIVE, 0.0))
    assert len(queue) == 1


def _pools(ram_mib: int) -> dict[str, Pool]:
    return {"ram": Pool.sized("ram", 24 * 1024 * MIB, limit=ram_mib * MIB)}


def _holder(name: str, used: float, *, rank: Rank = Rank.NORMAL, idle: bool = True) -> Holder:
    return Holder(name, {"ram": 256 * MIB}, idle, rank, used)


def test_the_least_recently_used_idle_service_is_evicted() -> None:
    choice = choose_victims({"ram": 256 * MIB}, [_holder("a", 1.0), _holder("b", 2.0)], _pools(600))
    assert choice.victims == ("a",)
    assert choice.fits
    assert not choice.fits_now


def test_low_priority_goes_before_recently_unused_and_busy_ones_stay() -> None:
    holders = [
        _holder("old", 1.0),
        _holder("low", 9.0, rank=Rank.LOW),
        _holder("busy", 0.5, idle=False),
    ]
    choice = choose_victims({"ram": 256 * MIB}, holders, _pools(800))
    assert choice.victims == ("low",)


def test_nothing_is_evicted_for_a_load_that_cannot_fit_anyway() -> None:
    holders = [_holder("idle", 1.0), _holder("busy", 0.5, idle=False)]
    choice = choose_victims({"ram": 512 * MIB}, holders, _pools(600))
    assert choice.victims == ()
    assert not choice.fits
    assert choice.missing == {"ram": (256 + 512 - 600) * MIB}  # with the busy one kept


def test_it_fits_without_evicting_when_there_is_room() -> None:
    choice = choose_victims({"ram": 256 * MIB}, [_holder("a", 1.0)], _pools(600))
    assert choice.fits_now


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900.0), ("90s", 90.0), ("1h", 3600.0), ("500ms", 0.5), (30, 30.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "-5m", 0, True])
def test_bad_durations_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError, match="15m"):
        parse_duration(bad)


def test_priorities_are_words_and_a_wrong_one_names_them() -> None:
    assert parse_priority("Interactive") is Priority.INTERACTIVE
    assert parse_priority(None) is Priority.NORMAL
    with pytest.raises(ValueError, match="interactive, normal, batch"):
        parse_priority("urgent")
