"""What `aitherctl run` reports about an answer, whichever way it went (straight to the backends
or through `aitherctl serve`): the status line, the decoding rate and the failure messages are
built here once, from the same JSON document (`RunResult.to_json()` in aitherctl/routing/router.py;
through the gateway, its `x-aither-report`). Plain functions: `run`'s fast path imports this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Not `typing.TYPE_CHECKING`: importing typing costs `run` through serve a few ms (mypy reads
# any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Tokens per second is only reported over a real decoding window: at least this many tokens
# after the first, spread over at least this long. A stream that arrives in one burst (a proxy
# that buffers, a cached answer) has no measurable rate.
RATE_MIN_TOKENS = 8
RATE_MIN_WINDOW_S = 0.2

# The kinds of failure a report names (`error.kind`), one per exit code of `run`.
FAILED = "backend_failed"  # exit 9
BUDGET = "budget"  # exit 10


def tokens_per_s(
    tokens_out: int | None, first_s: float | None, last_s: float | None
) -> float | None:
    """(tokens_out - 1) / (last - first) when at least RATE_MIN_TOKENS tokens came after the
    first over at least RATE_MIN_WINDOW_S; otherwise None."""
    if tokens_out is None or first_s is None or last_s is None:
        return None
    window = last_s - first_s
    if tokens_out - 1 < RATE_MIN_TOKENS or window < RATE_MIN_WINDOW_S:
        return None
    return (tokens_out - 1) / window


def status_line(data: Mapping[str, Any]) -> str:
    """`effort 5 · all · assistant (smollm2) · ttft 0.12s · 104 tok/s · $0.0000`, then whether
    the answer was cut at its output limit, how many candidates were skipped or failed, the load
    wait and the gateway when there were."""
    effort = data.get("effort") or {}
    score = effort.get("score") if isinstance(effort, dict) else None
    parts = [f"effort {score}" if score else "effort -", str(data.get("tier") or "-")]
    if data.get("backend"):
        parts.append(f"{data['backend']} ({data.get('model')})")
    ttft = data.get("ttft_s")
    parts.append(f"ttft {ttft:.2f}s" if ttft is not None else "ttft N/A")
    rate = data.get("tokens_per_s")
    parts.append(f"{rate:.0f} tok/s" if rate is not None else "tok/s N/A")
    parts.append(f"${float(data.get('cost_usd') or 0.0):.4f}")
    if data.get("finish_reason") == "length":  # the answer stopped mid-way: say why
        limit = data.get("max_tokens")
        parts.append(f"stopped at max_tokens {limit}" if limit else "stopped at the output limit")
    skipped = sum(1 for a in data.get("attempts") or () if a.get("outcome") != "ok")
    if skipped:
        parts.append(f"{skipped} skipped/failed before")
    if data.get("load_wait_s"):
        parts.append(f"loaded in {data['load_wait_s']:.1f}s")
    if data.get("via"):
        parts.append(f"via {data['via']}")
    return " · ".join(parts)


def fold(line: str, width: int | None, separator: str = " · ") -> str:
    """`line` broken between its parts (at `separator`) to fit `width`: each line but the last
    ends in the separator's dot, the next starts indented. Unchanged without a width (a pipe,
    a file: one line for scripts) or when it fits."""
    if width is None or len(line) <= width:
        return line
    parts = line.split(separator)
    lines, current = [], parts[0]
    for part in parts[1:]:
        if len(current) + len(separator) + len(part) <= width:
            current += separator + part
        else:
            lines.append(current + separator.rstrip())
            current = "  " + part
    lines.append(current)
    return "\n".join(lines)


def attempt_lines(attempts: Iterable[tuple[str, str, str, str | None]]) -> str:
    """`  backend (model) outcome: reason`, one line per (backend, model, outcome, reason)."""
    return "\n".join(
        f"  {backend} ({model}) {outcome}" + (f": {reason}" if reason else "")
        for backend, model, outcome, reason in attempts
    )


def no_backend_message(tier: str, candidates: int) -> str:
    return f"no backend answered (tier {tier}, {candidates} candidate(s))"


def budget_message(tier: str, spent_usd: float, daily_usd: float) -> str:
    return (
        f"the daily budget forbids this request (tier {tier}): "
        f"${spent_usd:.4f} of ${daily_usd:g} spent"
    )


def partial_message(backend: str, model: str, reason: str) -> str:
    return (
        f"{backend} ({model}) failed after the answer had started: {reason}; "
        "the partial answer is all there is"
    )
