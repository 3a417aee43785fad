"""`aitherctl run` through a running `aitherctl serve`: one streamed request to the gateway, so
on-demand services start, requests queue with everyone else's and the gateway writes the ledger
row. A plain socket to loopback (`adapters/loopback_http.py`): nothing heavier is imported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aitherctl.adapters.loopback_http import LoopbackError, post
from aitherctl.errors import AitherError, BackendFailedError, BudgetExceededError, NotFoundError

CLIENT_NAME = "aitherctl-run"


class GatewayAnswer:
    """What `run` prints about an answer the gateway gave. (A plain class: `dataclasses`
    imports `inspect`, 20 ms of this path's start-up.)"""

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
        self.extra: dict[str, Any] = {}

    def status_line(self, gateway: str) -> str:
        """`effort 5 · all · a (smollm2) · ttft 0.12s · $0.0000 · via http://...`"""
        parts = [f"effort {self.effort}" if self.effort else "effort -", self.tier or "-"]
        if self.backend:
            parts.append(f"{self.backend} ({self.model})")
        parts.append(f"ttft {self.ttft_s:.2f}s" if self.ttft_s is not None else "ttft N/A")
        if self.load_wait_s:
            parts.append(f"loaded in {self.load_wait_s:.1f}s")
        parts.append(f"${self.cost_usd:.4f}")
        parts.append(f"via {gateway}")
        return " · ".join(parts)

    def to_json(self, gateway: str) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "outcome": self.outcome,
            "via": gateway,
            "effort": {"score": self.effort},
            "tier": self.tier,
            "backend": self.backend,
            "model": self.model,
            "tokens": {"in": self.tokens_in, "out": self.tokens_out},
            "ttft_s": _round(self.ttft_s),
            "total_s": _round(self.total_s),
            "queue_wait_s": self.queue_wait_s,
            "load_wait_s": self.load_wait_s,
            "cost_usd": round(self.cost_usd, 6),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


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
    clock: Callable[[], float] = time.perf_counter,
) -> GatewayAnswer:
    started = clock()
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    body: dict[str, Any] = {
        "model": backend or tier or "auto",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "priority": "interactive",
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
               "x-aither-client": CLIENT_NAME}
    if effort is not None:
        headers["x-aither-effort"] = str(effort)
    if local_only:
        headers["x-aither-local-only"] = "1"
    if max_tokens is None:  # the serving profile's routing.max_tokens, as `run --direct` sends
        headers["x-aither-max-tokens"] = "profile"
    result = GatewayAnswer()
    try:
        response = post(url, "/v1/chat/completions", json.dumps(body).encode(), headers, 900.0)
    except LoopbackError as exc:
        raise AitherError(f"the gateway at {url} did not answer: {exc}") from None
    try:
        if response.status != 200:
            _raise_for(response.status, response.read())
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
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if "error" in chunk:
                message = chunk["error"].get("message", str(chunk["error"]))
                result.answer = "".join(pieces)
                result.outcome = "partial" if pieces else "failed"
                raise BackendFailedError(message)
            result.model = chunk.get("model", result.model)
            if isinstance(chunk.get("usage"), dict):
                result.tokens_in = chunk["usage"].get("prompt_tokens")
                result.tokens_out = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices") or []:
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


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _raise_for(status: int, body: bytes) -> None:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:300].decode("utf-8", "replace") or f"HTTP {status}"
    if status == 404:
        raise NotFoundError(message)
    if status == 402:
        raise BudgetExceededError(message)
    raise BackendFailedError(f"the gateway answered {status}: {message}")
