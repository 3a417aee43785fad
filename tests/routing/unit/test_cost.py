"""Prices, worst-case bounds and the daily budget (pure)."""

from __future__ import annotations

import pytest

from aitherctl.routing.cost import (
    Budget,
    Price,
    budget_warning,
    check_budget,
    parse_budget,
    parse_price,
)


def test_parse_price_forms() -> None:
    assert parse_price({"input": 0.27, "output": 1.1}) == Price(0.27, 1.1)
    assert parse_price([3, 15]) == Price(3.0, 15.0)
    assert parse_price({"output": 2}) == Price(0.0, 2.0)
    for bad in ({"in": 1}, "cheap", [1], [-1, 2], {"input": True}):
        with pytest.raises(ValueError):
            parse_price(bad)


def test_cost_per_million_tokens() -> None:
    price = Price(0.27, 1.10)
    assert price.cost_usd(1_000_000, 0) == pytest.approx(0.27)
    assert price.cost_usd(2000, 500) == pytest.approx((2000 * 0.27 + 500 * 1.10) / 1e6)
    assert Price(0, 0).is_free


def test_parse_budget() -> None:
    assert parse_budget({}) == Budget(5.0, 0.8)
    assert parse_budget({"daily_usd": 2, "warn_at": "50%"}) == Budget(2.0, 0.5)
    assert parse_budget({"warn_at": 0.9}).warn_fraction == 0.9
    for bad in ({"daily": 1}, {"daily_usd": -1}, {"warn_at": "lots"}, {"warn_at": 1.5}):
        with pytest.raises(ValueError):
            parse_budget(bad)


def test_worst_case_refuses_before_the_cap() -> None:
    budget = Budget(daily_usd=1.0)
    price = Price(1000, 1000)  # $0.001 per token
    ok = check_budget(budget, spent_usd=0.5, price=price, prompt_tokens_max=100, max_tokens=400)
    assert ok.allowed
    assert ok.worst_case_usd == pytest.approx(0.5)
    refused = check_budget(budget, 0.5, price, prompt_tokens_max=101, max_tokens=400)
    assert not refused.allowed
    assert refused.reason == "budget: worst case $0.5010 > $0.5000 left of $1 today"
    assert check_budget(Budget(0.0), 0.0, Price(0, 0), 10, 10).allowed


def test_warning_at_80_percent() -> None:
    budget = Budget(daily_usd=5.0)
    assert budget_warning(budget, 3.99) is None
    assert budget_warning(budget, 4.0) == "80% of today's budget spent ($4.0000 of $5)"
    assert budget_warning(budget, 5.0) == "daily budget spent: $5.0000 of $5"
