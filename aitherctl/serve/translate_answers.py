"""Chat completions answers as OpenAI's Responses API and Anthropic's Messages API: a whole
chat completion as a Response or a Message, a chat completions SSE stream as the API's own events
(`response.created` ... `response.completed`; `message_start` ... `message_stop`), as the official
`openai` and `anthropic` clients and their stream helpers read them. The requests' side is
`aitherctl.serve.translate`. Pure: no I/O.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aitherctl.serve.translate import MESSAGES, RESPONSES


class BadAnswer(Exception):
    """A chat answer that cannot be read as one (not JSON, no choices)."""


# ---- whole answers ------------------------------------------------------------------------------


def from_chat(route: str, data: bytes, request: dict[str, Any]) -> bytes:
    """A whole chat completion as the route's answer."""
    try:
        chat = json.loads(data)
        choice = chat["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BadAnswer("the backend's chat answer has no choices") from exc
    text = message.get("content") or ""
    thought = reasoning_of(message)
    calls = [
        (c.get("id") or _id("call"), c["function"].get("name"), c["function"].get("arguments"))
        for c in message.get("tool_calls") or []
        if isinstance(c, dict) and isinstance(c.get("function"), dict)
    ]
    usage = chat.get("usage") if isinstance(chat.get("usage"), dict) else {}
    tokens_in, tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    finish = choice.get("finish_reason")
    model = request.get("model") or chat.get("model")
    if route == RESPONSES:
        output: list[dict[str, Any]] = []
        if thought:
            output.append(_reasoning_item(_id("rs"), thought, "completed"))
        if text or not calls:
            output.append(_message_item(_id("msg"), text, "completed"))
        output.extend(
            _call_item(_id("fc"), call_id, name, arguments or "", "completed")
            for call_id, name, arguments in calls
        )
        answer = _response(_id("resp"), request, model, "completed", output)
        _finish_response(answer, finish, tokens_in, tokens_out)
        return json.dumps(answer).encode()
    content: list[dict[str, Any]] = []
    if thought:
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    if text:
        content.append({"type": "text", "text": text})
    for call_id, name, arguments in calls:
        try:
            tool_input = json.loads(arguments or "{}")
        except ValueError as exc:
            raise BadAnswer(
                f"the backend's call of {name!r} has arguments that are not JSON"
            ) from exc
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input})
    message_out = _message_head(_id("msg"), model)
    message_out.update(
        content=content,
        stop_reason=_stop_reason(finish, bool(calls)),
        usage={"input_tokens": tokens_in, "output_tokens": tokens_out},
    )
    return json.dumps(message_out).encode()


def reasoning_of(part: dict[str, Any]) -> str:
    """The reasoning text of a chat message or delta: llama.cpp's and vLLM's
    `reasoning_content` (vLLM's newer name: `reasoning`), else ""."""
    for name in ("reasoning_content", "reasoning"):
        value = part.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    """A Responses `reasoning` output item holding the engine's reasoning as `reasoning_text`
    (no summary: the engine wrote none)."""
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if status else [],
        "status": status or "in_progress",
    }


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _stop_reason(finish: Any, called: bool) -> str:
    if finish == "length":
        return "max_tokens"
    if finish == "tool_calls" or (called and finish in (None, "stop")):
        return "tool_use"
    if finish == "content_filter":
        return "refusal"
    return "end_turn"


def _message_head(message_id: str, model: Any) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status else []
    return {
        "type": "message",
        "id": item_id,
        "status": status or "in_progress",
        "role": "assistant",
        "content": content,
    }


