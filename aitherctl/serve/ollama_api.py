"""Ollama's own API on `serve`, for clients that speak only Ollama: `POST /api/chat` and `POST
/api/generate` become chat completions for whichever backend the model names (any engine: all
of them speak chat completions), their answers Ollama's JSON and NDJSON stream; `GET /api/tags`,
`POST /api/show`, `GET /api/ps` and `GET /api/version` describe the profile's models.

Pure: no I/O. Field names and shapes after ollama/ollama docs/api.md and the official `ollama`
Python client's types: a request streams unless `"stream": false`; each streamed line is a JSON
object (`Content-Type: application/x-ndjson`) with `message.content` (chat) or `response`
(generate) and `done: false`; the last has `done: true`, `done_reason` (`stop`, `length`),
`prompt_eval_count` and `eval_count` (the tokens in and out) and the durations in nanoseconds;
a tool call is `message.tool_calls[].function` with `name` and `arguments` as an object; an
error is `{"error": "message"}`. Options are read into chat fields (`num_predict` is the output
limit); one with no chat completions equivalent is refused by name (400), never dropped.
`keep_alive` is a hint about Ollama's own memory and is not used: `serve`'s scheduler decides
what stays loaded. A request with nothing to answer (`/api/generate` without a prompt,
`/api/chat` without messages) is Ollama's way to load a model (`keep_alive: 0`: to unload it):
a load goes through the scheduler like any request (the service is started if it is not
running) and is answered as Ollama answers it (`done: true`, `done_reason: "load"`); an unload
is answered (`done_reason: "unload"`) without putting the service away, which `idle_after` and
the memory pools decide for every client at once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from aitherctl.serve.translate import Untranslatable
from aitherctl.serve.translate_answers import BadAnswer, ChatStreamTranslator

CHAT = "/api/chat"
GENERATE = "/api/generate"
ROUTES = (CHAT, GENERATE)
EMBED = "/api/embed"
EMBEDDINGS = "/api/embeddings"  # the older form: one `prompt`, one `embedding`
EMBED_ROUTES = (EMBED, EMBEDDINGS)
# The Ollama API version whose fields this follows (what `GET /api/version` answers: clients
# compare it against the version that introduced a feature).
API_VERSION = "0.12.0"

_CHAT_FIELDS = frozenset({
    "model", "messages", "tools", "format", "options", "stream", "keep_alive", "think",
    "priority",
})  # fmt: skip
_GENERATE_FIELDS = frozenset({
    "model", "prompt", "system", "images", "format", "options", "stream", "keep_alive", "think",
    "raw", "priority",
})  # fmt: skip
# Ollama option -> chat completions field.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "num_predict": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def is_streaming(route: str, body: dict[str, Any]) -> bool:
    """Ollama streams unless the body says `"stream": false`."""
    return body.get("stream", True) is not False if route in ROUTES else bool(body.get("stream"))


def model_name(name: Any) -> Any:
    """The name without Ollama's default tag (`chat:latest` is `chat`)."""
    if isinstance(name, str) and name.endswith(":latest"):
        return name[: -len(":latest")]
    return name


_ZERO = frozenset({"0", "0s", "0m", "0h", "0ms"})


def load_request(route: str, body: dict[str, Any]) -> str | None:
    """ "load" or "unload" when the body asks only that (Ollama's docs/api.md, "Load a model" and
    "Unload a model": an empty prompt or no messages; `keep_alive: 0` unloads), else None."""
    if route not in ROUTES:
        return None
    asked = body.get("messages") if route == CHAT else body.get("prompt")
    if asked:
        return None
    keep_alive = body.get("keep_alive")
    if isinstance(keep_alive, bool):
        return "load"
    # A number of seconds or a Go duration ("0", "0s", "0m").
    unload = keep_alive == 0 or (isinstance(keep_alive, str) and keep_alive.strip() in _ZERO)
    return "unload" if unload else "load"


