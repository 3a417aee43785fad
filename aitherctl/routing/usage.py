"""`aitherctl usage`: what the ledger says about spending, tiers, backends and latency."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aitherctl.errors import AitherError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aitherctl.docker.listing import ContainerSource
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.routing.ledger import LedgerRow

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
_UNITS_S = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | None, now: float) -> tuple[float, str]:
    """`today` (default: since local midnight), `24h`, `7d`, `30m`, `2w`, or a date `2026-11-01`."""
    from aitherctl.routing.ledger import start_of_local_day

    if value is None or value.strip().lower() == "today":
        return start_of_local_day(now), "today"
    match = _RELATIVE.match(value)
    if match:
        return now - float(match.group(1)) * _UNITS_S[match.group(2)], f"last {value.strip()}"
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(
            f"--since {value!r}: use today, 30m, 24h, 7d, 2w or a date like 2026-11-01"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp(), f"since {value.strip()}"


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (p50, p95) of a small sample; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class BudgetCap:
    """The daily cap `run` enforces, and the profile it comes from (None: the default)."""

    daily_usd: float
    profile: str | None


def select_budget(
    explicit: str | None,
    catalog: ProfileCatalog,
    connect: Callable[[], ContainerSource],
) -> BudgetCap:
    """The cap by `run`'s own rule (`routing.router.select_profile_name`): `--profile`, else
    the active profile, else $AITHER_GPU_PROFILE; that profile's `budget.daily_usd` (default $5).
    Docker is asked for the active profile only when no --profile is given."""
    from aitherctl.routing.cost import DEFAULT_DAILY_USD, parse_budget
    from aitherctl.routing.router import observe_stack, select_profile_name

    active = None if explicit else observe_stack(connect)[0]
    name = select_profile_name(explicit, active)
    if not name:
        return BudgetCap(DEFAULT_DAILY_USD, None)
    try:
        budget = parse_budget(catalog.load(name).budget or {})
    except (AitherError, ValueError):
        if explicit:
            raise
        return BudgetCap(DEFAULT_DAILY_USD, None)
    return BudgetCap(budget.daily_usd, name)


@dataclass(frozen=True, slots=True)
class BackendUsage:
    """One backend's line in `aitherctl usage`: its requests and how many succeeded, its cost,
    and its time to first token and total time (median and 95th percentile)."""

    backend: str
    requests: int
    ok: int
    local: bool | None
    cost_usd: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    total_p50_s: float | None
    total_p95_s: float | None


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What `aitherctl usage` reports for a period: requests and money spent (rented nodes
    included), today's spending against the cap, and the split by tier, outcome and backend."""

    period: str
    since_ts: float
    requests: int
    spent_usd: float  # in the period
    spent_today_usd: float
    daily_budget_usd: float
    budget_profile: str | None  # whose budget.daily_usd; None: the default cap
    reserved_today_usd: float  # worst cases of requests in flight
    per_tier: dict[str, int]
    per_outcome: dict[str, int]
    local_share: float | None  # answered locally / answered
    backends: tuple[BackendUsage, ...]
    answered: int = 0  # requests whose outcome is "ok"
    answered_locally: int = 0  # of those, by a local service
    # Rented nodes (aitherctl.nodes): node -> (seconds billed, USD) in the period; their rows
    # (outcome `node`) count in the money, not in the requests.
    nodes: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "since": datetime.fromtimestamp(self.since_ts).astimezone().isoformat(),
            "requests": self.requests,
            "spent_usd": round(self.spent_usd, 6),
            "budget": {
                "daily_usd": self.daily_budget_usd,
                "profile": self.budget_profile,
                "spent_today_usd": round(self.spent_today_usd, 6),
                "reserved_usd": round(self.reserved_today_usd, 6),
                "used_fraction": round(self.spent_today_usd / self.daily_budget_usd, 4)
                if self.daily_budget_usd
                else None,
            },
            "per_tier": self.per_tier,
            "per_outcome": self.per_outcome,
            "local_share": None if self.local_share is None else round(self.local_share, 4),
            "answered": self.answered,
            "answered_locally": self.answered_locally,
            "nodes": [
                {"node": name, "seconds": round(seconds, 3), "cost_usd": round(cost, 6)}
                for name, (seconds, cost) in self.nodes.items()
            ],
            "backends": [
                {
                    "backend": b.backend,
                    "requests": b.requests,
                    "ok": b.ok,
                    "local": b.local,
                    "cost_usd": round(b.cost_usd, 6),
                    "ttft_p50_s": _r(b.ttft_p50_s),
                    "ttft_p95_s": _r(b.ttft_p95_s),
                    "total_p50_s": _r(b.total_p50_s),
                    "total_p95_s": _r(b.total_p95_s),
                }
                for b in self.backends
            ],
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarize_usage(
    rows: list[LedgerRow],
    *,
    period: str,
    since_ts: float,
    spent_today_usd: float,
    daily_budget_usd: float,
    budget_profile: str | None = None,
    reserved_today_usd: float = 0.0,
) -> UsageReport:
    per_tier: dict[str, int] = {}
    per_outcome: dict[str, int] = {}
    by_backend: dict[str, list[LedgerRow]] = {}
    from aitherctl.routing.ledger import NODE_OUTCOME

    nodes: dict[str, tuple[float, float]] = {}
    money = sum(r.cost_usd for r in rows)
    for row in (r for r in rows if r.outcome == NODE_OUTCOME):
        seconds, cost = nodes.get(row.backend or "?", (0.0, 0.0))
        nodes[row.backend or "?"] = (seconds + (row.total_s or 0.0), cost + row.cost_usd)
    rows = [r for r in rows if r.outcome != NODE_OUTCOME]
    for row in rows:
        per_tier[row.tier or "?"] = per_tier.get(row.tier or "?", 0) + 1
        per_outcome[row.outcome] = per_outcome.get(row.outcome, 0) + 1
        if row.backend:
            by_backend.setdefault(row.backend, []).append(row)
    answered = [r for r in rows if r.outcome == "ok"]
    local_share = sum(1 for r in answered if r.local) / len(answered) if answered else None
    backends = []
    for name, items in sorted(by_backend.items(), key=lambda kv: -len(kv[1])):
        ok = [r for r in items if r.outcome == "ok"]
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        totals = [r.total_s for r in ok if r.total_s is not None]
        backends.append(
            BackendUsage(
                backend=name,
                requests=len(items),
                ok=len(ok),
                local=items[-1].local,
                cost_usd=sum(r.cost_usd for r in items),
                ttft_p50_s=statistics.median(ttfts) if ttfts else None,
                ttft_p95_s=percentile(ttfts, 0.95),
                total_p50_s=statistics.median(totals) if totals else None,
                total_p95_s=percentile(totals, 0.95),
            )
        )
    return UsageReport(
        period=period,
        since_ts=since_ts,
        requests=len(rows),
        spent_usd=money,
        spent_today_usd=spent_today_usd,
        daily_budget_usd=daily_budget_usd,
        budget_profile=budget_profile,
        reserved_today_usd=reserved_today_usd,
        per_tier=dict(sorted(per_tier.items())),
        per_outcome=dict(sorted(per_outcome.items())),
        local_share=local_share,
        backends=tuple(backends),
        answered=len(answered),
        answered_locally=sum(1 for r in answered if r.local),
        nodes=dict(sorted(nodes.items())),
    )
