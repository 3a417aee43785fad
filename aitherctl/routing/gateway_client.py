"""`aitherctl run` through a running `aitherctl serve`: one streamed request to the gateway, so
on-demand services start, requests queue with everyone else's and the gateway writes the ledger
row. A plain socket to loopback (`loopback_http.py`): nothing heavier is imported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aitherctl.errors import (
    AitherError,
    BackendFailedError,
    BudgetExceededError,
    NotFoundError,
    UsageError,
)
from aitherctl.loopback_http import LoopbackError, post
from aitherctl.routing.run_report import BUDGET, status_line, tokens_per_s

# Not `typing.TYPE_CHECKING`: importing typing costs `run` through serve a few ms (mypy reads
# any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

REPORT_HEADER = "x-aither-report"  # as aitherctl/serve/app.py reads it

CLIENT_NAME = "aitherctl-run"


class GatewayAnswer:
    """What `run` prints about an answer the gateway gave: the gateway's report (the document
    `run --direct --json` prints) with the times this client measured itself. (A plain class:
    `dataclasses` imports `inspect`, 20 ms of this path's start-up.)"""

    def __init__(self) -> None:
        self.answer = ""
        self.backend: str | None = None
        self.tier: str | None = None
        self.effort: int | None = None
        self.model: str | None = None
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.ttft_s: float | None = None
        self.last_token_s: float | None = None
        self.total_s = 0.0
        self.cost_usd = 0.0
        self.queue_wait_s: float | None = None
        self.load_wait_s: float | None = None
        self.outcome = "ok"
        self.finish_reason: str | None = None  # from the stream, as `run --direct` reads it
        self.extra: dict[str, Any] = {}
        self.report: dict[str, Any] | None = None  # `x-aither-report`, without its `error`

    def status_line(self, gateway: str) -> str:
        """`effort 5 · all · a (smollm2) · ttft 0.12s · 104 tok/s · $0.0000 · via http://...`"""
        return status_line(self.to_json(gateway))

    def to_json(self, gateway: str) -> dict[str, Any]:
        """The keys and order of `run --direct --json` (`RunResult.to_json()`)."""
        report = self.report or {}
        effort = report.get("effort") or {"score": self.effort, "reasons": []}
        return {
            "answer": self.answer,
            "outcome": report.get("outcome", self.outcome),
            "profile": report.get("profile"),
            "effort": effort,
            "tier": report.get("tier", self.tier),
            "backend": report.get("backend", self.backend),
            "model": report.get("model", self.model),
            "attempts": report.get("attempts", []),
            "tokens": {
                "in": _first(self.tokens_in, (report.get("tokens") or {}).get("in")),
                "out": _first(self.tokens_out, (report.get("tokens") or {}).get("out")),
            },
            "finish_reason": self.finish_reason,
            "max_tokens": report.get("max_tokens"),
            "ttft_s": _round(self.ttft_s),
            "total_s": _round(self.total_s),
            "tokens_per_s": _round(
                tokens_per_s(self.tokens_out, self.ttft_s, self.last_token_s), 1
            ),
            "cost_usd": round(float(report.get("cost_usd", self.cost_usd)), 6),
            "budget": report.get("budget"),
            "warning": report.get("warning"),
            "via": gateway,
            "queue_wait_s": _first(report.get("queue_wait_s"), self.queue_wait_s),
            "load_wait_s": _first(report.get("load_wait_s"), self.load_wait_s),
        }


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def run_via_gateway(
    url: str,
    prompt: str,
    on_text: Callable[[str], None],
    *,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    effort: int | None = None,
    tier: str | None = None,
    backend: str | None = None,
    local_only: bool = False,
    history: tuple[tuple[str, str], ...] = (),
    clock: Callable[[], float] = time.perf_counter,
) -> GatewayAnswer:
    """Send `run`'s request (`model: auto`, its options as `x-aither-*` headers, so the gateway
    chooses with the same Router.choose as `run --direct`) and stream the answer to `on_text`.
    Raises the error `run --direct` raises for the same failure, with the same message; its
    `result` is the answer so far (for --json)."""
    started = clock()
    messages = (
        ([{"role": "system", "content": system}] if system else [])
        + [{"role": role, "content": text} for role, text in history]
        + [{"role": "user", "content": prompt}]
    )
    body: dict[str, Any] = {
        "model": "auto",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "priority": "interactive",
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "x-aither-client": CLIENT_NAME,
        REPORT_HEADER: "1",
    }
    if effort is not None:
        headers["x-aither-effort"] = str(effort)
    if local_only:
        headers["x-aither-local-only"] = "1"
    if max_tokens is None:  # the serving profile's routing.max_tokens, as `run --direct` sends
        headers["x-aither-max-tokens"] = "profile"
    if tier is not None:
        headers["x-aither-tier"] = tier
    if backend is not None:
        headers["x-aither-backend"] = backend
    result = GatewayAnswer()
    try:
        response = post(url, "/v1/chat/completions", json.dumps(body).encode(), headers, 900.0)
    except LoopbackError as exc:
        raise AitherError(f"the gateway at {url} did not answer: {exc}") from None
    failure: dict[str, Any] | None = None
    try:
        if response.status != 200:
            payload = _error_payload(response.status, response.read())
            result.total_s = clock() - started
            _raise_for(response.status, payload, result)
        result.effort = effort
        for key, value in response.headers:
            if key.lower().startswith("x-aither-"):
                _apply_header(result, key.lower(), value)
        pieces: list[str] = []
        for line in response.lines():
            if line.startswith(b": x-aither-"):  # headers sent after a keep-alive began
                key, _, value = line[2:].decode().strip().partition(" ")
                _apply_header(result, key, value)
                continue
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue  # the report comes after it
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if "error" in chunk:
                failure = chunk
                continue
            result.model = chunk.get("model", result.model)
            if isinstance(chunk.get("usage"), dict):
                result.tokens_in = chunk["usage"].get("prompt_tokens")
                result.tokens_out = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices") or []:
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
                text = (choice.get("delta") or {}).get("content")
                if text:
                    now = clock() - started
                    if result.ttft_s is None:
                        result.ttft_s = now
                    result.last_token_s = now
                    pieces.append(text)
                    on_text(text)
        result.answer = "".join(pieces)
    except OSError as exc:
        raise BackendFailedError(f"the gateway at {url} broke off the answer: {exc}") from None
    finally:
        response.close()
    result.total_s = clock() - started
    price = result.extra.get("price")
    if price and result.tokens_in is not None and result.tokens_out is not None:
        price_in, _, price_out = price.partition("/")
        result.cost_usd = (
            result.tokens_in * float(price_in) + result.tokens_out * float(price_out)
        ) / 1e6
    if failure is not None or "report_error" in result.extra:
        # The report (read above, its `error` kept in `extra`) says what --direct would.
        result.outcome = "partial" if result.answer else "failed"
        _raise_for(200, failure or {"error": {"message": "the answer failed"}}, result)
    return result


def _apply_header(result: GatewayAnswer, key: str, value: str) -> None:
    if key == "x-aither-backend":
        result.backend = value
    elif key == "x-aither-tier":
        result.tier = value
    elif key == "x-aither-effort" and value.isdigit():
        result.effort = int(value)
    elif key == "x-aither-queue-wait":
        result.queue_wait_s = _float(value)
    elif key == "x-aither-load-wait":
        result.load_wait_s = _float(value)
    elif key == "x-aither-price":
        result.extra["price"] = value
    elif key == REPORT_HEADER:
        _take_report(result, value)


def _take_report(result: GatewayAnswer, text: str | dict[str, Any]) -> None:
    try:
        report = json.loads(text) if isinstance(text, str) else dict(text)
    except ValueError:
        return
    if isinstance(report, dict):
        error = report.pop("error", None)
        if error is not None:
            result.extra["report_error"] = error
        result.report = report


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_payload(status: int, body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        text = body[:300].decode("utf-8", "replace") or f"HTTP {status}"
        payload = {"error": {"message": text}}
    return payload


def _raise_for(status: int, payload: dict[str, Any], result: GatewayAnswer) -> None:
    """The error `run --direct` raises for the same failure: from the report's `error` when the
    gateway sent one, else from the status."""
    report = payload.get("aither_report")
    if isinstance(report, dict):
        _take_report(result, report)
    error = result.extra.pop("report_error", None)
    failure: AitherError
    if isinstance(error, dict) and error.get("message"):
        kind = BudgetExceededError if error.get("kind") == BUDGET else BackendFailedError
        failure = kind(str(error["message"]), detail=error.get("detail") or None)
    else:
        raw = payload.get("error")
        message = str(raw.get("message", raw)) if isinstance(raw, dict) else str(raw)
        if status == 404:
            failure = NotFoundError(message)
        elif status == 400:
            failure = UsageError(message)
        elif status == 402:
            failure = BudgetExceededError(message)
        else:
            failure = BackendFailedError(f"the gateway answered {status}: {message}")
    failure.result = result
    raise failure
