"""Prices, the cost of a request, and the daily budget check.

Prices are the endpoint's own (`price: {input: 0.27, output: 1.10}` in USD per million tokens, as
providers publish them). The cost of a finished request uses the token counts the server reports
(`usage` of the final stream chunk, from `stream_options.include_usage`). Before sending, the check
counts the request's worst case (routing/request_cost.py: an upper bound on the tokens billed in and
out, read from the body sent), so that spending stays under the cap even if the answer is as long
as allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_DAILY_USD = 5.0
DEFAULT_WARN_FRACTION = 0.8
WARN_AT_HELP = "budget.warn_at must be a fraction (0.8) or a percentage (80%)"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens, as providers publish them."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float

    @property
    def is_free(self) -> bool:
        return self.input_usd_per_mtok == 0 and self.output_usd_per_mtok == 0

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (
            tokens_in * self.input_usd_per_mtok + tokens_out * self.output_usd_per_mtok
        ) / 1_000_000


def parse_price(value: Any) -> Price:
    """`{input: 0.27, output: 1.10}` or `[0.27, 1.10]`; raises ValueError with the reason."""
    if isinstance(value, dict):
        unknown = set(value) - {"input", "output"}
        if unknown:
            raise ValueError(f"unknown price keys {sorted(unknown)} (use input, output)")
        pair = (value.get("input", 0), value.get("output", 0))
    elif isinstance(value, list | tuple) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        raise ValueError("price must be {input: USD, output: USD} per million tokens")
    numbers = []
    for item in pair:
        if isinstance(item, bool) or not isinstance(item, int | float) or item < 0:
            raise ValueError(f"price {item!r} must be a number >= 0 (USD per million tokens)")
        numbers.append(float(item))
    return Price(numbers[0], numbers[1])


@dataclass(frozen=True, slots=True)
class Budget:
    """The profile's daily spending cap in USD (`budget.daily_usd`), and the share of it at which
    `run` warns (`warn_at`)."""

    daily_usd: float = DEFAULT_DAILY_USD
    warn_fraction: float = DEFAULT_WARN_FRACTION


def parse_budget(section: dict[str, Any]) -> Budget:
    """The profile's `budget:` section: `daily_usd` (default 5) and `warn_at` (default 80%)."""
    unknown = set(section) - {"daily_usd", "warn_at"}
    if unknown:
        raise ValueError(f"unknown budget keys {sorted(unknown)} (use daily_usd, warn_at)")
    daily = section.get("daily_usd", DEFAULT_DAILY_USD)
    if isinstance(daily, bool) or not isinstance(daily, int | float) or daily < 0:
        raise ValueError("budget.daily_usd must be a number of US dollars >= 0")
    warn: Any = section.get("warn_at", DEFAULT_WARN_FRACTION)
    if isinstance(warn, str) and warn.strip().endswith("%"):
        try:
            warn = float(warn.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(WARN_AT_HELP) from None
    if isinstance(warn, bool) or not isinstance(warn, int | float) or not 0 < warn <= 1:
        raise ValueError(WARN_AT_HELP)
    return Budget(daily_usd=float(daily), warn_fraction=float(warn))


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """The budget check's answer for one request: sent or refused (and why), its worst-case cost,
    and today's money spent and left."""

    allowed: bool
    worst_case_usd: float
    spent_usd: float
    remaining_usd: float
    reason: str | None = None  # why it is refused


def check_budget(
    budget: Budget, spent_usd: float, price: Price, prompt_tokens_max: int, max_tokens: int
) -> BudgetVerdict:
    """May a request with this price go out? Refused when its worst case would pass the cap."""
    worst = price.cost_usd(prompt_tokens_max, max_tokens)
    remaining = max(0.0, budget.daily_usd - spent_usd)
    if price.is_free:
        return BudgetVerdict(True, 0.0, spent_usd, remaining)
    if spent_usd + worst > budget.daily_usd:
        reason = (
            f"budget: worst case ${worst:.4f} > ${remaining:.4f} left of "
            f"${budget.daily_usd:g} today"
        )
        return BudgetVerdict(False, worst, spent_usd, remaining, reason)
    return BudgetVerdict(True, worst, spent_usd, remaining)


def budget_warning(budget: Budget, spent_usd: float) -> str | None:
    """The 80% line (or `warn_at`): a one-line warning once today's spend reaches it."""
    if budget.daily_usd <= 0:
        return None
    fraction = spent_usd / budget.daily_usd
    if fraction >= 1:
        return f"daily budget spent: ${spent_usd:.4f} of ${budget.daily_usd:g}"
    if fraction >= budget.warn_fraction:
        return f"{fraction:.0%} of today's budget spent (${spent_usd:.4f} of ${budget.daily_usd:g})"
    return None
