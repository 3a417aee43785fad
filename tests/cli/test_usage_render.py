"""`usage` as a person reads it: no unexplained `?` tier, headers on one line, answers counted."""

from __future__ import annotations

import pytest

from aitherctl.cli.output import Output
from aitherctl.cli.usage_cmd import _print_report
from aitherctl.routing.ledger import LedgerRow
from aitherctl.routing.usage import summarize_usage


def row(tier: str | None, backend: str, local: bool, outcome: str = "ok") -> LedgerRow:
    return LedgerRow(
        ts=1.0,
        profile="p",
        effort=3,
        tier=tier,
        backend=backend,
        model="m",
        local=local,
        tokens_in=5,
        tokens_out=7,
        cost_usd=0.0 if local else 0.002,
        ttft_s=0.12,
        total_s=0.8,
        outcome=outcome,
        attempts=1,
        prompt_sha256=None,
    )


REPORT = summarize_usage(
    [
        row("fast", "assistant", local=True),
        row("fast", "assistant", local=True),
        row("fast", "assistant", local=True, outcome="error"),
        row(None, "assistant", local=True),
        row("hard", "deepseek", local=False),
    ],
    period="today",
    since_ts=0.0,
    spent_today_usd=0.002,
    daily_budget_usd=5,
    budget_profile="p",
)


@pytest.mark.parametrize("columns", [80, 200])
def test_usage_report_reads_plainly(columns: int, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", str(columns))
    _print_report(Output(), REPORT)
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        "today: $0.0020 of $5 daily budget (0%, profile p)",
        "today: 5 requests, 4 answered (3 locally), $0.0020",
        "tiers: fast 3, hard 1; 1 named a backend directly (no tier)",
        "outcomes: error 1, ok 4",
        "backend    where  requests  ok     cost  ttft p50  ttft p95  time p50  time p95",
        "assistant  local         4   3  $0.0000     0.12s     0.12s     0.80s     0.80s",
        "deepseek   cloud         1   1  $0.0020     0.12s     0.12s     0.80s     0.80s",
        "ttft: time to the first token; time: to the whole answer (answered requests)",
    ]
    data = REPORT.to_json()
    assert (data["answered"], data["answered_locally"]) == (4, 3)


@pytest.mark.parametrize("columns", [80, 200])
def test_rented_nodes_count_in_the_money_not_as_requests(columns: int, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    node_row = LedgerRow(
        ts=2.0,
        profile="p",
        effort=None,
        tier=None,
        backend="reasoning",
        model=None,
        local=False,
        tokens_in=None,
        tokens_out=None,
        cost_usd=0.1015,
        ttft_s=None,
        total_s=2400.0,
        outcome="node",
        attempts=0,
        prompt_sha256=None,
    )
    report = summarize_usage(
        [row("hard", "deepseek", local=False), node_row],
        period="today",
        since_ts=0.0,
        spent_today_usd=0.1035,
        daily_budget_usd=5,
        budget_profile="p",
    )
    monkeypatch.setenv("COLUMNS", str(columns))
    _print_report(Output(), report)
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert lines[:5] == [
        "today: $0.1035 of $5 daily budget (2%, profile p)",
        "today: 1 requests, 1 answered (0 locally), $0.1035",
        "tiers: hard 1",
        "outcomes: ok 1",
        "rented nodes: reasoning 0.67 h $0.1015",
    ]
    assert report.to_json()["nodes"] == [
        {"node": "reasoning", "seconds": 2400.0, "cost_usd": 0.1015}
    ]
