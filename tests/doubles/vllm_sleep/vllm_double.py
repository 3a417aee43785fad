#!/usr/bin/env python3
"""Contract double of vLLM's OpenAI-compatible server with sleep mode (`vllm serve`), for machines
without CUDA. It runs as the entrypoint of `aither-test/vllm-sleep-double:latest` (Dockerfile
beside it), in the place of the image's `ENTRYPOINT ["vllm", "serve"]`, so the container gets the
command line aitherctl's vLLM driver writes (`--model M --served-model-name N --port P ...`).

Read from github.com/vllm-project/vllm (stdlib only here; nothing of vLLM's code is copied):
- `vllm/entrypoints/openai/api_server.py` @ 0001948bc76939369ca855c90b36d81256477e85 (`build_app`):
  the development routers, `/sleep`, `/wake_up` and `/is_sleeping` among them, are attached only
  when `VLLM_SERVER_DEV_MODE` is set; without it they answer FastAPI's 404 `{"detail": "Not
  Found"}`.
- `vllm/entrypoints/serve/dev/sleep/api_router.py` @ e7a47b821ef469bb455f75b4129eb365bb6ab9eb:
  `POST /sleep?level=1&mode=abort` (level defaults to 1, mode to `abort`) answers 200 with an
  empty body after the engine has slept; `POST /wake_up` takes repeated `?tags=` (none: all)
  and answers 200 with an empty body after the engine woke; `GET /is_sleeping` answers
  `{"is_sleeping": bool}`.
- `vllm/v1/engine/core.py` @ 00080ee13c7a451fce071ccb8d0e94d395acf5a7 (`pause_scheduler`,
  `sleep`, `wake_up`, `is_sleeping`): sleeping first pauses the scheduler. `mode=abort` aborts
  every request in flight (they finish with `finish_reason: "abort"`), `wait` lets running ones
  finish first, `keep` freezes them until the wake. In every mode *new requests are accepted and
  queued*, and run once the engine wakes ("Resume the scheduler and flush any requests queued
  while paused"). Level 0 only pauses; level 1 offloads weights to CPU and discards the KV cache;
  level 2 discards both. `wake_up(tags)` wakes the named allocations (`weights`, `kv_cache`;
  `scheduling` for level 0) and resumes scheduling only once nothing is asleep; `is_sleeping` is
  "scheduler paused or executor sleeping".
- `vllm/v1/executor/abstract.py` (`sleep`/`wake_up`, same tree): sleeping while asleep and
  waking while awake only log a warning ("Executor is already sleeping." / "Executor is not
  sleeping.") and change nothing; a tag that is not asleep aborts the whole wake with a warning.
- `vllm/v1/worker/gpu_worker.py` @ 0012cf691b7e69423244d2b1405f4b6832156e19: weights and KV
  cache go through the sleep allocator only with `--enable-sleep-mode`; without it `/sleep`
  still pauses the engine but frees nothing.
- docs.vllm.ai "Sleep Mode": after a level-2 sleep the weights must be reloaded
  (`POST /collective_rpc {"method": "reload_weights"}`) before the model answers correctly.
- `vllm/v1/metrics/loggers.py`: `vllm:num_requests_running`, `vllm:num_requests_waiting`,
  `vllm:kv_cache_usage_perc`, `vllm:prompt_tokens_total`, `vllm:generation_tokens_total` and
  `vllm:engine_sleep_state{sleep_state="awake"|"weights_offloaded"|"discard_all"}`, labelled
  `model_name` and `engine`.
The OpenAI shapes (chat/text completions, SSE `data:` chunks, `data: [DONE]`, the usage chunk
with `choices: []` under `stream_options.include_usage`, 404 `NotFoundError` for an unknown
model) follow vLLM's `serving_chat.py` / `serving_completion.py`.

What the double adds (never sent by vLLM): `GET /_double/state`, a JSON record of what the
server went through, including the hazards a scheduler must never cause, and
`POST /_double/reset` (counters to zero). Its knobs are environment variables:
`DOUBLE_TOKEN_DELAY_S` (0.02 per token), `DOUBLE_TOKENS` (8 per answer), `DOUBLE_SLEEP_DELAY_S`
(0.05), `DOUBLE_WAKE_DELAY_S` (0.2), `DOUBLE_STARTUP_DELAY_S` (0: seconds before it listens, as
vLLM binds its port only once the engine is up), `DOUBLE_WEIGHTS_BYTES` (1 GiB),
`DOUBLE_KV_BYTES` (2 GiB), `DOUBLE_RESIDUAL_BYTES` (0: what stays on the device while asleep;
real vLLM keeps its CUDA context and graphs, a few hundred MB), `DOUBLE_REAL_MEMORY=1` (really
hold the device bytes in RAM, so container memory falls when it sleeps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GIB = 1024**3
WORDS = ("Hello", " from", " the", " vLLM", " sleep", " double", ",", " token")
TAGS = ("weights", "kv_cache")


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """`vllm serve [model_tag] [options]`: the options aitherctl writes; others are kept aside."""
    if not argv or argv[0] != "serve":
        sys.exit(f"vllm double: only `vllm serve` is implemented, got {argv[:1]}")
    parser = argparse.ArgumentParser(prog="vllm serve")
    parser.add_argument("model_tag", nargs="?")
    parser.add_argument("--model")
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--enable-sleep-mode", action="store_true")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    args, unknown = parser.parse_known_args(argv[1:])
    args.model = args.model or args.model_tag or "facebook/opt-125m"
    return args, unknown


@dataclass
class Request:
    id: str
    aborted: bool = False
    running: bool = False


@dataclass
class Engine:
    model: str
    served: list[str]
    sleep_mode: bool
    dev_mode: bool
    max_num_seqs: int
    weights_bytes: int
    kv_bytes: int
    residual_bytes: int
    real_memory: bool
    ignored_args: list[str]
    lock: threading.Condition = field(default_factory=threading.Condition)
    requests: dict[str, Request] = field(default_factory=dict)
    paused: str = "unpaused"  # unpaused | paused_new | paused_all
    sleeping_tags: set[str] = field(default_factory=set)
    sleep_level: int | None = None
    weights_on_device: bool = True
    kv_on_device: bool = True
    weights_valid: bool = True
    peak_running: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    hazards: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    buffers: dict[str, bytearray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()
        self._hold("weights", self.weights_bytes)
        self._hold("kv_cache", self.kv_bytes)

    def reset(self) -> None:
        self.counts = dict.fromkeys(
            (
                "requests",
                "completed",
                "aborted",
                "client_disconnects",
                "sleeps",
                "wakes",
                "reloads",
            ),
            0,
        )
        self.hazards = dict.fromkeys(
            (
                "requests_while_asleep",
                "sleep_with_requests_in_flight",
                "wake_while_awake",
                "sleep_while_asleep",
                "sleep_without_sleep_mode",
                "served_with_discarded_weights",
            ),
            0,
        )
        self.events = []
        self.peak_running = 0

    # -- memory -------------------------------------------------------------------------------
    def _hold(self, tag: str, size: int) -> None:
        if self.real_memory and size:
            block = bytearray(size)
            for offset in range(0, size, 4096):  # touch every page: resident, not just reserved
                block[offset] = 1
            self.buffers[tag] = block

    def _release(self, tag: str) -> None:
        self.buffers.pop(tag, None)

    def device_bytes(self) -> int:
        held = self.residual_bytes
        if self.weights_on_device:
            held += self.weights_bytes
        if self.kv_on_device:
            held += self.kv_bytes
        return held

    # -- state --------------------------------------------------------------------------------
    def in_flight(self) -> int:
        return len(self.requests)

    def running(self) -> int:
        return sum(1 for r in self.requests.values() if r.running)

    def is_sleeping(self) -> bool:
        return self.paused != "unpaused" or bool(self.sleeping_tags)

    def note(self, event: str, **detail: Any) -> None:
        self.events.append({"t": round(time.time(), 3), "event": event, **detail})
        del self.events[:-200]

    def snapshot(self) -> dict[str, Any]:
        return {
            "engine": "vllm",
            "model": self.model,
            "served_model_names": self.served,
            "sleep_mode_enabled": self.sleep_mode,
            "dev_mode": self.dev_mode,
            "is_sleeping": self.is_sleeping(),
            "sleep_level": self.sleep_level,
            "sleeping_tags": sorted(self.sleeping_tags),
            "scheduler": self.paused,
            "weights_valid": self.weights_valid,
            "memory": {
                "device_bytes": self.device_bytes(),
                "weights_bytes": self.weights_bytes if self.weights_on_device else 0,
                "kv_cache_bytes": self.kv_bytes if self.kv_on_device else 0,
                "cpu_offload_bytes": self.weights_bytes
                if self.sleep_level == 1 and not self.weights_on_device
                else 0,
                "residual_bytes": self.residual_bytes,
                "real": self.real_memory,
            },
            "in_flight": self.in_flight(),
            "running": self.running(),
            "waiting": self.in_flight() - self.running(),
            "peak_running": self.peak_running,
            "max_num_seqs": self.max_num_seqs,
            "counts": dict(self.counts),
            "hazards": dict(self.hazards),
            "events": list(self.events),
            "ignored_args": self.ignored_args,
        }

    # -- requests -----------------------------------------------------------------------------
    def admit(self) -> Request:
        """Queue a request and block until the scheduler runs it (or it is aborted)."""
        with self.lock:
            request = Request(uuid.uuid4().hex[:12])
            self.requests[request.id] = request
            self.counts["requests"] += 1
            if self.is_sleeping():
                self.hazards["requests_while_asleep"] += 1
                self.note("request_while_asleep", id=request.id, level=self.sleep_level)
            while not request.aborted and (
                self.paused != "unpaused" or self.running() >= self.max_num_seqs
            ):
                self.lock.wait()
            if not request.aborted:
                request.running = True
                self.peak_running = max(self.peak_running, self.running())
                if not self.weights_valid:
                    self.hazards["served_with_discarded_weights"] += 1
            return request

    def step(self, request: Request) -> bool:
        """Wait while frozen (`mode=keep`); False once the request was aborted."""
        with self.lock:
            while self.paused == "paused_all" and not request.aborted:
                self.lock.wait()
            return not request.aborted

    def finish(self, request: Request, outcome: str) -> None:
        with self.lock:
            self.requests.pop(request.id, None)
            self.counts[outcome] += 1
            self.lock.notify_all()

    # -- sleep mode ---------------------------------------------------------------------------
    def sleep(self, level: int, mode: str) -> None:
        with self.lock:
            busy = self.in_flight()
            self.note("sleep", level=level, mode=mode, in_flight=busy)
            if busy:
                self.hazards["sleep_with_requests_in_flight"] += 1
            if not self.sleep_mode:
                self.hazards["sleep_without_sleep_mode"] += 1
            self.paused = "paused_all" if mode == "keep" else "paused_new"
            if mode == "abort":
                for request in self.requests.values():
                    request.aborted = True
            self.lock.notify_all()
            if mode == "wait":
                while self.running():
                    self.lock.wait()
        time.sleep(env_float("DOUBLE_SLEEP_DELAY_S", 0.05))
        with self.lock:
            if level < 1:
                return
            if self.sleeping_tags:
                self.hazards["sleep_while_asleep"] += 1  # vLLM: "Executor is already sleeping."
                return
            self.sleeping_tags = set(TAGS)
            self.sleep_level = level
            self.counts["sleeps"] += 1
            if self.sleep_mode:  # without the sleep allocator nothing is freed
                self.weights_on_device = self.kv_on_device = False
                self._release("weights")
                self._release("kv_cache")
                if level >= 2:
                    self.weights_valid = False

    def wake_up(self, tags: list[str] | None) -> None:
        with self.lock:
            self.note("wake_up", tags=tags, was_sleeping=self.is_sleeping())
            if not self.is_sleeping():
                self.hazards["wake_while_awake"] += 1
                return
            if tags is not None and "scheduling" in tags:
                tags = [tag for tag in tags if tag != "scheduling"]
            waking: list[str] = []
            if tags is None or tags:
                wanted = list(self.sleeping_tags) if tags is None else tags
                if self.sleeping_tags and all(tag in self.sleeping_tags for tag in wanted):
                    waking = wanted
        if waking:
            time.sleep(env_float("DOUBLE_WAKE_DELAY_S", 0.2))
        with self.lock:
            for tag in waking:
                self.sleeping_tags.discard(tag)
                if self.sleep_mode:
                    if tag == "weights":
                        self.weights_on_device = True
                        self._hold("weights", self.weights_bytes)
                    else:
                        self.kv_on_device = True
                        self._hold("kv_cache", self.kv_bytes)
            if not self.sleeping_tags:
                self.paused = "unpaused"
                if self.sleep_level is not None:
                    self.counts["wakes"] += 1
                self.sleep_level = None
                self.lock.notify_all()

    def reload_weights(self) -> None:
        with self.lock:
            self.counts["reloads"] += 1
            if self.weights_on_device:
                self.weights_valid = True


def metrics_text(engine: Engine) -> str:
    with engine.lock:
        running, waiting = engine.running(), engine.in_flight() - engine.running()
        level = engine.sleep_level if engine.sleeping_tags else 0
        prompt, generated = engine.prompt_tokens, engine.generation_tokens
        kv = min(1.0, running / max(engine.max_num_seqs, 1))
    labels = f'engine="0",model_name="{engine.served[0]}"'
    states = {
        "awake": int(level == 0),
        "weights_offloaded": int(level == 1),
        "discard_all": int(level == 2),
    }
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} {float(running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} {float(waiting)}",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{labels}}} {kv}",
        "# HELP vllm:engine_sleep_state Engine sleep state",
        "# TYPE vllm:engine_sleep_state gauge",
        *(
            f'vllm:engine_sleep_state{{{labels},sleep_state="{name}"}} {float(value)}'
            for name, value in states.items()
        ),
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{labels}}} {float(prompt)}",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{labels}}} {float(generated)}",
    ]
    return "\n".join(lines) + "\n"


class ClientGone(Exception):
    pass


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "uvicorn"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        # -- plumbing ---------------------------------------------------------------------
        def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, status: int, payload: Any) -> None:
            self.send(status, json.dumps(payload).encode())

        def not_found(self) -> None:
            self.send_json(404, {"detail": "Not Found"})

        def start_stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError as exc:
                raise ClientGone from exc

        def event(self, payload: dict[str, Any] | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            self.chunk(f"data: {text}\n\n".encode())

        def body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else {}

        # -- routes -----------------------------------------------------------------------
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/health":
                self.send(200, b"")
            elif path == "/v1/models":
                created = int(time.time())
                data = [
                    {
                        "id": name,
                        "object": "model",
                        "created": created,
                        "owned_by": "vllm",
                        "root": engine.model,
                        "parent": None,
                        "max_model_len": 2048,
                    }
                    for name in engine.served
                ]
                self.send_json(200, {"object": "list", "data": data})
            elif path == "/metrics":
                self.send(
                    200, metrics_text(engine).encode(), "text/plain; version=0.0.4; charset=utf-8"
                )
            elif path == "/is_sleeping" and engine.dev_mode:
                with engine.lock:
                    self.send_json(200, {"is_sleeping": engine.is_sleeping()})
            elif path == "/_double/state":
                with engine.lock:
                    self.send_json(200, engine.snapshot())
            else:
                self.not_found()

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            path = parts.path
            if path in ("/v1/chat/completions", "/v1/completions"):
                self.complete(self.body(), chat=path == "/v1/chat/completions")
            elif path == "/sleep" and engine.dev_mode:
                self.body()
                level = int(query.get("level", ["1"])[0])
                engine.sleep(level, query.get("mode", ["abort"])[0])
                self.send(200, b"", "text/plain")
            elif path == "/wake_up" and engine.dev_mode:
                self.body()
                engine.wake_up(query.get("tags") or None)
                self.send(200, b"", "text/plain")
            elif path == "/collective_rpc" and engine.dev_mode:
                payload = self.body()
                if payload.get("method") == "reload_weights":
                    engine.reload_weights()
                self.send_json(200, {"results": [None]})
            elif path == "/_double/reset":
                with engine.lock:
                    engine.reset()
                self.send_json(200, {})
            else:
                self.not_found()

        def complete(self, body: dict[str, Any], *, chat: bool) -> None:
            model = body.get("model")
            if model not in engine.served:
                self.send_json(
                    404,
                    {
                        "error": {
                            "message": f"The model `{model}` does not exist.",
                            "type": "NotFoundError",
                            "param": "model",
                            "code": 404,
                        }
                    },
                )
                return
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            planned = env_int("DOUBLE_TOKENS", 8)
            count = min(planned, int(limit)) if limit else planned
            if chat:
                prompt_text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
            else:
                prompt_text = str(body.get("prompt", ""))
            prompt_tokens = max(1, len(prompt_text.split()))
            stream = bool(body.get("stream"))
            request = engine.admit()
            outcome, produced = "completed", []
            stop_reason = "length" if count < planned else "stop"
            prefix = "chatcmpl-" if chat else "cmpl-"
            base = {
                "id": prefix + request.id,
                "created": int(time.time()),
                "model": model,
                "object": "chat.completion.chunk" if chat else "text_completion",
            }
            try:
                if stream:
                    self.start_stream()
                    if chat:
                        self.event(
                            {
                                **base,
                                "choices": [
                                    {
                                        "index": 0,
                                        "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                            }
                        )
                if request.aborted:
                    outcome, stop_reason = "aborted", "abort"
                for index in range(count if not request.aborted else 0):
                    if not engine.step(request):
                        outcome, stop_reason = "aborted", "abort"
                        break
                    time.sleep(env_float("DOUBLE_TOKEN_DELAY_S", 0.02))
                    if request.aborted:
                        outcome, stop_reason = "aborted", "abort"
                        break
                    word = WORDS[index % len(WORDS)] if engine.weights_valid else " \ufffd"
                    produced.append(word)
                    with engine.lock:
                        engine.generation_tokens += 1
                    if stream:
                        piece = {"content": word} if chat else None
                        choice = (
                            {"index": 0, "delta": piece, "logprobs": None, "finish_reason": None}
                            if chat
                            else {
                                "index": 0,
                                "text": word,
                                "logprobs": None,
                                "finish_reason": None,
                                "stop_reason": None,
                            }
                        )
                        self.event({**base, "choices": [choice]})
                with engine.lock:
                    engine.prompt_tokens += prompt_tokens
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(produced),
                    "total_tokens": prompt_tokens + len(produced),
                }
                if stream:
                    last = (
                        {
                            "index": 0,
                            "delta": {"content": ""},
                            "logprobs": None,
                            "finish_reason": stop_reason,
                            "stop_reason": None,
                        }
                        if chat
                        else {
                            "index": 0,
                            "text": "",
                            "logprobs": None,
                            "finish_reason": stop_reason,
                            "stop_reason": None,
                        }
                    )
                    self.event({**base, "choices": [last]})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        self.event({**base, "choices": [], "usage": usage})
                    self.event("[DONE]")
                    self.chunk(b"")
                else:
                    text = "".join(produced)
                    result: dict[str, Any] = (
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "tool_calls": []},
                            "logprobs": None,
                            "finish_reason": stop_reason,
                            "stop_reason": None,
                        }
                        if chat
                        else {
                            "index": 0,
                            "text": text,
                            "logprobs": None,
                            "finish_reason": stop_reason,
                            "stop_reason": None,
                        }
                    )
                    kind = "chat.completion" if chat else "text_completion"
                    self.send_json(
                        200, {**base, "object": kind, "choices": [result], "usage": usage}
                    )
            except ClientGone:
                outcome = "client_disconnects"  # vLLM aborts a request whose client left
                self.close_connection = True
            finally:
                engine.finish(request, outcome)

    return Handler


def main(argv: list[str]) -> None:
    args, unknown = parse_args(argv)
    served = args.served_model_name or [args.model]
    engine = Engine(
        model=args.model,
        served=served,
        sleep_mode=args.enable_sleep_mode,
        dev_mode=os.environ.get("VLLM_SERVER_DEV_MODE", "0") not in ("", "0", "false"),
        max_num_seqs=args.max_num_seqs,
        weights_bytes=env_int("DOUBLE_WEIGHTS_BYTES", GIB),
        kv_bytes=env_int("DOUBLE_KV_BYTES", 2 * GIB),
        residual_bytes=env_int("DOUBLE_RESIDUAL_BYTES", 0),
        real_memory=os.environ.get("DOUBLE_REAL_MEMORY") == "1",
        ignored_args=unknown,
    )
    time.sleep(env_float("DOUBLE_STARTUP_DELAY_S", 0.0))
    server = ThreadingHTTPServer((args.host or "0.0.0.0", args.port), make_handler(engine))
    server.daemon_threads = True
    print(f"vllm double: serving {served} on port {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
