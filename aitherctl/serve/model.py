"""The scheduler's pure decisions: request priorities, the bounded wait queue, memory pools and
which idle services to evict. No I/O and no clock of its own: times come in as numbers.

`aitherctl.serve.scheduler` owns the state and calls these from its one event loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from aitherctl.profiles.scheduling_terms import Rank

# A waiting request gains one priority class per AGING_S seconds, so a `batch` request behind a
# steady stream of `interactive` ones is served after at most 2 * AGING_S of waiting (it then
# ranks as interactive and, being older, goes first): the starvation bound.
AGING_S = 10.0
DEFAULT_MAX_QUEUE = 32


class Priority(IntEnum):
    """A request's class: lower is served first."""

    INTERACTIVE = 0
    NORMAL = 1
    BATCH = 2

    @property
    def label(self) -> str:
        return self.name.lower()


PRIORITY_NAMES = tuple(p.label for p in Priority)


def parse_priority(value: Any, default: Priority = Priority.NORMAL) -> Priority:
    """`interactive`, `normal` or `batch` (any case); None or "" gives `default`.
    Raises ValueError naming the accepted words."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return Priority[value.strip().upper()]
        except KeyError:
            pass
    raise ValueError(f"priority {value!r} is not one of: {', '.join(PRIORITY_NAMES)}")


# ---- the wait queue -------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Waiter:
    """One request waiting for a backend. `token` is the caller's handle (a future)."""

    seq: int
    priority: Priority
    enqueued_at: float
    token: Any = None

    def rank(self, now: float) -> tuple[float, int]:
        # Ageing stops at `interactive`: an interactive request that waited gains nothing over
        # a batch one that waited 2 * AGING_S, so the older goes first (the starvation bound).
        aged = self.priority - math.floor(max(0.0, now - self.enqueued_at) / AGING_S)
        return (max(aged, Priority.INTERACTIVE), self.seq)


@dataclass(slots=True)
class WaitQueue:
    """A bounded priority queue with ageing (see AGING_S). Small: a linear scan per pop."""

    capacity: int = DEFAULT_MAX_QUEUE
    items: list[Waiter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.capacity

    def push(self, waiter: Waiter) -> bool:
        """False (and nothing queued) when full."""
        if self.full:
            return False
        self.items.append(waiter)
        return True

    def peek(self, now: float) -> Waiter | None:
        return min(self.items, key=lambda w: w.rank(now)) if self.items else None

    def pop(self, now: float) -> Waiter | None:
        first = self.peek(now)
        if first is not None:
            self.items.remove(first)
        return first

    def remove(self, waiter: Waiter) -> bool:
        try:
            self.items.remove(waiter)
        except ValueError:
            return False
        return True

    def by_priority(self) -> dict[str, int]:
        counts = dict.fromkeys(PRIORITY_NAMES, 0)
        for waiter in self.items:
            counts[waiter.priority.label] += 1
        return counts


# ---- memory pools and eviction ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holder:
    """A service holding memory in one or more pools, as the scheduler sees it right now."""

    name: str
    claims: dict[str, int]  # pool -> bytes (`gpu:0`, `ram`)
    evictable: bool  # idle (nothing in flight or queued), not pinned, not changing state
    rank: Rank
    last_used: float


@dataclass(frozen=True, slots=True)
class Pool:
    """A memory pool: a GPU (`gpu:N`, its total less the profile's reserve) or the host's RAM
    for CPU services (`ram`, the total less `ram.reserve`, at most `ram.limit`)."""

    name: str
    capacity_bytes: int
    total_bytes: int  # what shares (`35%`) are taken of

    @classmethod
    def sized(cls, name: str, total_bytes: int, reserve: int = 0, limit: int | None = None) -> Pool:
        capacity = max(0, total_bytes - reserve)
        if limit is not None:
            capacity = min(capacity, limit)
        return cls(name, capacity, total_bytes)


def pool_use(holders: Iterable[Holder]) -> dict[str, int]:
    used: dict[str, int] = {}
    for holder in holders:
        for pool, amount in holder.claims.items():
            used[pool] = used.get(pool, 0) + amount
    return used


def shortfall(
    need: dict[str, int], holders: Sequence[Holder], pools: dict[str, Pool]
) -> dict[str, int]:
    """Per pool, how many bytes are missing for `need` on top of what `holders` hold."""
    used = pool_use(holders)
    missing = {}
    for pool, amount in need.items():
        capacity = pools[pool].capacity_bytes if pool in pools else 0
        gap = used.get(pool, 0) + amount - capacity
        if gap > 0:
            missing[pool] = gap
    return missing


@dataclass(frozen=True, slots=True)
class EvictionChoice:
    """Which idle services to evict so a load fits, in the order to free them, and what each
    memory pool would still lack after them."""

    victims: tuple[str, ...]  # in the order to free them
    missing: dict[str, int]  # what would still be missing after them (empty: it fits)

    @property
    def fits(self) -> bool:
        """It fits once `victims` are freed."""
        return not self.missing

    @property
    def fits_now(self) -> bool:
        return not self.missing and not self.victims


def choose_victims(
    need: dict[str, int], holders: Sequence[Holder], pools: dict[str, Pool]
) -> EvictionChoice:
    """The fewest idle services to free, lowest rank first, then least recently used, so that
    `need` fits in every pool it claims. Only holders in a pool that is short are considered.
    When even evicting every evictable one is not enough, `missing` says what stays short and
    `victims` is empty (nothing should be evicted for a load that cannot happen)."""
    missing = shortfall(need, holders, pools)
    if not missing:
        return EvictionChoice((), {})
    order = sorted(
        (h for h in holders if h.evictable and any(p in missing for p in h.claims)),
        key=lambda h: (h.rank, h.last_used, h.name),
    )
    remaining = list(holders)
    victims: list[str] = []
    for holder in order:
        victims.append(holder.name)
        remaining.remove(holder)
        missing = shortfall(need, remaining, pools)
        if not missing:
            return EvictionChoice(tuple(victims), {})
    return EvictionChoice((), missing)


def gpu_aware(
    pools: dict[str, Pool],
    holders: Sequence[Holder],
    outside: dict[str, int],
    real_use: dict[str, dict[str, int]],
) -> tuple[dict[str, Pool], list[Holder]]:
    """The pools and holders as the switch's VRAM check counts them (aitherctl.gpu.vram): each
    GPU pool less the memory held outside aitherctl (`outside`, driver reservation included),
    and each service holding the larger of its budget and its real use (`real_use`: pool ->
    service -> bytes)."""
    adjusted = {
        name: Pool(name, max(0, pool.capacity_bytes - outside[name]), pool.total_bytes)
        if name in outside
        else pool
        for name, pool in pools.items()
    }
    counted = [
        Holder(
            h.name,
            {
                pool: max(amount, real_use.get(pool, {}).get(h.name, 0))
                for pool, amount in h.claims.items()
            },
            h.evictable,
            h.rank,
            h.last_used,
        )
        for h in holders
    ]
    return adjusted, counted


def describe_missing(missing: dict[str, int]) -> str:
    parts = [f"{amount / 1024**3:.2f} GiB more in {pool}" for pool, amount in missing.items()]
    return ", ".join(parts)