def load_answer(route: str, body: dict[str, Any], what: str) -> bytes:
    """Ollama's answer to a load or unload request: one JSON object, `done: true`."""
    answer: dict[str, Any] = {"model": body.get("model"), "created_at": _now()}
    if route == CHAT:
        answer["message"] = {"role": "assistant", "content": ""}
    else:
        answer["response"] = ""
    answer["done_reason"] = what
    answer["done"] = True
    return json.dumps(answer).encode()


def to_chat(route: str, body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions body for an `/api/chat` or `/api/generate` body."""
    allowed = _CHAT_FIELDS if route == CHAT else _GENERATE_FIELDS
    for name in body:
        if name not in allowed:
            raise Untranslatable(name)
    if body.get("think"):
        raise Untranslatable("think")
    chat: dict[str, Any] = {"model": model_name(body.get("model"))}
    if route == CHAT:
        if not body.get("messages"):
            raise Untranslatable(
                "messages", "no messages loads or unloads a model, which `serve` decides"
            )
        chat["messages"] = _messages(body.get("messages"))
        if body.get("tools"):
            chat["tools"] = body["tools"]
    else:
        if body.get("raw"):
            raise Untranslatable("raw", "a prompt without the model's chat template")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise Untranslatable(
                "prompt", "an empty prompt loads or unloads a model, which `serve` decides"
            )
        messages: list[dict[str, Any]] = []
        if body.get("system"):
            messages.append({"role": "system", "content": str(body["system"])})
        messages.append(_user(prompt, body.get("images"), "images"))
        chat["messages"] = messages
    chat["stream"] = is_streaming(route, body)
    chat.update(_format(body.get("format")))
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise Untranslatable("options")
    for name, value in options.items():
        if name not in _OPTIONS:
            raise Untranslatable(f"options.{name}")
        if name == "num_predict" and isinstance(value, int) and value < 0:
            continue  # -1: no limit (Ollama's default)
        chat[_OPTIONS[name]] = value
    return chat


def _format(value: Any) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if value == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(value, dict):
        schema = {"name": "format", "schema": value}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise Untranslatable("format")


def _messages(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise Untranslatable("messages")
    out: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (call id, tool name) not yet answered
    for index, message in enumerate(items):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise Untranslatable(where)
        role = message.get("role")
        content = message.get("content") or ""
        for name in message:
            if name not in ("role", "content", "images", "tool_calls", "tool_name", "thinking"):
                raise Untranslatable(f"{where}.{name}")
        if role == "user":
            out.append(_user(content, message.get("images"), f"{where}.images"))
        elif role == "system":
            out.append({"role": "system", "content": content})
        elif role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": content or None}
            calls = []
            for number, call in enumerate(message.get("tool_calls") or []):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict):
                    raise Untranslatable(f"{where}.tool_calls[{number}]")
                call_id = f"call_{index}_{number}"
                arguments = function.get("arguments")
                calls.append({
                    "id": call_id, "type": "function",
                    "function": {"name": function.get("name"),
                                 "arguments": arguments if isinstance(arguments, str)
                                 else json.dumps(arguments or {})},
                })  # fmt: skip
                unanswered.append((call_id, str(function.get("name"))))
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        elif role == "tool":
            # Ollama's tool message names the tool, not the call: it answers the oldest
            # unanswered call of that tool (or the oldest call).
            name = message.get("tool_name")
            match = next((c for c in unanswered if name is None or c[1] == name), None)
            if match is None:
                raise Untranslatable(f"{where}", "a tool answer with no call before it")
            unanswered.remove(match)
            out.append({"role": "tool", "tool_call_id": match[0], "content": content})
        else:
            raise Untranslatable(f"{where}.role")
    return out


_IMAGE_TYPES = {
    "iVBOR": "image/png",
    "/9j/": "image/jpeg",
    "R0lG": "image/gif",
    "UklGR": "image/webp",
}


def _user(text: str, images: Any, where: str) -> dict[str, Any]:
    if not images:
        return {"role": "user", "content": text}
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise Untranslatable(where, "images are base64 strings")
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for image in images:
        media = next((t for p, t in _IMAGE_TYPES.items() if image.startswith(p)), None)
        if media is None:
            raise Untranslatable(where, "only PNG, JPEG, GIF and WebP images")
        parts.append({"type": "image_url", "image_url": {"url": f"data:{media};base64,{image}"}})
    return {"role": "user", "content": parts}


_EMBED_FIELDS = frozenset({"model", "input", "truncate", "options", "keep_alive", "dimensions",
                           "priority"})  # fmt: skip
_EMBEDDINGS_FIELDS = frozenset({"model", "prompt", "options", "keep_alive", "priority"})


def to_embeddings(route: str, body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI embeddings body (`POST /v1/embeddings`) for an `/api/embed` or
    `/api/embeddings` body. `truncate` is left to the engine (llama.cpp refuses an input longer
    than its context, as Ollama does with `truncate: false`); an option is refused by name."""
    allowed = _EMBED_FIELDS if route == EMBED else _EMBEDDINGS_FIELDS
    for name in body:
        if name not in allowed:
            raise Untranslatable(name)
    if body.get("options"):
        options = body["options"]
        name = next(iter(options)) if isinstance(options, dict) else ""
        raise Untranslatable(f"options.{name}" if name else "options")
    value = body.get("input") if route == EMBED else body.get("prompt")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        what = "input" if route == EMBED else "prompt"
        raise Untranslatable(what, "text, or a list of texts, to embed")
    out: dict[str, Any] = {"model": model_name(body.get("model")), "input": value}
    if body.get("dimensions") is not None:
        out["dimensions"] = body["dimensions"]
    return out


def from_embeddings(route: str, data: bytes, request: dict[str, Any], elapsed_ns: int) -> bytes:
    """An OpenAI embeddings answer (`data[].embedding` by `index`, `usage.prompt_tokens`) as
    Ollama's: `embeddings` (and `prompt_eval_count`) for /api/embed, `embedding` for
    /api/embeddings."""
    try:
        answer = json.loads(data)
        items = sorted(answer["data"], key=lambda item: item.get("index", 0))
        vectors = [item["embedding"] for item in items]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadAnswer("the backend's embeddings answer has no data") from exc
    if route == EMBEDDINGS:
        return json.dumps({"embedding": vectors[0] if vectors else []}).encode()
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return json.dumps({
        "model": request.get("model"), "embeddings": vectors, "total_duration": elapsed_ns,
        "load_duration": 0, "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
    }).encode()  # fmt: skip


# ---- answers ------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _done_reason(finish: Any) -> str:
    return "length" if finish == "length" else "stop"


def _final(model: Any, tokens_in: int, tokens_out: int, elapsed_ns: int) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "done": True,
        "total_duration": elapsed_ns,
        "load_duration": 0,
        "prompt_eval_count": tokens_in,
        "prompt_eval_duration": 0,
        "eval_count": tokens_out,
        "eval_duration": elapsed_ns,
    }