def _call_item(
    item_id: str, call_id: Any, name: Any, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _response(
    response_id: str, request: dict[str, Any], model: Any, status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "text": request.get("text") or {"format": {"type": "text"}},
        "metadata": {},
        "usage": None,
    }


def _finish_response(answer: dict[str, Any], finish: Any, tokens_in: int, tokens_out: int) -> None:
    if finish == "length":
        answer["status"] = "incomplete"
        answer["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish == "content_filter":
        answer["status"] = "incomplete"
        answer["incomplete_details"] = {"reason": "content_filter"}
    else:
        answer["status"] = "completed"
    answer["usage"] = {
        "input_tokens": tokens_in,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": tokens_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tokens_in + tokens_out,
    }


# ---- streams ------------------------------------------------------------------------------------


class ChatStreamTranslator:
    """Reads a chat completions SSE stream (`chat.completion.chunk` events, the usage chunk,
    `data: [DONE]`) and writes the route's own event stream. The dispatcher's splitter
    interface: `watch_done`, `feed`, `flush`, `usage` (chat's field names), `done`, `buffer`."""

    def __init__(self, route: str, request: dict[str, Any]) -> None:
        self.route = route
        self.request = request
        self.buffer = b""  # nothing the client is owed is ever held back once `done`
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._pending = b""
        self._started = False
        self._finish: Any = None
        self._text = ""  # the open (or last) text block's
        self._text_open = False
        self._texts: list[tuple[int, str, str]] = []  # closed text blocks: index, item id, text
        # chat's tool-call index -> [output index / block index, id, name, arguments]
        self._calls: dict[int, list[Any]] = {}
        self._next_index = 0
        self._text_index = 0
        # The reasoning (thinking) block or item: open, its index, id and text; closed ones.
        self._thought_open = False
        self._thought = ""
        self._thought_index = 0
        self._thought_id = ""
        self._thoughts: list[tuple[int, str, str]] = []
        self._sequence = 0
        self._id = _id("msg" if route == MESSAGES else "resp")
        self._item_id = ""
        self._model = request.get("model")

    def watch_done(self, chunk: bytes) -> None:
        del chunk  # `feed` reads the events whole

    def preamble(self) -> bytes:
        """The events that open the answer and depend on the request alone (Messages'
        `message_start`; Responses' `response.created` and `response.in_progress`), for the
        dispatcher to send with the head while the backend computes its first token (as the
        providers' own APIs send them at once); b"" once they were sent."""
        if self._started:
            return b""
        self._started = True
        return self._start()

    def feed(self, chunk: bytes) -> bytes:
        data = (self._pending + chunk).replace(b"\r\n", b"\n")
        head, sep, self._pending = data.rpartition(b"\n\n")
        if not sep:
            self._pending = data
            return b""
        out = [self._event(event) for event in head.split(b"\n\n")]
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._event(rest) if rest.strip() else b""

    def _event(self, event: bytes) -> bytes:
        if self.done:
            return b""
        data = b"".join(
            line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if not data:
            return b""
        if data == b"[DONE]":
            return self._end()
        try:
            chunk = json.loads(data)
        except ValueError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if isinstance(chunk.get("error"), dict):
            self.done = True
            return self._error(chunk["error"])
        out = [] if self._started else [self._start()]
        self._started = True
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            thought = reasoning_of(delta)
            if thought:
                out.append(self._reasoning_delta(thought))
            if delta.get("content"):
                out.append(self._text_delta(delta["content"]))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out.append(self._call_delta(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def _emit(self, name: str, payload: dict[str, Any]) -> bytes:
        payload = {"type": name, **payload}
        if self.route == RESPONSES:
            payload["sequence_number"] = self._sequence
            self._sequence += 1
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()

    def _error(self, error: dict[str, Any]) -> bytes:
        message = str(error.get("message") or "the backend failed")
        if self.route == MESSAGES:
            return self._emit("error", {"error": {"type": "api_error", "message": message}})
        return self._emit("error", {"code": error.get("code"), "message": message, "param": None})

    # -- the API's events ----------------------------------------------------------------------

    def _start(self) -> bytes:
        if self.route == MESSAGES:
            return self._emit("message_start", {"message": _message_head(self._id, self._model)})
        response = _response(self._id, self.request, self._model, "in_progress", [])
        return self._emit("response.created", {"response": response}) + self._emit(
            "response.in_progress", {"response": response}
        )

    def _open_text(self) -> bytes:
        self._text_open = True
        self._text = ""
        self._item_id = _id("msg")
        self._text_index = self._next_index
        self._next_index += 1
        if self.route == MESSAGES:
            return self._emit(
                "content_block_start",
                {"index": self._text_index, "content_block": {"type": "text", "text": ""}},
            )
        item = _message_item(self._item_id, "", "")
        part = {"type": "output_text", "text": "", "annotations": []}
        return self._emit(
            "response.output_item.added", {"output_index": self._text_index, "item": item}
        ) + self._emit(
            "response.content_part.added",
            {
                "item_id": self._item_id,
                "output_index": self._text_index,
                "content_index": 0,
                "part": part,
            },
        )

    def _close_text(self) -> bytes:
        self._text_open = False
        self._texts.append((self._text_index, self._item_id, self._text))
        if self.route == MESSAGES:
            return self._emit("content_block_stop", {"index": self._text_index})
        part = {"type": "output_text", "text": self._text, "annotations": []}
        where = {"item_id": self._item_id, "output_index": self._text_index, "content_index": 0}
        return (
            self._emit("response.output_text.done", {**where, "text": self._text, "logprobs": []})
            + self._emit("response.content_part.done", {**where, "part": part})
            + self._emit(
                "response.output_item.done",
                {
                    "output_index": self._text_index,
                    "item": _message_item(self._item_id, self._text, "completed"),
                },
            )
        )

    def _reasoning_delta(self, text: str) -> bytes:
        """A piece of the engine's reasoning: a Messages `thinking` block (`thinking_delta`), a
        Responses `reasoning` item (`response.reasoning_text.delta`)."""
        out = b""
        if not self._thought_open:
            if self._text_open:
                out += self._close_text()
            self._thought_open = True
            self._thought = ""
            self._thought_id = _id("rs")
            self._thought_index = self._next_index
            self._next_index += 1
            if self.route == MESSAGES:
                block = {"type": "thinking", "thinking": "", "signature": ""}
                out += self._emit(
                    "content_block_start", {"index": self._thought_index, "content_block": block}
                )
            else:
                item = _reasoning_item(self._thought_id, "", "")
                out += self._emit(
                    "response.output_item.added",
                    {"output_index": self._thought_index, "item": item},
                )
        self._thought += text
        if self.route == MESSAGES:
            delta = {"type": "thinking_delta", "thinking": text}
            return out + self._emit(
                "content_block_delta", {"index": self._thought_index, "delta": delta}
            )
        return out + self._emit(
            "response.reasoning_text.delta",
            {
                "item_id": self._thought_id,
                "output_index": self._thought_index,
                "content_index": 0,
                "delta": text,
            },
        )

    def _close_reasoning(self) -> bytes:
        if not self._thought_open:
            return b""
        self._thought_open = False
        self._thoughts.append((self._thought_index, self._thought_id, self._thought))
        if self.route == MESSAGES:
            return self._emit("content_block_stop", {"index": self._thought_index})
        where = {"item_id": self._thought_id, "output_index": self._thought_index}
        return self._emit(
            "response.reasoning_text.done", {**where, "content_index": 0, "text": self._thought}
        ) + self._emit(
            "response.output_item.done",
            {
                "output_index": self._thought_index,
                "item": _reasoning_item(self._thought_id, self._thought, "completed"),
            },
        )

    def _text_delta(self, text: str) -> bytes:
        out = self._close_reasoning()
        out += b"" if self._text_open else self._open_text()
        self._text += text
        if self.route == MESSAGES:
            return out + self._emit(
                "content_block_delta",
                {"index": self._text_index, "delta": {"type": "text_delta", "text": text}},
            )
        return out + self._emit(
            "response.output_text.delta",
            {
                "item_id": self._item_id,
                "output_index": self._text_index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        number = call.get("index", 0)
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        if number not in self._calls:
            out += self._close_reasoning()
            if self._text_open:
                out += self._close_text()
            for other in self._calls.values():
                out += self._close_call(other)
            index = self._next_index
            self._next_index += 1
            entry = [index, call.get("id") or _id("call"), function.get("name") or "", "", False]
            self._calls[number] = entry
            if self.route == MESSAGES:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": entry[1],
                    "name": entry[2],
                    "input": {},
                }
                out += self._emit("content_block_start", {"index": index, "content_block": block})
            else:
                item = _call_item(self._fc_id(entry), entry[1], entry[2], "", "in_progress")
                out += self._emit(
                    "response.output_item.added", {"output_index": index, "item": item}
                )
        entry = self._calls[number]
        if not arguments:
            return out
        entry[3] += arguments
        if self.route == MESSAGES:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            return out + self._emit("content_block_delta", {"index": entry[0], "delta": delta})
        return out + self._emit(
            "response.function_call_arguments.delta",
            {"item_id": self._fc_id(entry), "output_index": entry[0], "delta": arguments},
        )

    def _fc_id(self, entry: list[Any]) -> str:
        return f"fc_{self._id[5:]}_{entry[0]}"

    def _close_call(self, entry: list[Any]) -> bytes:
        if entry[4]:
            return b""
        entry[4] = True
        if self.route == MESSAGES:
            return self._emit("content_block_stop", {"index": entry[0]})
        item = _call_item(self._fc_id(entry), entry[1], entry[2], entry[3], "completed")
        return self._emit(
            "response.function_call_arguments.done",
            {"item_id": self._fc_id(entry), "output_index": entry[0], "arguments": entry[3]},
        ) + self._emit("response.output_item.done", {"output_index": entry[0], "item": item})

    def _end(self) -> bytes:
        out = b"" if self._started else self._start()
        self._started = True
        out += self._close_reasoning()
        if not self._text_open and not self._texts and not self._calls and self.route == RESPONSES:
            out += self._open_text()  # an empty answer is still one message item
        if self._text_open:
            out += self._close_text()
        for entry in self._calls.values():
            out += self._close_call(entry)
        usage = self.usage or {}
        tokens_in = int(usage.get("prompt_tokens") or 0)
        tokens_out = int(usage.get("completion_tokens") or 0)
        self.done = True
        if self.route == MESSAGES:
            delta = {
                "stop_reason": _stop_reason(self._finish, bool(self._calls)),
                "stop_sequence": None,
            }
            return (
                out
                + self._emit(
                    "message_delta",
                    {
                        "delta": delta,
                        "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
                    },
                )
                + self._emit("message_stop", {})
            )
        output: list[dict[str, Any] | None] = [None] * self._next_index
        for index, item_id, text in self._thoughts:
            output[index] = _reasoning_item(item_id, text, "completed")
        for index, item_id, text in self._texts:
            output[index] = _message_item(item_id, text, "completed")
        for entry in self._calls.values():
            output[entry[0]] = _call_item(
                self._fc_id(entry), entry[1], entry[2], entry[3], "completed"
            )
        answer = _response(
            self._id, self.request, self._model, "completed", [o for o in output if o is not None]
        )
        _finish_response(answer, self._finish, tokens_in, tokens_out)
        name = "response.completed" if answer["status"] == "completed" else "response.incomplete"
        return out + self._emit(name, {"response": answer})
