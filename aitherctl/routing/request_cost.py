"""The request-cost model of `run` and `serve`: an upper bound on the tokens a provider can bill
for one request, read from the body that goes on the wire.

Input: every message (system, history, the assistant's tool calls, the tools' results), the tool
definitions and any response schema, counted as their UTF-8 bytes (a byte-level BPE tokenizer
never emits more tokens than bytes) plus a fixed allowance per message and per request for the
chat template's special tokens, and a fixed bound per image. Output: the output limit actually
sent (`max_tokens` or `max_completion_tokens`) times the number of answers asked for (`n`,
`best_of`, one per prompt of a legacy completion). A request without an output limit has no
upper bound, which is why the gateway sends `routing.max_tokens` to a priced endpoint when the
client set none.

Pure: no I/O; the gateway and the router call it with the body they send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aitherctl.routing.cost import Price

# Chat templates wrap each message in a few special tokens; 16 covers the templates of the
# OpenAI, Llama, Qwen, Gemma and DeepSeek families with room to spare.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_PER_REQUEST = 16
# A template that offers tools adds its own instructions once (Qwen's and Hermes' "# Tools ...
# <tools></tools>" preamble, Llama 3.1's "Environment: ipython" block, OpenAI's `namespace
# functions`: each under 200 tokens) and a few tokens around each definition.
TOOLS_PREAMBLE_TOKENS = 512
TEMPLATE_TOKENS_PER_TOOL = 32
# The most any published scheme bills for one image: OpenAI's gpt-4o-mini counts 2,833 tokens +
# 5,667 per 512-px tile, at most 8 tiles after its resize (2,048 px box, short side 768 px):
# 48,169. Others are far below it (gpt-4o 1,445; Claude about 1,600; Qwen2.5-VL at its default
# `max_pixels` 16,384).
IMAGE_TOKENS_MAX = 48_169
TEMPLATE_TOKENS_PER_PART = 4
_IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})
# Top-level fields of a chat request that a provider renders into the prompt.
_PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice", "function_call")


@dataclass(frozen=True, slots=True)
class RequestBound:
    """At most this many tokens billed in, and out."""

    input_tokens: int
    output_tokens: int

    def cost_usd(self, price: Price | None) -> float:
        """The worst case at `price` (0 for a free backend)."""
        if price is None or price.is_free:
            return 0.0
        return price.cost_usd(self.input_tokens, self.output_tokens)


def output_limit(body: Mapping[str, Any]) -> int | None:
    """The output limit the client set (`max_completion_tokens` or `max_tokens`), or None."""
    limits = [
        value
        for value in (
            body.get("max_completion_tokens"),
            body.get("max_tokens"),
            body.get("max_output_tokens"),  # the Responses API's
        )
        if isinstance(value, int) and not isinstance(value, bool) and value > 0
    ]
    return max(limits) if limits else None


def request_bound(route: str, body: Mapping[str, Any], limit: int | None = None) -> RequestBound:
    """The bound for `body` sent to `route` (`/v1/chat/completions`, `/v1/completions`,
    `/v1/embeddings`, `/v1/responses`, `/v1/messages`, `/v1/messages/count_tokens`). `limit`:
    the output limit sent; None reads it from the body (a request without one is bounded by
    nothing: its output bound is then 0 and the caller must send one)."""
    if limit is None:
        limit = output_limit(body) or 0
    if route == "/v1/embeddings":
        return RequestBound(_prompt_tokens(body.get("input")) + TEMPLATE_TOKENS_PER_REQUEST, 0)
    if route in ("/v1/rerank", "/v1/score"):
        return RequestBound(_pairs_tokens(body), 0)
    if route in ("/v1/responses", "/v1/messages", "/v1/messages/count_tokens"):
        output = 0 if route == "/v1/messages/count_tokens" else limit
        return RequestBound(_items_bound(route, body), output)
    answers = max(_count(body.get("n")), _count(body.get("best_of")))
    if route == "/v1/completions":
        prompt = body.get("prompt")
        prompts = len(prompt) if isinstance(prompt, list) and _is_prompt_list(prompt) else 1
        tokens = (
            _prompt_tokens(prompt)
            + _bytes(body.get("suffix"))
            + TEMPLATE_TOKENS_PER_REQUEST
            + TEMPLATE_TOKENS_PER_MESSAGE * prompts
        )
        return RequestBound(tokens, limit * answers * prompts)
    tokens = TEMPLATE_TOKENS_PER_REQUEST
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        tokens += TEMPLATE_TOKENS_PER_MESSAGE + _message_tokens(message)
    for field in _PROMPT_FIELDS:
        tokens += _bytes(body.get(field))
    tools = body.get("tools")
    functions = body.get("functions")
    definitions = (len(tools) if isinstance(tools, list) else 0) + (
        len(functions) if isinstance(functions, list) else 0
    )
    if definitions:
        tokens += TOOLS_PREAMBLE_TOKENS + TEMPLATE_TOKENS_PER_TOOL * definitions
    # Predicted outputs: rejected prediction tokens are billed as output.
    output = limit * answers + _bytes(body.get("prediction"))
    return RequestBound(tokens, output)


# Top-level fields of a Responses or Messages request rendered into the prompt besides its
# input items (`text` holds the Responses API's output schema).
_ITEM_PROMPT_FIELDS = ("instructions", "system", "tools", "tool_choice", "text")


def _pairs_tokens(body: Mapping[str, Any]) -> int:
    """Rerank (`query` with each of `documents`) and score (`text_1` with `text_2`, one to many
    or pair by pair): each pair is read as one prompt, so the query counts once per document."""
    if "query" in body:
        documents = body.get("documents")
        documents = documents if isinstance(documents, list) else [documents]
        query = _bytes(body.get("query"))
        return TEMPLATE_TOKENS_PER_REQUEST + sum(
            query + _bytes(document) + TEMPLATE_TOKENS_PER_MESSAGE for document in documents
        )
    first, second = body.get("text_1"), body.get("text_2")
    pairs = max(
        len(first) if isinstance(first, list) else 1,
        len(second) if isinstance(second, list) else 1,
    )
    return TEMPLATE_TOKENS_PER_REQUEST + pairs * (
        _bytes(first) + _bytes(second) + TEMPLATE_TOKENS_PER_MESSAGE
    )


def _items_bound(route: str, body: Mapping[str, Any]) -> int:
    """The input bound of a Responses (`input`: a string or a list of items) or Messages
    (`messages`, content blocks) body: every item as a chat message, plus the instructions,
    the tool definitions and the output schema. (A Messages request's extended thinking budget
    lies within its `max_tokens`.)"""
    tokens = TEMPLATE_TOKENS_PER_REQUEST
    items = body.get("input") if route == "/v1/responses" else body.get("messages")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items if isinstance(items, list) else []:
        tokens += TEMPLATE_TOKENS_PER_MESSAGE + _message_tokens(item)
    for field in _ITEM_PROMPT_FIELDS:
        value = body.get(field)
        if field == "system" and isinstance(value, list):  # text blocks, maybe images
            tokens += TEMPLATE_TOKENS_PER_MESSAGE + sum(_part_tokens(part) for part in value)
        else:
            tokens += _bytes(value)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        tokens += TOOLS_PREAMBLE_TOKENS + TEMPLATE_TOKENS_PER_TOOL * len(tools)
    return tokens


def _message_tokens(message: Any) -> int:
    """Every field of a message (role, name, content, tool calls, tool call id, ...), images
    at their bound and everything else at its bytes."""
    if not isinstance(message, Mapping):
        return _bytes(message)
    tokens = 0
    for key, value in message.items():
        if key == "content" and isinstance(value, list):
            tokens += sum(_part_tokens(part) for part in value)
        else:
            tokens += _bytes(value)
    return tokens


def _part_tokens(part: Any) -> int:
    if isinstance(part, Mapping) and part.get("type") in _IMAGE_PART_TYPES:
        return IMAGE_TOKENS_MAX + TEMPLATE_TOKENS_PER_PART
    if isinstance(part, Mapping) and isinstance(part.get("content"), list):
        # A block holding blocks (a Messages `tool_result` with images): each at its bound.
        rest = _bytes({key: value for key, value in part.items() if key != "content"})
        return rest + TEMPLATE_TOKENS_PER_PART + sum(_part_tokens(p) for p in part["content"])
    return _bytes(part) + TEMPLATE_TOKENS_PER_PART


def _bytes(value: Any) -> int:
    """UTF-8 bytes of every key and value inside `value` (numbers as written)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, Mapping):
        return sum(_bytes(key) + _bytes(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(_bytes(item) for item in value)
    return len(str(value))


def _is_prompt_list(prompt: Any) -> bool:
    """Several prompts: a list of strings or a list of token lists (a flat list of numbers is
    one prompt given as tokens)."""
    return isinstance(prompt, list) and any(isinstance(item, str | list) for item in prompt)


def _prompt_tokens(value: Any) -> int:
    """A prompt or embedding input: text at its bytes, token arrays at their length."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, list):
        return sum(
            1 if isinstance(item, int) and not isinstance(item, bool) else _prompt_tokens(item)
            for item in value
        )
    return _bytes(value)


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 1:
        return value
    return 1
