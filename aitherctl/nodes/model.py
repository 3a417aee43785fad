"""The pure model of rented nodes: what a profile's node asks for in words, the labels an
instance carries at the provider, and each instance's state and cost so far."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from aitherctl.profiles.profile import CloudBudget, Node, NodeMode

LABEL_PREFIX = "aitherctl"  # every instance's label starts so: aitherctl/MACHINE/PROFILE/NODE


def describe_node(node: Node) -> list[str]:
    """Three short lines (they fit 80 columns): the offer wanted, what runs on it, and how it
    lives: `vast RTX 3090 ≥24.0 GiB, at most $0.200/h` / `vllm MODEL` / `on demand: wakes at
    effort 7 or 3 waiting, destroyed after 15 min idle`."""
    vram = f" ≥{node.vram}" if node.vram else ""
    gpus = f"{node.num_gpus}x " if node.num_gpus > 1 else ""
    offer = f"{node.provider} {gpus}{node.gpu}{vram}, at most ${node.max_price_per_hour_usd:.3f}/h"
    what = f"{node.engine.value} {node.model}" if node.model else node.engine.value
    if node.mode is NodeMode.ALWAYS_ON:
        return [offer, what, "always on (replaced when it dies)"]
    wake = []
    if node.wake_on.effort is not None:
        wake.append(f"effort {node.wake_on.effort}")
    if node.wake_on.queue_depth is not None:
        wake.append(f"{node.wake_on.queue_depth} waiting")
    idle = (
        f"destroyed after {_duration(node.idle_after_s)} idle"
        if node.idle_after_s
        else "kept until destroyed"
    )
    wakes = f"wakes at {' or '.join(wake)}, " if wake else "wakes when named, "
    return [offer, what, f"on demand: {wakes}{idle}"]


def describe_cloud(cloud: CloudBudget | None) -> str:
    if cloud is None:
        return "no `cloud:` budget: no node is created"
    stop = "hard stop" if cloud.hard_stop else "no hard stop"
    return (
        f"${cloud.daily_cap_usd:.2f} a day, warning at {cloud.warn_share:.0%} "
        f"(${cloud.warn_at_usd:.2f}), {stop}"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def describe_nodes(nodes: Sequence[Node], cloud: CloudBudget | None) -> list[str]:
    """`profile plan`'s lines for the profile's nodes (a switch never creates one)."""
    if not nodes:
        return []
    lines = ["Cloud nodes (rented; a switch does not create them):"]
    for node in nodes:
        first, *rest = describe_node(node)
        lines.append(f"  {node.name}: {first}")
        lines += [f"    {line}" for line in rest]
    lines.append(f"  budget: {describe_cloud(cloud)}")
    return lines


class NodeState(StrEnum):
    """An instance's life as this machine knows it."""

    CREATING = "creating"  # intent recorded, the create call not answered yet
    BOOTING = "booting"  # the provider has it; its engine does not answer yet
    RUNNING = "running"
    DESTROYING = "destroying"
    GONE = "gone"  # destroyed, or the provider no longer lists it
    UNKNOWN = "unknown"  # at the provider with our label, but no record here (a crash)


