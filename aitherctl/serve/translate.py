"""OpenAI's Responses API and Anthropic's Messages API for a backend that speaks only chat
completions (a `generic` service, an OpenAI-compatible or cloud endpoint): the request becomes a
chat completions body, the answer (whole, or its SSE stream) becomes the API's own answer.

The requests here, the answers and streams in `translate_answers`. Pure: no I/O. A field that
has no faithful chat completions equivalent is refused (`Untranslatable`, a 400 naming the
field), never dropped. What is left out on purpose, because
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
from typing import Any

RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"


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


# ---- requests ----------------------------------------------------------------------------------

# Fields read into the chat body, per API; any other field is refused by name.
_RESPONSES_FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
    "max_output_tokens", "temperature", "top_p", "stream", "text", "reasoning", "truncation",
    "include", "priority",
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
    for message in messages:
        if _thought_only(message):  # reasoning with no answer after it
            message["content"] = ""
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
            elif name == "summary" and setting in (None, "auto"):
                # `auto`: a summary when the model gives one; chat completions gives none.
                continue
            elif setting is not None:
                raise Untranslatable(f"reasoning.{name}", "only `auto` or none")
    for index, what in enumerate(body.get("include") or []):
        # A translated answer has no reasoning items: including their encrypted content adds
        # nothing (what Codex CLI asks). Any other output (logprobs, hosted tools' results) is
        # refused.
        if what != "reasoning.encrypted_content":
            raise Untranslatable(f"include[{index}]", f"`{what}`")
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
        last = messages[-1] if messages else None
        if role == "assistant" and last is not None and _thought_only(last):
            last["content"] = content  # the reasoning before this answer is its turn's
            return
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    elif kind == "reasoning":
        # A reasoning item this gateway gave back (an engine's `reasoning_content`) comes back
        # with the conversation's next turn: it is the assistant turn's `reasoning_content`.
        text = "".join(
            str(part.get("text", ""))
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "reasoning_text"
        )
        if not text:
            raise Untranslatable(where, "a reasoning item without its text (encrypted only)")
        messages.append({"role": "assistant", "content": None, "reasoning_content": text})
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


def _thought_only(message: dict[str, Any]) -> bool:
    """An assistant turn that so far holds only reasoning (a Responses reasoning item)."""
    return (
        message.get("role") == "assistant"
        and "reasoning_content" in message
        and message.get("content") is None
        and not message.get("tool_calls")
    )


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
        if name == "verbosity":
            if setting is not None:
                out["verbosity"] = setting  # chat completions' own field of the same meaning
            continue
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
    thoughts: list[str] = []
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
        elif kind == "thinking" and role == "assistant":
            # A thinking block this gateway gave back (an engine's `reasoning_content`).
            thoughts.append(str(block.get("thinking", "")))
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
        if any(thoughts):
            out["reasoning_content"] = "".join(thoughts)
            if not text and not calls:
                out["content"] = ""
        if text or calls or any(thoughts):
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
