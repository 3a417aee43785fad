"""What `aitherctl nodes` (and later `serve`) does with rented nodes: create one (the intent
recorded before the provider is asked), look at every instance this machine made (its records
and the provider's own list, by label), destroy, adopt.

The first promise: never a paid node nobody knows about. Every create is recorded before the
call and after it; an instance the provider lists with this machine's label but no record here
(a crash between the call and the write, a record deleted) is found by `survey` and reported
as `unknown` until it is destroyed or adopted.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aitherctl.engines.registry import KEY_VARIABLES, driver_for
from aitherctl.errors import BudgetExceededError, NotFoundError, RefusedError
from aitherctl.nodes.model import Label, NodeRecord, NodeState, cost_usd
from aitherctl.nodes.provider import (
    CreateRequest,
    Instance,
    InstanceStatus,
    OfferQuery,
    Provider,
    ProviderError,
    ProviderFailure,
)
from aitherctl.nodes.records import NodeRecords
from aitherctl.profiles.profile import CloudBudget, Node, Service

if TYPE_CHECKING:
    from aitherctl.routing.ledger import Ledger

Clock = Callable[[], float]
# A record still `creating` this long after its intent, with no instance at the provider, was
# never created (the create call failed or never went out); younger, its call may be in flight.
CREATE_GRACE_S = 120.0


def node_service(node: Node) -> Service:
    """The node as a service of its engine, so the engine's driver builds its command."""
    return Service(
        name=node.name,
        engine=node.engine,
        image=node.image,
        port=node.port,
        model=node.model,
        bind="0.0.0.0",
        container_port=node.port,
        served_name=node.served_name,
        args=node.args,
        env=node.env,
        gpus=tuple(range(node.num_gpus)),
    )


def create_request(
    node: Node, offer_id: str, label: Label, api_key: str | None = None
) -> CreateRequest:
    """The instance to ask for: the engine driver's command, and the key the engine requires
    in the variable it reads (vLLM `VLLM_API_KEY`, llama.cpp `LLAMA_API_KEY`): in the
    environment, not the arguments, and never in the label."""
    driver = driver_for(node.engine)
    engine = driver.container(node_service(node), node.port, ())
    key_env: tuple[tuple[str, str], ...] = ()
    if api_key is not None and node.engine in KEY_VARIABLES:
        key_env = ((KEY_VARIABLES[node.engine], api_key),)
    return CreateRequest(
        offer_id=offer_id,
        image=node.image,
        args=engine.command,
        port=node.port,
        label=label.text(),
        env=(*engine.env, *node.env, *key_env),
        disk_gb=node.disk_gb,
    )


def create_node(
    provider: Provider,
    records: NodeRecords,
    *,
    profile: str,
    node: Node,
    machine: str,
    cloud: CloudBudget | None,
    spent_today_usd: float,
    clock: Clock = time.time,
) -> NodeRecord:
    """Rent the cheapest offer that matches `node` and start its engine there. The record is
    written before the create call (intent) and again with the instance's id.

    Refused without a `cloud:` budget, and once today's spend (API requests and nodes, from
    the ledger) has reached its daily cap."""
    if cloud is None:
        raise RefusedError(
            f"node {node.name!r}: the profile has no `cloud:` budget, so no node is created "
            "(add e.g. cloud: {daily_cap: 5.00})"
        )
    if spent_today_usd >= cloud.daily_cap_usd:
        raise BudgetExceededError(
            f"node {node.name!r}: today's spend ${spent_today_usd:.4f} has reached the cloud "
            f"cap ${cloud.daily_cap_usd:.2f}: no node is created until tomorrow"
        )
    offers = provider.search_offers(
        OfferQuery(
            gpu_name=node.gpu,
            num_gpus=node.num_gpus,
            min_gpu_ram_bytes=node.vram.bytes if node.vram else None,
            max_price_per_hour_usd=node.max_price_per_hour_usd,
            disk_gb=node.disk_gb,
        )
    )
    offers = [o for o in offers if o.price_per_hour_usd <= node.max_price_per_hour_usd]
    if not offers:
        raise RefusedError(
            f"node {node.name!r}: no {provider.name} offer of {node.gpu} at most "
            f"${node.max_price_per_hour_usd:.3f}/h (raise max_price_per_hour or try later)"
        )
    offer = offers[0]
    record = records.write(
        NodeRecord(
            id=secrets.token_hex(6),
            node=node.name,
            profile=profile,
            machine=machine,
            provider=provider.name,
            state=NodeState.CREATING,
            created_at=clock(),
            offer_id=offer.id,
            price_per_hour_usd=offer.price_per_hour_usd,
            api_key=secrets.token_urlsafe(32) if node.engine in KEY_VARIABLES else None,
        )
    )
    try:
        instance_id = provider.create(create_request(node, offer.id, record.label, record.api_key))
    except ProviderError as exc:
        if exc.kind is not ProviderFailure.UNREACHABLE:
            # The provider answered no: nothing was rented.
            records.update(record, state=NodeState.GONE, ended_at=clock())
        # Unreachable: the call may have gone through; the record stays `creating` and the
        # next survey looks for an instance with its label.
        raise
    return records.update(
        record, instance_id=instance_id, state=NodeState.BOOTING, started_at=clock()
    )


