#!/usr/bin/env python3
"""Contract double of an Ollama server (`ollama serve`), for machines without Ollama. It is the
`/bin/ollama` of `aither-test/ollama-double:latest` (Dockerfile beside it): the image keeps
ollama/ollama's `ENTRYPOINT ["/bin/ollama"]`, `CMD ["serve"]`, so aitherctl's Ollama driver
(environment only, command left to the image) starts it unchanged.

Read from github.com/ollama/ollama @ fb30760996871fa9460115c753afd2c60d4ab0f7 (stdlib only
here; nothing of Ollama's code is copied):
- `envconfig/config.go`: `OLLAMA_HOST` (default 127.0.0.1:11434), `OLLAMA_KEEP_ALIVE` (a Go
  duration or whole seconds; default 5m; negative: forever; 0: unload as soon as idle),
  `OLLAMA_NUM_PARALLEL` (default 1), `OLLAMA_MAX_LOADED_MODELS` (default 0: 3 per GPU,
  `server/sched.go` `defaultModelsPerGPU`), `OLLAMA_MAX_QUEUE` (512).
- `server/routes.go`: `POST /api/generate` with an empty prompt and `keep_alive: 0` (and
  `POST /api/chat` with no messages and `keep_alive: 0`) calls `expireRunner` and answers at
  once `{"model", "created_at", "response": "", "done": true, "done_reason": "unload"}` (chat:
  `"message": {"role": "assistant", "content": ""}`) — *before* the model is gone; an empty
  prompt without `keep_alive: 0` loads the model and answers `done_reason: "load"`; an unknown
  model answers 404 `{"error": "model 'NAME' not found"}`. `GET /api/ps` (`PsHandler`) lists
  the runners still in the scheduler's `loaded` map (`name`, `model`, `size`, `size_vram`,
  `digest`, `details`, `expires_at`, `context_length`), longest time left first.
- `server/sched.go`: a request takes a reference on its runner (loading it first) and sets the
  runner's session duration from its `keep_alive`; when the last reference is released the
  runner is unloaded at once if the duration is 0, else a timer unloads it after the duration.
  `expireRunner` sets the duration to 0 and unloads only when no request holds the runner:
  *an unload asked while requests are in flight happens after they finish*. The unload itself
  is asynchronous (`expiredCh`), so `/api/ps` lists the model for a moment after the answer.
  A new model that does not fit (here: more than the maximum loaded) evicts an idle runner.
- `openai/openai.go`, `middleware/openai.go`: `/v1/chat/completions` chunks
  (`chat.completion.chunk`, `system_fingerprint: "fp_ollama"`, usage only under
  `stream_options.include_usage`), errors as `{"error": {"message", "type", "param", "code"}}`
  with `type` `not_found_error` for 404.

What the double adds: `GET /_double/state` (what it holds, counts, and the hazards a scheduler
must never cause) and `POST /_double/reset`. Knobs (environment): `OLLAMA_DOUBLE_MODELS`
(`name=bytes,...`; default `smollm2:135m=300000000,qwen2.5:0.5b=500000000`),
`OLLAMA_DOUBLE_LOAD_DELAY_S` (0.3), `OLLAMA_DOUBLE_UNLOAD_DELAY_S` (0.2: how long an expired
model stays listed), `OLLAMA_DOUBLE_TOKEN_DELAY_S` (0.02), `OLLAMA_DOUBLE_TOKENS` (8),
`OLLAMA_DOUBLE_REGISTRY` (`name=bytes,...`: what `POST /api/pull` can fetch; a pulled model
joins the models on disk, and its manifest is written where Ollama writes it, so a new
container on the same volume lists it) and `OLLAMA_DOUBLE_PULL_DELAY_S` (0.05, between the
pull's progress lines); with `OLLAMA_DOUBLE_PULL_HOLD=1` a pull stops after its quarter
line until `POST /_double/release-pull`, so a test sees a download in progress without timing.
`POST /api/pull` follows `server/routes.go` `PullHandler` as the in-process double
(tests/doubles/ollama_server.py) does.
Every loaded byte is reported as VRAM (`size_vram == size`), as on a GPU that holds the model.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

VERSION = "0.40.2"  # the tag aitherctl's driver pins
WORDS = ("Hello", " from", " the", " Ollama", " double", ",", " one", " token")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_s(value: Any) -> float | None:
    """Seconds from an Ollama `keep_alive` (api.Duration: a number is seconds, a string a Go
    duration; negative means forever). None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if re.fullmatch(r"\d+", body):
            seconds = sign * float(body)
        else:
            parts = _DURATION.findall(body)
            if not parts or "".join(a + b for a, b in parts) != body:
                return None
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
    return math.inf if seconds < 0 else seconds


