"""`aitherctl usage`: spending against the budget, requests per tier and backend, latency."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from aitherctl.cli import runtime
from aitherctl.cli.output import Output

if TYPE_CHECKING:
    from aitherctl.routing.usage import UsageReport


def _fmt_s(value: float | None) -> str:
    return "N/A" if value is None else f"{value:.2f}s"


def _print_report(out: Output, report: UsageReport) -> None:
    from rich.table import Table

    budget = report.daily_budget_usd
    share = f"{report.spent_today_usd / budget:.0%}, " if budget else ""
    whose = f"profile {report.budget_profile}" if report.budget_profile else "default cap"
    in_flight = (
        f"; ${report.reserved_today_usd:.4f} reserved by requests in flight"
        if report.reserved_today_usd
        else ""
    )
    out.print(
        f"today: ${report.spent_today_usd:.4f} of ${budget:g} daily budget ({share}{whose})"
        f"{in_flight}",
        markup=False,
    )
    out.print(
        f"{report.period}: {report.requests} requests, {report.answered} answered "
        f"({report.answered_locally} locally), ${report.spent_usd:.4f}",
        markup=False,
    )
    if report.per_tier:
        # A request that named its service or endpoint (`run --backend`, a model name through
        # `serve`) has no tier: say so rather than "?".
        named = report.per_tier.get("?", 0)
        tiers = ", ".join(
            f"{name} {count}" for name, count in report.per_tier.items() if name != "?"
        )
        if named:
            tiers += ("; " if tiers else "") + f"{named} named a backend directly (no tier)"
        out.print(f"tiers: {tiers}", markup=False)
    if report.per_outcome:
        outcomes = ", ".join(f"{name} {count}" for name, count in report.per_outcome.items())
        out.print(f"outcomes: {outcomes}", markup=False)
    if report.nodes:
        spent = ", ".join(
            f"{name} {seconds / 3600:.2f} h ${cost:.4f}"
            for name, (seconds, cost) in report.nodes.items()
        )
        out.print(f"rented nodes: {spent}", markup=False)
    if not report.backends:
        return
    table = Table(box=None, pad_edge=False)
    # Headers on one line each (a wrapped "TOTAL P50" left a lone "TOTAL" above the table).
    for column in (
        "backend",
        "where",
        "requests",
        "ok",
        "cost",
        "ttft p50",
        "ttft p95",
        "time p50",
        "time p95",
    ):
        table.add_column(
            column,
            justify="left" if column in ("backend", "where") else "right",
            no_wrap=column != "backend",
        )
    for item in report.backends:
        where = "N/A" if item.local is None else ("local" if item.local else "cloud")
        table.add_row(
            item.backend,
            where,
            str(item.requests),
            str(item.ok),
            f"${item.cost_usd:.4f}",
            _fmt_s(item.ttft_p50_s),
            _fmt_s(item.ttft_p95_s),
            _fmt_s(item.total_p50_s),
            _fmt_s(item.total_p95_s),
        )
    out.print(table, soft_wrap=False)
    out.print(
        "ttft: time to the first token; time: to the whole answer (answered requests)",
        markup=False,
        soft_wrap=False,
    )


def usage(
    since: Annotated[
        str | None,
        typer.Option("--since", help="today (default), 30m, 24h, 7d, 2w, or a date 2026-11-01."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Whose daily budget to compare with (default: as `run` picks it, the active "
            "profile, else $AITHER_GPU_PROFILE).",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Spending against the daily budget, requests per tier and backend, the share answered
    locally, and p50/p95 latency per backend, from the ledger `aitherctl run` keeps."""
    from aitherctl.routing.ledger import Ledger, start_of_local_day
    from aitherctl.routing.usage import parse_since, select_budget, summarize_usage

    out = Output(json_mode=json_output)
    now = time.time()
    since_ts, period = parse_since(since, now)
    ledger = Ledger()
    cap = select_budget(profile, runtime.catalog(), runtime.docker_reader)
    today = ledger.committed_since(start_of_local_day(now), now)
    report = summarize_usage(
        ledger.rows_since(since_ts),
        period=period,
        since_ts=since_ts,
        spent_today_usd=today.spent_usd,
        daily_budget_usd=cap.daily_usd,
        budget_profile=cap.profile,
        reserved_today_usd=today.reserved_usd,
    )
    if json_output:
        out.data(report.to_json())
    else:
        _print_report(out, report)


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