@dataclass(frozen=True, slots=True)
class NodeView:
    """One instance as `aitherctl nodes` shows it: its record (None for an instance found at
    the provider without one) and what the provider said now (None: not asked or gone)."""

    record: NodeRecord | None
    instance: Instance | None
    now: float

    @property
    def name(self) -> str:
        if self.record is not None:
            return self.record.node
        label = Label.parse(self.instance.label if self.instance else None)
        return label.node if label else "?"

    @property
    def state(self) -> NodeState:
        return self.record.state if self.record is not None else NodeState.UNKNOWN

    @property
    def instance_id(self) -> str | None:
        if self.record is not None and self.record.instance_id:
            return self.record.instance_id
        return self.instance.id if self.instance else None

    @property
    def price_per_hour_usd(self) -> float | None:
        if self.record is not None and self.record.price_per_hour_usd is not None:
            return self.record.price_per_hour_usd
        return self.instance.price_per_hour_usd if self.instance else None

    @property
    def age_s(self) -> float | None:
        if self.record is not None:
            return self.record.age_s(self.now)
        if self.instance and self.instance.started_at is not None:
            return max(self.now - self.instance.started_at, 0.0)
        return None

    @property
    def cost_usd(self) -> float:
        if self.record is not None:
            return self.record.cost_usd(self.now)
        if self.instance and self.instance.started_at and self.instance.price_per_hour_usd:
            return cost_usd(self.instance.price_per_hour_usd, self.now - self.instance.started_at)
        return 0.0


@dataclass(frozen=True, slots=True)
class Survey:
    """Every instance this machine knows of or made: live records, and instances the provider
    lists with this machine's label but no live record here (`unknown`: a crash)."""

    views: tuple[NodeView, ...]
    provider_error: str | None = None  # the provider could not be asked: records only

    @property
    def unknown(self) -> list[NodeView]:
        return [view for view in self.views if view.record is None]


def survey(
    provider: Provider,
    records: NodeRecords,
    *,
    machine: str,
    clock: Clock = time.time,
    include_gone: bool = False,
) -> Survey:
    """Reconcile the records with the provider: a record's instance that the provider no
    longer has becomes `gone`; an intent whose instance the provider lists (by the record id in
    its label) gets its id; an old intent with no instance was never created; the provider's
    instances labelled by this machine without a record are returned as unknown."""
    now = clock()
    try:
        listed = provider.list_instances()
    except ProviderError as exc:
        mine = [r for r in records.all() if r.live or include_gone]
        return Survey(tuple(NodeView(r, None, now) for r in mine), provider_error=exc.message)
    ours: dict[str, Instance] = {}  # record id -> instance
    strangers: list[Instance] = []
    for instance in listed:
        label = Label.parse(instance.label)
        if label is None or label.machine != machine:
            continue  # not aitherctl's, or another machine's
        ours[label.record] = instance
    by_instance = {inst.id: inst for inst in listed}
    views = []
    known_records: set[str] = set()
    for record in records.all():
        known_records.add(record.id)
        found = ours.get(record.id) or (
            by_instance.get(record.instance_id) if record.instance_id else None
        )
        if not record.live and found is not None:
            # Closed here, yet the provider lists it (a list that lagged, a destroy that did
            # not happen): it is paying, so it is live again (the gap is billed: an upper bound).
            record = records.update(record, state=NodeState.BOOTING, ended_at=None)  # noqa: PLW2901
        if record.live:
            record = _reconcile(records, record, found, now)  # noqa: PLW2901
        if record.live or include_gone:
            views.append(NodeView(record, found, now))
    for record_id, instance in ours.items():
        if record_id not in known_records:
            strangers.append(instance)
    views += [NodeView(None, instance, now) for instance in strangers]
    return Survey(tuple(views))


def _reconcile(
    records: NodeRecords, record: NodeRecord, instance: Instance | None, now: float
) -> NodeRecord:
    if instance is None:
        if record.state is NodeState.CREATING and now - record.created_at < CREATE_GRACE_S:
            return record  # its create call may still be on its way
        # Destroyed, never created, or removed at the provider: no longer paying.
        return records.update(record, state=NodeState.GONE, ended_at=now)
    changes: dict[str, object] = {}
    if record.instance_id != instance.id:
        changes["instance_id"] = instance.id  # the create answered, the record was not written
    if record.started_at is None:
        changes["started_at"] = instance.started_at or now
    if record.state is NodeState.CREATING:
        changes["state"] = NodeState.BOOTING
    if record.state is not NodeState.DESTROYING:
        url = instance.url(_port_of(instance))
        if instance.status is InstanceStatus.RUNNING and url:
            if record.url != url:
                changes["url"] = url
            if record.state is not NodeState.RUNNING:
                changes["state"] = NodeState.RUNNING  # the provider runs it, published
    return records.update(record, **changes) if changes else record