def full_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def now_text(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Runner:
    name: str
    size: int
    session_s: float
    state: str = "loading"  # loading | loaded | unloading
    refs: int = 0  # requests holding it (waiting for a slot or generating)
    active: int = 0  # requests generating
    expires_at: float | None = None
    timer: threading.Timer | None = None


@dataclass
class Ollama:
    models: dict[str, int]
    keep_alive_s: float
    max_loaded: int
    num_parallel: int
    load_delay_s: float
    unload_delay_s: float
    lock: threading.Condition = field(default_factory=threading.Condition)
    loaded: dict[str, Runner] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    hazards: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    registry: dict[str, int] = field(default_factory=dict)  # what `/api/pull` can fetch
    # OLLAMA_DOUBLE_PULL_HOLD=1: a pull stops at a quarter until `POST /_double/release-pull`.
    pull_gate: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(
            (
                "requests",
                "completed",
                "client_disconnects",
                "loads",
                "unloads",
                "unload_requests",
                "unload_requests_not_loaded",
                "evictions",
                "expired_by_timer",
                "unknown_model",
                "pulls",
            ),
            0,
        )
        self.hazards = dict.fromkeys(
            ("unload_with_requests_in_flight", "request_while_unloading"), 0
        )
        self.events = []

    def note(self, event: str, **detail: Any) -> None:
        self.events.append({"t": round(time.time(), 3), "event": event, **detail})
        del self.events[:-200]

    # -- the scheduler --------------------------------------------------------------------
    def acquire(self, name: str, keep_alive_s: float | None) -> Runner:
        """A reference on `name`'s runner, loaded (and a free slot), as `getRunner` gives it."""
        with self.lock:
            self.counts["requests"] += 1
            while True:
                runner = self.loaded.get(name)
                if runner is not None and runner.state == "unloading":
                    self.hazards["request_while_unloading"] += 1
                    self.note("request_while_unloading", model=name)
                    while name in self.loaded:
                        self.lock.wait()
                    continue
                if runner is not None:
                    break
                if len(self.loaded) >= self.max_loaded:
                    idle = [r for r in self.loaded.values() if r.refs == 0 and r.state == "loaded"]
                    if idle:
                        victim = min(idle, key=lambda r: r.expires_at or 0.0)
                        self.counts["evictions"] += 1
                        self.note("evicted", model=victim.name, to_load=name)
                        self._unload(victim)
                    self.lock.wait()
                    continue
                runner = Runner(name, self.models[name], self.keep_alive_s)
                self.loaded[name] = runner
                self.counts["loads"] += 1
                self.note("load", model=name)
                threading.Thread(target=self._finish_load, args=(runner,), daemon=True).start()
                break
            runner.refs += 1
            self._stop_timer(runner)
            runner.session_s = self.keep_alive_s if keep_alive_s is None else keep_alive_s
            while runner.state == "loading" or runner.active >= self.num_parallel:
                self.lock.wait()
            runner.active += 1
            return runner

    def _finish_load(self, runner: Runner) -> None:
        time.sleep(self.load_delay_s)
        with self.lock:
            runner.state = "loaded"
            self.lock.notify_all()

    def release(self, runner: Runner, outcome: str) -> None:
        with self.lock:
            runner.active -= 1
            runner.refs -= 1
            self.counts[outcome] += 1
            if runner.refs <= 0 and runner.state == "loaded":
                if runner.session_s <= 0:
                    self._unload(runner)
                elif math.isfinite(runner.session_s):
                    runner.expires_at = time.time() + runner.session_s
                    runner.timer = threading.Timer(
                        runner.session_s, self._timer_expired, args=(runner,)
                    )
                    runner.timer.daemon = True
                    runner.timer.start()
                else:
                    runner.expires_at = None
            self.lock.notify_all()

    def _timer_expired(self, runner: Runner) -> None:
        with self.lock:
            if runner.refs <= 0 and runner.state == "loaded":
                self.counts["expired_by_timer"] += 1
                self._unload(runner)

    def _stop_timer(self, runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None

    def expire(self, name: str) -> None:
        """`keep_alive: 0` with nothing to generate: unload now, or when the last request ends."""
        with self.lock:
            self.counts["unload_requests"] += 1
            runner = self.loaded.get(name)
            if runner is None:
                self.counts["unload_requests_not_loaded"] += 1
                return
            self._stop_timer(runner)
            runner.session_s = 0
            runner.expires_at = time.time()
            if runner.refs > 0:
                self.hazards["unload_with_requests_in_flight"] += 1
                self.note("unload_with_requests_in_flight", model=name, refs=runner.refs)
            elif runner.state == "loaded":
                self._unload(runner)

    def _unload(self, runner: Runner) -> None:
        self._stop_timer(runner)
        runner.state = "unloading"
        self.note("unloading", model=runner.name)

        def gone() -> None:
            time.sleep(self.unload_delay_s)
            with self.lock:
                if self.loaded.get(runner.name) is runner:
                    del self.loaded[runner.name]
                self.counts["unloads"] += 1
                self.note("unloaded", model=runner.name)
                self.lock.notify_all()

        threading.Thread(target=gone, daemon=True).start()

    # -- views ----------------------------------------------------------------------------
    def ps(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = []
        for runner in self.loaded.values():
            if runner.state == "loading":
                continue
            expires = runner.expires_at
            if runner.refs > 0 or expires is None:
                expires = time.time() + (
                    runner.session_s if math.isfinite(runner.session_s) else 290 * 365 * 86400
                )
            listed.append(
                {
                    "name": runner.name,
                    "model": runner.name,
                    "size": runner.size,
                    "digest": uuid.uuid5(uuid.NAMESPACE_URL, runner.name).hex * 2,
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "llama",
                        "families": ["llama"],
                        "parameter_size": "135M",
                        "quantization_level": "Q4_1",
                    },
                    "expires_at": now_text(expires),
                    "size_vram": runner.size,
                    "context_length": 4096,
                    "_expires": expires,
                }
            )
        listed.sort(key=lambda entry: -float(entry["_expires"]))
        for entry in listed:
            del entry["_expires"]
        return listed

    def snapshot(self) -> dict[str, Any]:
        loaded = [
            {
                "name": r.name,
                "state": r.state,
                "size_bytes": r.size,
                "refs": r.refs,
                "active": r.active,
                "expires_in_s": None
                if r.expires_at is None or r.refs
                else round(r.expires_at - time.time(), 3),
            }
            for r in self.loaded.values()
        ]
        return {
            "engine": "ollama",
            "settings": {
                "keep_alive_s": None if math.isinf(self.keep_alive_s) else self.keep_alive_s,
                "max_loaded_models": self.max_loaded,
                "num_parallel": self.num_parallel,
                "load_delay_s": self.load_delay_s,
                "unload_delay_s": self.unload_delay_s,
            },
            "models": dict(self.models),
            "loaded": loaded,
            "memory_bytes": sum(r.size for r in self.loaded.values()),
            "in_flight": sum(r.refs for r in self.loaded.values()),
            "counts": dict(self.counts),
            "hazards": dict(self.hazards),
            "events": list(self.events),
        }


class ClientGone(Exception):
    pass


def make_handler(ollama: Ollama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_json(self, status: int, payload: Any) -> None:
            self.send(status, json.dumps(payload).encode(), "application/json; charset=utf-8")

        def start_stream(self, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError as exc:
                raise ClientGone from exc

        def body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else {}

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/":
                self.send(200, b"Ollama is running", "text/plain; charset=utf-8")
            elif path == "/api/version":
                self.send_json(200, {"version": VERSION})
            elif path == "/api/ps":
                with ollama.lock:
                    self.send_json(200, {"models": ollama.ps()})
            elif path == "/api/tags":
                models = [
                    {"name": n, "model": n, "size": s, "modified_at": now_text()}
                    for n, s in ollama.models.items()
                ]
                self.send_json(200, {"models": models})
            elif path == "/v1/models":
                data = [
                    {"id": n, "object": "model", "created": int(time.time()), "owned_by": "library"}
                    for n in ollama.models
                ]
                self.send_json(200, {"object": "list", "data": data})
            elif path == "/_double/state":
                with ollama.lock:
                    self.send_json(200, ollama.snapshot())
            else:
                self.send(404, b"404 page not found", "text/plain")

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            body = self.body()
            if path in ("/api/generate", "/api/chat"):
                self.native(body, chat=path == "/api/chat")
            elif path == "/v1/chat/completions":
                self.openai(body)
            elif path == "/api/pull":
                self.pull(full_name(str(body.get("model") or body.get("name") or "")))
            elif path == "/_double/release-pull":
                ollama.pull_gate.set()
                self.send_json(200, {})
            elif path == "/_double/reset":
                with ollama.lock:
                    ollama.reset()
                self.send_json(200, {})
            else:
                self.send(404, b"404 page not found", "text/plain")

        def pull(self, name: str) -> None:
            """`POST /api/pull` streamed (chunked NDJSON, as the Go server writes it): the
            manifest, one layer growing in four steps `OLLAMA_DOUBLE_PULL_DELAY_S` apart, then
            verify, write, success; a name the registry lacks ends with an `error` line after
            the 200 (the headers are already sent)."""
            with ollama.lock:
                ollama.counts["pulls"] += 1
            self.start_stream("application/x-ndjson")

            def line(item: dict[str, Any]) -> None:
                self.chunk(json.dumps(item).encode() + b"\n")

            try:
                line({"status": "pulling manifest"})
                size = ollama.registry.get(name)
                if size is None:
                    line({"error": "pull model manifest: file does not exist"})
                else:
                    digest = "sha256:" + "b" * 64
                    for completed in (0, size // 4, size // 2, size):
                        time.sleep(float(os.environ.get("OLLAMA_DOUBLE_PULL_DELAY_S", "0.05")))
                        if completed == size // 2 and os.environ.get("OLLAMA_DOUBLE_PULL_HOLD"):
                            ollama.pull_gate.wait()
                        line({"status": f"pulling {digest[7:19]}", "digest": digest,
                              "total": size, "completed": completed})  # fmt: skip
                    for status in ("verifying sha256 digest", "writing manifest", "success"):
                        line({"status": status})
                    with ollama.lock:
                        ollama.models[name] = size
                    write_manifest(name, size)
                self.chunk(b"")
            except ClientGone:
                self.close_connection = True

        def known(self, name: Any, openai: bool) -> str | None:
            if not name:
                self.send_json(400, {"error": "model is required"})
                return None
            model = full_name(str(name))
            if model not in ollama.models:
                with ollama.lock:
                    ollama.counts["unknown_model"] += 1
                message = f"model '{name}' not found"
                if openai:
                    self.send_json(
                        404,
                        {
                            "error": {
                                "message": message,
                                "type": "not_found_error",
                                "param": None,
                                "code": None,
                            }
                        },
                    )
                else:
                    self.send_json(404, {"error": message})
                return None
            return model

        def generate(self, count: int, emit: Any) -> list[str]:
            produced: list[str] = []
            for index in range(count):
                time.sleep(float(os.environ.get("OLLAMA_DOUBLE_TOKEN_DELAY_S", "0.02")))
                word = WORDS[index % len(WORDS)]
                produced.append(word)
                emit(word)
            return produced

        def native(self, body: dict[str, Any], *, chat: bool) -> None:
            model = self.known(body.get("model"), openai=False)
            if model is None:
                return
            keep_alive = go_duration_s(body.get("keep_alive"))
            empty = not body.get("messages") if chat else not body.get("prompt")
            name = body["model"]
            if empty and keep_alive == 0:
                ollama.expire(model)
                reply: dict[str, Any] = {
                    "model": name,
                    "created_at": now_text(),
                    "done": True,
                    "done_reason": "unload",
                }
                reply.update(
                    {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
                )
                self.send_json(200, reply)
                return
            started = time.monotonic()
            runner = ollama.acquire(model, keep_alive)
            outcome = "completed"
            try:
                if empty:
                    reply = {
                        "model": name,
                        "created_at": now_text(),
                        "done": True,
                        "done_reason": "load",
                    }
                    reply.update(
                        {"message": {"role": "assistant", "content": ""}}
                        if chat
                        else {"response": ""}
                    )
                    self.send_json(200, reply)
                    return
                stream = body.get("stream", True) is not False
                planned = int(os.environ.get("OLLAMA_DOUBLE_TOKENS", "8"))
                limit = (body.get("options") or {}).get("num_predict")
                count = min(planned, int(limit)) if limit else planned

                def piece(word: str, done: bool) -> dict[str, Any]:
                    part: dict[str, Any] = {"model": name, "created_at": now_text()}
                    part.update(
                        {"message": {"role": "assistant", "content": word}}
                        if chat
                        else {"response": word}
                    )
                    part["done"] = done
                    return part

                def emit(word: str) -> None:
                    if stream:
                        self.chunk(json.dumps(piece(word, False)).encode() + b"\n")

                if stream:
                    self.start_stream("application/x-ndjson")
                produced = self.generate(count, emit)
                final = piece("" if stream else "".join(produced), True)
                elapsed = int((time.monotonic() - started) * 1e9)
                final.update(
                    {
                        "done_reason": "length" if count < planned else "stop",
                        "total_duration": elapsed,
                        "load_duration": 0,
                        "prompt_eval_count": 8,
                        "prompt_eval_duration": 1000000,
                        "eval_count": len(produced),
                        "eval_duration": elapsed,
                    }
                )
                if stream:
                    self.chunk(json.dumps(final).encode() + b"\n")
                    self.chunk(b"")
                else:
                    self.send_json(200, final)
            except ClientGone:
                outcome = "client_disconnects"
                self.close_connection = True
            finally:
                ollama.release(runner, outcome)

        def openai(self, body: dict[str, Any]) -> None:
            model = self.known(body.get("model"), openai=True)
            if model is None:
                return
            runner = ollama.acquire(model, None)
            outcome = "completed"
            name = body["model"]
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            planned = int(os.environ.get("OLLAMA_DOUBLE_TOKENS", "8"))
            count = min(planned, int(limit)) if limit else planned
            base = {
                "id": f"chatcmpl-{uuid.uuid4().int % 1000}",
                "created": int(time.time()),
                "model": name,
                "system_fingerprint": "fp_ollama",
            }
            finish = "length" if count < planned else "stop"
            stream = bool(body.get("stream"))
            try:
                if stream:
                    self.start_stream("text/event-stream")

                def emit(word: str) -> None:
                    if stream:
                        chunk = {
                            **base,
                            "object": "chat.completion.chunk",
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"role": "assistant", "content": word},
                                    "finish_reason": None,
                                }
                            ],
                        }
                        self.chunk(f"data: {json.dumps(chunk)}\n\n".encode())

                produced = self.generate(count, emit)
                usage = {
                    "prompt_tokens": 8,
                    "completion_tokens": len(produced),
                    "total_tokens": 8 + len(produced),
                }
                if stream:
                    last = {
                        **base,
                        "object": "chat.completion.chunk",
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": finish,
                            }
                        ],
                    }
                    self.chunk(f"data: {json.dumps(last)}\n\n".encode())
                    if (body.get("stream_options") or {}).get("include_usage"):
                        tail = {
                            **base,
                            "object": "chat.completion.chunk",
                            "choices": [],
                            "usage": usage,
                        }
                        self.chunk(f"data: {json.dumps(tail)}\n\n".encode())
                    self.chunk(b"data: [DONE]\n\n")
                    self.chunk(b"")
                else:
                    self.send_json(
                        200,
                        {
                            **base,
                            "object": "chat.completion",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": "".join(produced)},
                                    "finish_reason": finish,
                                }
                            ],
                            "usage": usage,
                        },
                    )
            except ClientGone:
                outcome = "client_disconnects"
                self.close_connection = True
            finally:
                ollama.release(runner, outcome)

    return Handler


