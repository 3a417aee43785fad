"""The Vast.ai adapter against the contract double of its REST API: the routes and fields the
official SDK uses, and each failure turned into one `ProviderError` kind."""

from __future__ import annotations

import httpx
import pytest

from aitherctl.nodes.provider import (
    CreateRequest,
    InstanceStatus,
    OfferQuery,
    ProviderError,
    ProviderFailure,
)
from aitherctl.nodes.vast import VastProvider
from aitherctl.units import GIB
from tests.doubles.vast_api import VastState


def request(offer: str, **changes: object) -> CreateRequest:
    fields: dict[str, object] = {
        "offer_id": offer,
        "image": "aither-test/llamacpp:latest",
        "args": ("-m", "/models/smol.gguf", "--port", "8080"),
        "port": 8080,
        "label": "aitherctl/box/dev/reasoning/abc123",
        "disk_gb": 16.0,
    }
    fields.update(changes)
    return CreateRequest(**fields)  # type: ignore[arg-type]


def test_offers_are_the_cheapest_first_under_the_ceiling_with_storage_in_the_price(
    vast: VastProvider,
) -> None:
    offers = vast.search_offers(
        OfferQuery("RTX 3090", min_gpu_ram_bytes=24 * GIB, max_price_per_hour_usd=0.20)
    )
    # $0.15/h for the GPU + 16 GB at $0.10/GB-month (720 h) = $0.15222/h; the $0.22 one is over.
    assert [(o.id, round(o.price_per_hour_usd, 5)) for o in offers] == [("101", 0.15222)]
    assert offers[0].gpu_ram_bytes == 24 * GIB
    assert vast.search_offers(OfferQuery("RTX 3090", min_gpu_ram_bytes=48 * GIB)) == []


def test_an_instance_is_created_listed_seen_running_and_destroyed(
    vast: VastProvider, vast_state: VastState
) -> None:
    instance_id = vast.create(request("101"))
    sent = vast_state.requests[-1]
    assert sent[0:2] == ("PUT", "/api/v0/asks/101/")
    assert sent[2]["env"] == {"-p 8080:8080": "1"}
    assert sent[2]["runtype"] == "args"
    assert sent[2]["label"] == "aitherctl/box/dev/reasoning/abc123"
    listed = vast.list_instances()
    assert [(i.id, i.label) for i in listed] == [
        (instance_id, "aitherctl/box/dev/reasoning/abc123")
    ]
    # boot_delay_s is 0: the double's boot timer has run or is about to; wait for it by state.
    for _ in range(200):
        status = vast.status(instance_id)
        assert status is not None
        if status.status is InstanceStatus.RUNNING:
            break
        vast_state.timers[-1].join(timeout=0.05)
    assert status.status is InstanceStatus.RUNNING
    assert status.price_per_hour_usd == pytest.approx(0.15 + 0.10 * 16 / 720)
    vast.destroy(instance_id)
    assert vast.status(instance_id) is None
    assert vast.list_instances() == []
    vast.destroy(instance_id)  # already gone: not an error
    assert vast.account().credit_usd == 25.0


def test_every_page_of_the_instance_list_is_read(vast: VastProvider, vast_state: VastState) -> None:
    from tests.doubles.vast_api import VastOffer

    vast_state.offers.update({300 + i: VastOffer(300 + i, "RTX 3090", 0.1) for i in range(30)})
    ids = [vast.create(request(str(300 + i), label=f"aitherctl/box/dev/n/r{i}")) for i in range(30)]
    assert [i.id for i in vast.list_instances()] == ids  # 25 a page: two pages
    pages = [r for r in vast_state.requests if r[1].startswith("/api/v1/instances/")]
    assert len(pages) == 2
    assert "after_token=" in pages[1][1]


def test_each_failure_is_one_kind_with_the_providers_reason(
    vast: VastProvider, vast_state: VastState, vast_url: str
) -> None:
    with pytest.raises(ProviderError) as low_bid:
        vast.create(request("101", price_per_hour_usd=0.01))
    assert low_bid.value.kind is ProviderFailure.REFUSED
    assert low_bid.value.message == (
        "vast PUT /api/v0/asks/101/: refused (insufficient_bid: bid 0.01 is below the minimum 0.05)"
    )
    vast.create(request("101"))
    with pytest.raises(ProviderError) as taken:
        vast.create(request("101"))
    assert taken.value.kind is ProviderFailure.REFUSED

    vast_state.rate_limited = 1
    with pytest.raises(ProviderError) as limited:
        vast.list_instances()
    assert (limited.value.kind, limited.value.retry_after_s) == (ProviderFailure.RATE_LIMITED, 1.0)
    assert len(vast.list_instances()) == 1  # the next request goes through

    with httpx.Client() as client:
        wrong_key = VastProvider(client, vast_url, "not-the-key")
        with pytest.raises(ProviderError) as auth:
            wrong_key.account()
    assert auth.value.kind is ProviderFailure.AUTH

    vast_state.down = True
    with pytest.raises(ProviderError) as down:
        vast.account()
    assert down.value.kind is ProviderFailure.UNREACHABLE

    with httpx.Client() as client:
        nowhere = VastProvider(client, "http://127.0.0.1:9", "k")
        with pytest.raises(ProviderError) as unreachable:
            nowhere.list_instances()
    assert unreachable.value.kind is ProviderFailure.UNREACHABLE
    assert "no answer from http://127.0.0.1:9" in unreachable.value.message