def _ollama_calls(calls: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, arguments in calls:
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError as exc:
            raise BadAnswer(
                f"the backend's call of {name!r} has arguments that are not JSON"
            ) from exc
        out.append({"function": {"name": name, "arguments": parsed}})
    return out


def from_chat(route: str, data: bytes, request: dict[str, Any], elapsed_ns: int = 0) -> bytes:
    """A whole chat completion as Ollama's answer."""
    try:
        chat = json.loads(data)
        choice = chat["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BadAnswer("the backend's chat answer has no choices") from exc
    usage = chat.get("usage") if isinstance(chat.get("usage"), dict) else {}
    answer = _final(
        request.get("model"),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        elapsed_ns,
    )
    answer["done_reason"] = _done_reason(choice.get("finish_reason"))
    text = message.get("content") or ""
    if route == GENERATE:
        answer["response"] = text
        return json.dumps(answer).encode()
    out: dict[str, Any] = {"role": "assistant", "content": text}
    calls = [
        (c["function"].get("name"), c["function"].get("arguments"))
        for c in message.get("tool_calls") or []
        if isinstance(c, dict) and isinstance(c.get("function"), dict)
    ]
    if calls:
        out["tool_calls"] = _ollama_calls(calls)
    answer["message"] = out
    return json.dumps(answer).encode()


def error_line(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


class OllamaStream(ChatStreamTranslator):
    """A chat completions SSE stream as Ollama's NDJSON lines: one per piece of text, the tool
    calls whole (Ollama sends their arguments as an object) and the `done` line last."""

    def __init__(self, route: str, request: dict[str, Any]) -> None:
        super().__init__(route, request)
        self._began = time.monotonic_ns()
        self._pieces: dict[int, list[str]] = {}  # chat's tool-call index -> [name, arguments]

    def _line(self, payload: dict[str, Any]) -> bytes:
        return json.dumps(payload).encode() + b"\n"

    def _piece(self, text: str) -> dict[str, Any]:
        line: dict[str, Any] = {"model": self._model, "created_at": _now()}
        if self.route == GENERATE:
            line["response"] = text
        else:
            line["message"] = {"role": "assistant", "content": text}
        line["done"] = False
        return line

    def _start(self) -> bytes:
        return b""

    def _error(self, error: dict[str, Any]) -> bytes:
        return error_line(str(error.get("message") or "the backend failed"))

    def _reasoning_delta(self, text: str) -> bytes:
        # Ollama sends `message.thinking` only when asked (`think`, which serve refuses).
        del text
        return b""

    def _text_delta(self, text: str) -> bytes:
        return self._line(self._piece(text))

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        function = call.get("function") or {}
        entry = self._pieces.setdefault(int(call.get("index", 0)), ["", ""])
        entry[0] = entry[0] or str(function.get("name") or "")
        entry[1] += function.get("arguments") or ""
        return b""

    def _end(self) -> bytes:
        self.done = True
        out = b""
        if self._pieces:
            line = self._piece("")
            calls = [(name, arguments) for name, arguments in self._pieces.values()]
            try:
                line.setdefault("message", {"role": "assistant", "content": ""})
                line["message"]["tool_calls"] = _ollama_calls(calls)
            except BadAnswer as exc:
                return error_line(str(exc))
            out += self._line(line)
        usage = self.usage or {}
        final = _final(
            self._model,
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            time.monotonic_ns() - self._began,
        )
        if self.route == GENERATE:
            final["response"] = ""
        else:
            final["message"] = {"role": "assistant", "content": ""}
        final["done_reason"] = _done_reason(self._finish)
        return out + self._line(final)


# ---- model descriptions -------------------------------------------------------------------------


def _details(engine: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf" if engine == "llamacpp" else "",
        "family": engine,
        "families": [engine],
        "parameter_size": "",
        "quantization_level": "",
    }


def tags(models: list[dict[str, Any]]) -> dict[str, Any]:
    """`GET /api/tags` from `GET /v1/models`' entries: the same names, in the same order."""
    now = _now()
    out = []
    for entry in models:
        aither = entry.get("aither") or {}
        engine = str(aither.get("engine") or aither.get("kind") or "")
        out.append({
            "name": entry["id"], "model": entry["id"], "modified_at": now, "size": 0,
            "digest": "", "details": _details(engine),
        })  # fmt: skip
    return {"models": out}


def show(entry: dict[str, Any]) -> dict[str, Any]:
    """`POST /api/show` for one of `GET /v1/models`' entries."""
    aither = entry.get("aither") or {}
    engine = str(aither.get("engine") or aither.get("kind") or "")
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": _details(engine),
        "model_info": {"general.architecture": engine},
        "capabilities": ["completion", "tools"],
        "modified_at": _now(),
    }


def ps(models: list[dict[str, Any]]) -> dict[str, Any]:
    """`GET /api/ps`: the backends that are loaded and ready now. Sizes are not known here
    (`aitherctl status` shows each service's memory): 0."""
    out = []
    for entry in models:
        aither = entry.get("aither") or {}
        if aither.get("state") != "ready" or entry["id"] != aither.get("backend"):
            continue  # (a backend is listed once, by its own name)
        engine = str(aither.get("engine") or "")
        out.append({
            "name": entry["id"], "model": entry["id"], "size": 0, "size_vram": 0, "digest": "",
            "details": _details(engine), "expires_at": "0001-01-01T00:00:00Z",
        })  # fmt: skip
    return {"models": out}