def refresh(
    provider: Provider, records: NodeRecords, record: NodeRecord, *, clock: Clock = time.time
) -> NodeRecord:
    """One instance's record brought up to date from the provider (its state, its address
    once published); `gone` when the provider no longer has it."""
    instance = provider.status(record.instance_id) if record.instance_id else None
    return _reconcile(records, record, instance, clock())


def engine_answers(node: Node, url: str, api_key: str | None, timeout_s: float = 5.0) -> bool:
    """Whether the node's engine at `url` (its root) answers its health path with 200
    (llama.cpp and vLLM `/health`: 200 once the model is loaded)."""
    import httpx

    from aitherctl.engines.registry import health_paths

    path = health_paths().get(str(node.engine), "/v1/models")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            return client.get(url.rstrip("/") + path, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False  # not listening yet


def _port_of(instance: Instance) -> int:
    return next(iter(instance.ports), 0)


def destroy(
    provider: Provider, records: NodeRecords, view: NodeView, *, clock: Clock = time.time
) -> NodeRecord:
    """Destroy the view's instance (with its storage) and mark its record gone; an instance
    found without a record gets one, so its cost stays known."""
    record = view.record
    if record is None:
        if view.instance is None:
            raise NotFoundError("nothing to destroy")
        label = Label.parse(view.instance.label)
        assert label is not None  # only labelled instances become views
        record = records.write(
            NodeRecord(
                id=label.record,
                node=label.node,
                profile=label.profile,
                machine=label.machine,
                provider=provider.name,
                state=NodeState.DESTROYING,
                created_at=view.instance.started_at or clock(),
                instance_id=view.instance.id,
                price_per_hour_usd=view.instance.price_per_hour_usd,
                started_at=view.instance.started_at,
            )
        )
    else:
        record = records.update(record, state=NodeState.DESTROYING)
    if record.instance_id is not None:
        provider.destroy(record.instance_id)
    return records.update(record, state=NodeState.GONE, ended_at=clock())


def adopt(
    provider: Provider, records: NodeRecords, view: NodeView, *, clock: Clock = time.time
) -> NodeRecord:
    """Keep an instance found without a record: it gets a record (and is listed, billed and
    destroyed like any other)."""
    if view.record is not None or view.instance is None:
        raise NotFoundError("only an instance found without a record can be adopted")
    instance = view.instance
    label = Label.parse(instance.label)
    assert label is not None
    url = instance.url(_port_of(instance))
    return records.write(
        NodeRecord(
            id=label.record,
            node=label.node,
            profile=label.profile,
            machine=label.machine,
            provider=provider.name,
            state=NodeState.RUNNING
            if instance.status is InstanceStatus.RUNNING
            else NodeState.BOOTING,
            created_at=instance.started_at or clock(),
            instance_id=instance.id,
            price_per_hour_usd=instance.price_per_hour_usd,
            started_at=instance.started_at or clock(),
            url=url,
            adopted=True,
        )
    )


def accrue(records: NodeRecords, ledger: Ledger, *, clock: Clock = time.time) -> float:
    """Write each node's cost since its last accrual into the usage ledger (one row per node,
    outcome `node`, `total_s` the seconds billed), so the daily cap counts nodes and API spend
    together; returns the amount written. The row goes in before the record moves on: a crash
    between the two counts those seconds twice (an upper bound), never not at all."""
    from aitherctl.routing.ledger import NODE_OUTCOME, LedgerRow

    now = clock()
    written = 0.0
    for record in records.all():
        span = record.unaccrued(now)
        if span is None or record.price_per_hour_usd is None:
            continue
        start, end = span
        amount = cost_usd(record.price_per_hour_usd, end - start)
        ledger.record(
            LedgerRow(
                ts=now,
                profile=record.profile,
                effort=None,
                tier=None,
                backend=record.node,
                model=None,
                local=False,
                tokens_in=None,
                tokens_out=None,
                cost_usd=amount,
                ttft_s=None,
                total_s=end - start,
                outcome=NODE_OUTCOME,
                attempts=0,
                prompt_sha256=None,
                client=f"node {record.instance_id or record.id}",
            )
        )
        records.update(record, accrued_until=end)
        written += amount
    return written


def spent_today_usd(ledger: Ledger, *, clock: Clock = time.time) -> float:
    from aitherctl.routing.ledger import start_of_local_day

    now = clock()
    return ledger.committed_since(start_of_local_day(now), now).total_usd


def provider_for(name: str) -> Provider:
    if name == "vast":
        from aitherctl.nodes.vast import VastProvider

        return VastProvider.from_environment()
    raise NotFoundError(f"no provider {name!r} (known: vast)")
