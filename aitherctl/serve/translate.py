"""OpenAI's Responses API and Anthropic's Messages API for a backend that speaks only chat
completions (a `generic` service, an OpenAI-compatible or cloud endpoint): the request becomes a
chat completions body, the answer (whole, or its SSE stream) becomes the API's own answer.

Pure: no I/O. A field that has no faithful chat completions equivalent is refused
(`Untranslatable`, a 400 naming the field), never dropped. What is left out on purpose, because
it does not change the answer: prompt-cache hints (`prompt_cache_key`, `cache_control`),
`store` (nothing is stored here; the answer cannot be fetched back by id either way),
`anthropic-version`, `safety_identifier` and the Responses `user`.

Shapes followed: the OpenAI API reference ("Create a model response", its streaming events
`response.created` ... `response.completed`) and Anthropic's ("Messages", "Streaming Messages":
`message_start`, `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`),
as the official `openai` and `anthropic` clients read them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
CHAT_UPSTREAM = "chat/completions"


class Untranslatable(Exception):
    """A request field with no chat completions equivalent: `field` names it."""

    def __init__(self, field: str, why: str = "") -> None:
        self.field = field
        self.message = (
            f"`{field}` cannot be translated to chat completions"
            + (f" ({why})" if why else "")
            + ", which is all this backend speaks; leave it out or choose a backend that "
            "serves this API itself"
        )
        super().__init__(self.message)


class BadAnswer(Exception):
    """A chat answer that cannot be read as one (not JSON, no choices)."""


# ---- requests ----------------------------------------------------------------------------------

# Fields read into the chat body, per API; any other field is refused by name.
_RESPONSES_FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
    "max_output_tokens", "temperature", "top_p", "stream", "text", "reasoning", "truncation",
    "priority",
    # hints that do not change the answer (see the module's docstring)
    "store", "prompt_cache_key", "safety_identifier", "user", "stream_options",
})  # fmt: skip
_MESSAGES_FIELDS = frozenset({
    "model", "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences",
    "stream", "tools", "tool_choice", "metadata", "thinking", "priority",
})  # fmt: skip


def to_chat(route: str, body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions body for a Responses or Messages body (without `model`'s
    backend name, which the dispatcher sets)."""
    return responses_to_chat(body) if route == RESPONSES else messages_to_chat(body)


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    for name in body:
        if name not in _RESPONSES_FIELDS:
            raise Untranslatable(name)
    chat: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise Untranslatable("instructions", "only text instructions")
        messages.append({"role": "system", "content": instructions})
    value = body.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _responses_item(item, f"input[{index}]", messages)
    else:
        raise Untranslatable("input", "it must be text or a list of items")
    chat["messages"] = messages
    if body.get("tools"):
        chat["tools"] = [_responses_tool(t, f"tools[{i}]") for i, t in enumerate(body["tools"])]
    if "tool_choice" in body:
        chat["tool_choice"] = _responses_tool_choice(body["tool_choice"])
    for name in ("parallel_tool_calls", "temperature", "top_p", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    text = body.get("text")
    if text is not None:
        chat.update(_responses_text(text))
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise Untranslatable("reasoning")
        for name, setting in reasoning.items():
            if name == "effort":
                if setting is not None:
                    chat["reasoning_effort"] = setting
            elif setting is not None:
                raise Untranslatable(f"reasoning.{name}")
    if body.get("truncation") not in (None, "disabled"):
        raise Untranslatable("truncation", "only `disabled`")
    return chat


def _responses_item(item: Any, where: str, messages: list[dict[str, Any]]) -> None:
    if not isinstance(item, dict):
        raise Untranslatable(where)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise Untranslatable(f"{where}.role")
        content = _responses_content(item.get("content"), f"{where}.content", role)
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    elif kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and not last.get("_closed"):
            last.setdefault("tool_calls", []).append(call)
            if last.get("content") == "":
                last["content"] = None
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            output = _responses_content(output, f"{where}.output", "tool")
            if not isinstance(output, str):
                raise Untranslatable(f"{where}.output", "only text tool output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
    else:
        raise Untranslatable(f"{where}.type", f"`{kind}` items")


def _responses_content(content: Any, where: str, role: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise Untranslatable(where)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str) and role == "user":
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_image":
            raise Untranslatable(f"{where}[{index}]", "an image by file id or outside a user turn")
        else:
            raise Untranslatable(f"{where}[{index}].type", f"`{kind}` parts")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _responses_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise Untranslatable(f"{where}.type", f"`{kind}` tools run at OpenAI")
    function: dict[str, Any] = {"name": tool.get("name")}
    for name in ("description", "parameters", "strict"):
        if tool.get(name) is not None:
            function[name] = tool[name]
    return {"type": "function", "function": function}


def _responses_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise Untranslatable("tool_choice")


def _responses_text(text: Any) -> dict[str, Any]:
    if not isinstance(text, dict):
        raise Untranslatable("text")
    out: dict[str, Any] = {}
    for name, setting in text.items():
        if name != "format":
            raise Untranslatable(f"text.{name}")
        kind = setting.get("type") if isinstance(setting, dict) else None
        if kind == "text":
            continue
        if kind == "json_object":
            out["response_format"] = {"type": "json_object"}
        elif kind == "json_schema":
            schema = {
                k: setting[k] for k in ("name", "schema", "strict", "description") if k in setting
            }
            out["response_format"] = {"type": "json_schema", "json_schema": schema}
        else:
            raise Untranslatable("text.format")
    return out


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    for name in body:
        if name not in _MESSAGES_FIELDS:
            raise Untranslatable(name)
    chat: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        texts = []
        for index, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise Untranslatable(f"system[{index}]", "only text blocks")
            texts.append(str(block.get("text", "")))
        messages.append({"role": "system", "content": "\n\n".join(texts)})
    elif system is not None:
        raise Untranslatable("system")
    for index, message in enumerate(body.get("messages") or []):
        _messages_message(message, f"messages[{index}]", messages)
    chat["messages"] = messages
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = [_messages_tool(t, f"tools[{i}]") for i, t in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        chat.update(_messages_tool_choice(body["tool_choice"]))
    metadata = body.get("metadata")
    if metadata:
        if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
            raise Untranslatable("metadata", "only `user_id`")
        if metadata.get("user_id"):
            chat["user"] = metadata["user_id"]
    thinking = body.get("thinking")
    if thinking is not None and not (
        isinstance(thinking, dict) and thinking.get("type") == "disabled"
    ):
        raise Untranslatable("thinking")
    return chat


def _messages_message(message: Any, where: str, messages: list[dict[str, Any]]) -> None:
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise Untranslatable(f"{where}.role")
    role = message["role"]
    content = message.get("content")
    if isinstance(content, str):
        messages.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise Untranslatable(f"{where}.content")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image" and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        elif kind == "tool_use" and role == "assistant":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
        elif kind == "tool_result" and role == "user":
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _tool_result_text(block, at),
                }
            )
        else:
            raise Untranslatable(f"{at}.type", f"`{kind}` blocks in a {role} turn")
    # Chat wants each tool's answer right after the assistant turn that called it.
    messages.extend(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        out: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            out["tool_calls"] = calls
        if text or calls:
            messages.append(out)
    elif parts:
        texts_only = all(p["type"] == "text" for p in parts)
        messages.append(
            {"role": "user", "content": "".join(p["text"] for p in parts) if texts_only else parts}
        )


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if isinstance(source, dict) and source.get("type") == "url":
        return str(source.get("url"))
    raise Untranslatable(f"{where}.source", "only base64 and url images")


def _tool_result_text(block: dict[str, Any], where: str) -> str:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise Untranslatable(f"{where}.content[{index}]", "only text tool results")
            pieces.append(str(part.get("text", "")))
        text = "".join(pieces)
    else:
        raise Untranslatable(f"{where}.content")
    # Chat has no error flag on a tool's answer: the text says it.
    return f"Error: {text}" if block.get("is_error") else text


def _messages_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise Untranslatable(f"{where}.type", f"`{kind}` tools run at Anthropic")
    function: dict[str, Any] = {
        "name": tool.get("name"),
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _messages_tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    mapped: Any
    if kind == "auto":
        mapped = "auto"
    elif kind == "any":
        mapped = "required"
    elif kind == "none":
        mapped = "none"
    elif kind == "tool":
        mapped = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise Untranslatable("tool_choice")
    out: dict[str, Any] = {"tool_choice": mapped}
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


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
        self._sequence = 0
        self._id = _id("msg" if route == MESSAGES else "resp")
        self._item_id = ""
        self._model = request.get("model")

    def watch_done(self, chunk: bytes) -> None:
        del chunk  # `feed` reads the events whole

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

    def _text_delta(self, text: str) -> bytes:
        out = b"" if self._text_open else self._open_text()
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