@dataclass(frozen=True, slots=True)
class Label:
    """What an instance's label at the provider says: which machine made it, for which profile
    and node, and the id of this machine's record of it (so an instance whose id never reached
    the record, because of a crash right after the create call, still finds its record).
    No secret goes in a label: the provider shows it to anyone with the account."""

    machine: str
    profile: str
    node: str
    record: str

    def text(self) -> str:
        return f"{LABEL_PREFIX}/{self.machine}/{self.profile}/{self.node}/{self.record}"

    @classmethod
    def parse(cls, text: str | None) -> Label | None:
        if not text:
            return None
        parts = text.split("/")
        if len(parts) != 5 or parts[0] != LABEL_PREFIX or not all(parts[1:]):
            return None
        return cls(parts[1], parts[2], parts[3], parts[4])


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """This machine's record of one instance it asked for, written before the create call
    (`state` CREATING, no `instance_id`) and again after each change. Times are Unix seconds."""

    id: str
    node: str
    profile: str
    machine: str
    provider: str
    state: NodeState
    created_at: float  # when the intent was recorded
    instance_id: str | None = None
    offer_id: str | None = None
    price_per_hour_usd: float | None = None
    started_at: float | None = None  # when the provider had it (billing starts)
    ended_at: float | None = None  # when it was destroyed or found gone
    url: str | None = None  # the engine's address, once published
    adopted: bool = False  # found at the provider without a record, then kept
    accrued_until: float | None = None  # its cost is in the usage ledger up to this time
    # The key its engine requires (generated at create, given to the engine in its environment,
    # never in a label or a log; None for an engine aitherctl cannot give one, or adopted).
    api_key: str | None = field(default=None, repr=False)

    @property
    def label(self) -> Label:
        return Label(self.machine, self.profile, self.node, self.id)

    @property
    def live(self) -> bool:
        """Still (possibly) paying: anything but destroyed or gone."""
        return self.state is not NodeState.GONE

    def cost_usd(self, now: float) -> float:
        """GPU time and storage at the offer's price, from when the provider had it until it
        ended (or `now`)."""
        if self.price_per_hour_usd is None or self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else now
        return cost_usd(self.price_per_hour_usd, end - self.started_at)

    def cost_since(self, since: float, now: float) -> float:
        """What it cost from `since` (the start of the day) until it ended (or `now`)."""
        if self.price_per_hour_usd is None or self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else now
        return cost_usd(self.price_per_hour_usd, end - max(self.started_at, since))

    def unaccrued(self, now: float) -> tuple[float, float] | None:
        """The span (from, to) whose cost is not in the ledger yet, or None."""
        if self.price_per_hour_usd is None or self.started_at is None:
            return None
        start = self.accrued_until if self.accrued_until is not None else self.started_at
        end = self.ended_at if self.ended_at is not None else now
        return (start, end) if end > start else None

    def age_s(self, now: float) -> float:
        return max(now - self.created_at, 0.0)


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One instance as `ps` lists it: this machine's record, and from a running `serve` how
    long it may stay idle before it is destroyed (None: unknown, busy or never)."""

    node: str
    profile: str
    state: NodeState
    instance_id: str | None
    price_per_hour_usd: float | None
    spent_today_usd: float
    idle_left_s: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "profile": self.profile,
            "state": self.state.value,
            "instance_id": self.instance_id,
            "price_per_hour_usd": self.price_per_hour_usd,
            "spent_today_usd": round(self.spent_today_usd, 6),
            "idle_left_s": self.idle_left_s,
        }


def node_rows(
    records: Sequence[NodeRecord],
    *,
    now: float,
    day_start: float,
    idle_left_s: dict[str, float | None] | None = None,
    serving_profile: str | None = None,
) -> tuple[NodeRow, ...]:
    """The live records (still possibly paying), each with its cost since `day_start`;
    `idle_left_s` (node -> seconds, from `serve`'s /status) applies to `serving_profile`'s."""
    rows = []
    for record in records:
        if not record.live:
            continue
        idle = None
        if idle_left_s is not None and record.profile == serving_profile:
            idle = idle_left_s.get(record.node)
        rows.append(
            NodeRow(
                node=record.node,
                profile=record.profile,
                state=record.state,
                instance_id=record.instance_id,
                price_per_hour_usd=record.price_per_hour_usd,
                spent_today_usd=record.cost_since(day_start, now),
                idle_left_s=idle,
            )
        )
    return tuple(rows)


def cost_usd(price_per_hour_usd: float, seconds: float) -> float:
    """What an instance has cost after `seconds` at its offer's whole hourly price (billed
    per second)."""
    return price_per_hour_usd * max(seconds, 0.0) / 3600.0