def models_dir() -> str:
    """Where Ollama keeps its models (`envconfig.Models`: `OLLAMA_MODELS`, default
    `~/.ollama/models`): a pulled model's manifest is
    `manifests/registry.ollama.ai/library/NAME/TAG` there, so it survives the container."""
    return os.environ.get("OLLAMA_MODELS") or os.path.expanduser("~/.ollama/models")


def _manifest_folder() -> str:
    return os.path.join(models_dir(), "manifests", "registry.ollama.ai", "library")


def write_manifest(name: str, size: int) -> None:
    model, _, tag = name.partition(":")
    folder = os.path.join(_manifest_folder(), model)
    os.makedirs(folder, exist_ok=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "size": size,
             "digest": "sha256:" + "b" * 64}  # fmt: skip
    with open(os.path.join(folder, tag), "w", encoding="utf-8") as handle:
        json.dump({"schemaVersion": 2, "layers": [layer]}, handle)


def pulled_models() -> dict[str, int]:
    """The models an earlier pull left in the models folder: name → the size of their layers."""
    found: dict[str, int] = {}
    root = _manifest_folder()
    if not os.path.isdir(root):
        return found
    for model in sorted(os.listdir(root)):
        for tag in sorted(os.listdir(os.path.join(root, model))):
            with open(os.path.join(root, model, tag), encoding="utf-8") as handle:
                layers = json.load(handle).get("layers", [])
            found[f"{model}:{tag}"] = sum(int(layer.get("size", 0)) for layer in layers)
    return found


