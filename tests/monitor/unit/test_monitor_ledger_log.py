"""The monitor's log calls a refusal a refusal and a failure a failure, not a "fallback"."""

from __future__ import annotations

from dataclasses import dataclass

from aitherctl.monitor.collect import LedgerLog
from aitherctl.monitor.model import LogKind
from aitherctl.routing.ledger import LedgerRow


def row(outcome: str, attempts: int, backend: str | None, model: str | None = None) -> LedgerRow:
    return LedgerRow(
        ts=100.0,
        profile="p",
        effort=3,
        tier="t",
        backend=backend,
        model=model,
        local=True,
        tokens_in=1,
        tokens_out=1,
        cost_usd=0.0,
        ttft_s=None,
        total_s=None,
        outcome=outcome,
        attempts=attempts,
        prompt_sha256=None,
    )


@dataclass
class Rows:
    """The ledger's read interface (rows_since), holding rows given here."""

    rows: list[LedgerRow]

    def rows_since(self, since: float) -> list[LedgerRow]:
        del since
        return self.rows


def test_each_outcome_is_named_for_what_it_was() -> None:
    log = LedgerLog(
        Rows(
            [
                row("ok", 1, "local", "smol"),  # answered at once: not an event
                row("ok", 2, "cloud", "gpt-5"),
                row("budget", 0, None),
                row("failed", 3, "local", "smol"),
            ]
        ),
        clock=lambda: 200.0,
    )
    assert [(entry.kind, entry.message) for entry in log.recent(10)] == [
        (LogKind.FALLBACK, "answered by cloud gpt-5 after 2 attempts"),
        (LogKind.REFUSED, "the daily budget forbids the request"),
        (LogKind.FAILED, "no backend answered after 3 attempts (failed), last local smol"),
    ]
