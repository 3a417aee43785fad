"""Never a paid node nobody knows about: a node is recorded before the create call and after
it, and a survey finds every instance this machine made, from its records and from the
provider's own list by label (against the Vast.ai contract double)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from aitherctl.errors import RefusedError
from aitherctl.nodes.model import Label, NodeState
from aitherctl.nodes.operations import adopt, create_node, create_request, destroy, survey
from aitherctl.nodes.provider import CreateRequest, ProviderError, ProviderFailure
from aitherctl.nodes.records import NodeRecords
from aitherctl.nodes.vast import VastProvider
from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.profile import CloudBudget, Node
from tests.doubles.vast_api import VastState
from tests.nodes.conftest import NODE_PROFILE

BUDGET = {"cloud": CloudBudget(daily_cap_usd=5.0), "spent_today_usd": 0.0}

PROFILE = NODE_PROFILE


@pytest.fixture
def node() -> Node:
    return load_profile_text(PROFILE.lstrip(), "dev.yaml", env={}).nodes["reasoning"]


@pytest.fixture
def records(tmp_path: Path) -> NodeRecords:
    return NodeRecords(tmp_path / "nodes")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordsSeenAtCreate(VastProvider):
    """The real adapter, noting which records existed when `create` went out."""

    seen: list[list[tuple[NodeState, str | None]]]

    def create(self, request: CreateRequest) -> str:
        self.seen.append([(r.state, r.instance_id) for r in self.records.all()])
        return super().create(request)


def test_the_intent_is_recorded_before_the_create_call_and_the_instance_id_after(
    vast: VastProvider, node: Node, records: NodeRecords
) -> None:
    spy = RecordsSeenAtCreate(vast._client, vast._base, vast._api_key)
    spy.seen, spy.records = [], records  # type: ignore[attr-defined]
    clock = Clock()
    record = create_node(
        spy, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock
    )
    assert spy.seen == [[(NodeState.CREATING, None)]]
    assert (record.state, record.offer_id) == (NodeState.BOOTING, "101")
    assert record.price_per_hour_usd == pytest.approx(0.15 + 0.10 * 16 / 720)
    assert records.all() == [record]
    # The label names the machine, the profile, the node and the record; nothing secret.
    listed = vast.list_instances()
    assert [i.label for i in listed] == [f"aitherctl/box/dev/reasoning/{record.id}"]
    assert [i.id for i in listed] == [record.instance_id]


def test_the_engine_command_is_the_drivers(node: Node) -> None:
    made = create_request(node, "101", Label("box", "dev", "reasoning", "r1"))
    assert made.image == "aither-test/llamacpp:latest"
    assert made.args[:6] == ("-m", "/models/smol.gguf", "--host", "0.0.0.0", "--port", "8080")
    assert made.port == 8080


def test_no_offer_under_the_ceiling_refuses_and_records_nothing(
    vast: VastProvider, node: Node, records: NodeRecords, vast_state: VastState
) -> None:
    for offer in vast_state.offers.values():
        offer.dph_base = 0.5
    with pytest.raises(RefusedError) as caught:
        create_node(vast, records, profile="dev", node=node, machine="box", **BUDGET)
    assert caught.value.message == (
        "node 'reasoning': no vast offer of RTX 3090 at most $0.200/h (raise "
        "max_price_per_hour or try later)"
    )
    assert records.all() == []


def test_a_refused_create_closes_its_record_and_an_unanswered_one_keeps_it_open(
    vast: VastProvider, node: Node, records: NodeRecords, vast_state: VastState
) -> None:
    clock = Clock()
    vast_state.credit = 0
    with pytest.raises(ProviderError) as refused:
        create_node(vast, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock)
    assert refused.value.kind is ProviderFailure.REFUSED
    assert [r.state for r in records.all()] == [NodeState.GONE]

    class NoAnswer(VastProvider):
        def create(self, request: CreateRequest) -> str:
            super().create(request)  # it reached the provider, the answer was lost
            raise ProviderError("timed out", ProviderFailure.UNREACHABLE)

    vast_state.credit = 10
    lost = NoAnswer(vast._client, vast._base, vast._api_key)
    clock.now += 1
    with pytest.raises(ProviderError):
        create_node(lost, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock)
    open_record = records.all()[-1]
    assert (open_record.state, open_record.instance_id) == (NodeState.CREATING, None)
    # The next survey finds the instance by the record id in its label.
    found = survey(vast, records, machine="box", clock=clock)
    assert found.unknown == []
    [view] = found.views  # the refused one is closed: not listed
    assert view.record is not None
    assert view.record.state is NodeState.BOOTING
    assert view.instance_id == vast.list_instances()[0].id


def test_an_instance_without_a_record_is_unknown_until_destroyed_or_adopted(
    vast: VastProvider, node: Node, records: NodeRecords, vast_state: VastState
) -> None:
    clock = Clock()
    node = replace(node, max_price_per_hour_usd=0.30)  # two offers of a 3090 under it
    first = create_node(
        vast, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock
    )
    second = create_node(
        vast, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock
    )
    records.forget(first)
    records.forget(second)
    # Another machine's instance and a stranger's are not ours.
    vast.create(create_request(node, "201", Label("other", "dev", "reasoning", "x1")))
    found = survey(vast, records, machine="box", clock=clock)
    assert sorted(v.instance_id or "" for v in found.unknown) == sorted(
        [first.instance_id or "", second.instance_id or ""]
    )
    assert all(v.state is NodeState.UNKNOWN for v in found.unknown)
    destroyed = destroy(vast, records, found.unknown[0], clock=clock)
    assert destroyed.state is NodeState.GONE
    kept = adopt(vast, records, found.unknown[1], clock=clock)
    assert kept.adopted
    stranger = str(max(vast_state.instances))
    assert {i.id for i in vast.list_instances()} == {kept.instance_id, stranger}
    again = survey(vast, records, machine="box", clock=clock)
    assert again.unknown == []
    assert [v.instance_id for v in again.views] == [kept.instance_id]


def test_a_record_whose_instance_is_gone_is_closed_and_an_old_intent_never_created(
    vast: VastProvider, node: Node, records: NodeRecords, vast_state: VastState
) -> None:
    clock = Clock()
    made = create_node(
        vast, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock
    )
    vast.destroy(made.instance_id or "")  # destroyed behind aitherctl's back
    clock.now += 3600
    found = survey(vast, records, machine="box", clock=clock, include_gone=True)
    [view] = found.views
    assert view.state is NodeState.GONE
    assert view.record is not None
    assert view.record.ended_at == clock.now
    # Billed from creation to when it was found gone: an upper bound of what it cost.
    assert view.cost_usd == pytest.approx(made.price_per_hour_usd or 0)
    assert survey(vast, records, machine="box", clock=clock).views == ()


def test_cost_so_far_is_the_offers_price_per_second(
    vast: VastProvider, node: Node, records: NodeRecords
) -> None:
    clock = Clock()
    made = create_node(
        vast, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock
    )
    clock.now += 90
    [view] = survey(vast, records, machine="box", clock=clock).views
    assert view.age_s == 90
    assert view.cost_usd == pytest.approx((made.price_per_hour_usd or 0) * 90 / 3600)


def test_node_time_accrues_into_the_ledger_once_and_the_cap_refuses_a_create(
    vast: VastProvider, node: Node, records: NodeRecords, tmp_path: Path
) -> None:
    from aitherctl.errors import BudgetExceededError
    from aitherctl.nodes.operations import accrue, spent_today_usd
    from aitherctl.routing.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    clock = Clock()
    clock.now = datetime(2027, 1, 15, 12).timestamp()  # local noon: the day started hours ago
    made = create_node(
        vast, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock
    )
    price = made.price_per_hour_usd or 0
    clock.now += 1800
    assert accrue(records, ledger, clock=clock) == pytest.approx(price / 2)
    assert accrue(records, ledger, clock=clock) == 0  # nothing new: nothing written twice
    clock.now += 600
    [view] = survey(vast, records, machine="box", clock=clock).views
    destroy(vast, records, view, clock=clock)
    clock.now += 3600  # after its end nothing more accrues
    assert accrue(records, ledger, clock=clock) == pytest.approx(price * 600 / 3600)
    rows = ledger.rows_since(0)
    assert [(r.backend, r.outcome, r.local, round(r.total_s or 0)) for r in rows] == [
        ("reasoning", "node", False, 1800),
        ("reasoning", "node", False, 600),
    ]
    spent = spent_today_usd(ledger, clock=clock)
    assert spent == pytest.approx(price * 2400 / 3600)

    # At the cap no node is created, and nothing is recorded or rented.
    cap = CloudBudget(daily_cap_usd=spent)
    with pytest.raises(BudgetExceededError) as caught:
        create_node(
            vast,
            records,
            profile="dev",
            node=node,
            machine="box",
            cloud=cap,
            spent_today_usd=spent,
            clock=clock,
        )
    assert caught.value.message == (
        f"node 'reasoning': today's spend ${spent:.4f} has reached the cloud cap "
        f"${spent:.2f}: no node is created until tomorrow"
    )
    with pytest.raises(RefusedError) as no_budget:
        create_node(
            vast,
            records,
            profile="dev",
            node=node,
            machine="box",
            cloud=None,
            spent_today_usd=0.0,
            clock=clock,
        )
    assert "no `cloud:` budget" in no_budget.value.message
    assert len(records.all()) == 1
    assert vast.list_instances() == []


def test_the_engine_requires_a_generated_key_kept_out_of_labels(
    vast: VastProvider, node: Node, records: NodeRecords, vast_state: VastState
) -> None:
    made = create_node(vast, records, profile="dev", node=node, machine="box", **BUDGET)
    assert made.api_key is not None
    assert len(made.api_key) >= 40
    [(_method, _path, body)] = [r for r in vast_state.requests if r[0] == "PUT"]
    assert body["env"]["LLAMA_API_KEY"] == made.api_key  # llama-server's --api-key variable
    assert made.api_key not in body["label"]
    assert made.api_key not in " ".join(body["args"])
    assert made.api_key not in repr(made)
    assert records.path(made.id).stat().st_mode & 0o777 == 0o600
    another = create_node(
        vast,
        records,
        profile="dev",
        node=replace(node, max_price_per_hour_usd=0.3),
        machine="box",
        **BUDGET,
    )
    assert another.api_key != made.api_key


def test_a_closed_record_whose_instance_the_provider_still_lists_is_live_again(
    vast: VastProvider, node: Node, records: NodeRecords
) -> None:
    clock = Clock()
    made = create_node(
        vast, records, profile="dev", node=node, machine="box", **BUDGET, clock=clock
    )
    records.update(made, state=NodeState.GONE, ended_at=clock.now)  # e.g. a list that lagged
    clock.now += 60
    [view] = survey(vast, records, machine="box", clock=clock).views
    assert view.record is not None
    assert (view.state, view.record.ended_at, view.instance_id) == (
        NodeState.BOOTING,
        None,
        made.instance_id,
    )