def parse_models(text: str) -> dict[str, int]:
    models = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, size = item.partition("=")
        models[full_name(name)] = int(size or 300_000_000)
    return models


def main(argv: list[str]) -> None:
    if argv[:1] != ["serve"]:
        sys.exit(f"ollama double: only `ollama serve` is implemented, got {argv[:1]}")
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    keep_alive = go_duration_s(os.environ.get("OLLAMA_KEEP_ALIVE") or "5m")
    max_loaded = int(os.environ.get("OLLAMA_MAX_LOADED_MODELS") or 0) or 3
    ollama = Ollama(
        models={
            **parse_models(
                os.environ.get(
                    "OLLAMA_DOUBLE_MODELS", "smollm2:135m=300000000,qwen2.5:0.5b=500000000"
                )
            ),
            **pulled_models(),
        },
        keep_alive_s=300.0 if keep_alive is None else keep_alive,
        max_loaded=max_loaded,
        num_parallel=max(int(os.environ.get("OLLAMA_NUM_PARALLEL") or 1), 1),
        load_delay_s=float(os.environ.get("OLLAMA_DOUBLE_LOAD_DELAY_S", "0.3")),
        unload_delay_s=float(os.environ.get("OLLAMA_DOUBLE_UNLOAD_DELAY_S", "0.2")),
        registry=parse_models(os.environ.get("OLLAMA_DOUBLE_REGISTRY", "")),
    )
    server = ThreadingHTTPServer(
        (host.strip("[]") or "0.0.0.0", int(port or 11434)), make_handler(ollama)
    )
    server.daemon_threads = True
    print(f"ollama double: listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
