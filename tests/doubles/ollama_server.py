"""Contract double of an Ollama server's model-memory API, for machines without Ollama.

Follows ollama/ollama docs/api.md: `GET /api/ps` lists the models in memory (`models[]` with
`name`, `model`, `size`, `size_vram`, `expires_at`); `POST /api/generate` with a `model`, no
`prompt` and `"keep_alive": 0` unloads that model and answers
`{"model": NAME, "created_at": ..., "response": "", "done": true, "done_reason": "unload"}`;
a model that does not exist answers 404 `{"error": "model 'NAME' not found"}`.
`GET /api/version` answers `{"version": ...}`. `GET /api/tags` lists the models on disk
(`models[]` with `name`, `model`, `size`, `digest`, `modified_at`, `details`); `POST /api/pull`
(`{"model", "stream": true}`) streams NDJSON as Ollama's server does (server/routes.go
`PullHandler`, server/images.go `PullModel`): `{"status": "pulling manifest"}`, one
`{"status": "pulling <digest>", "digest", "total", "completed"}` per layer as it grows, then
`verifying sha256 digest`, `writing manifest`, `success`; a model the registry does not have
ends the stream with `{"error": "pull model manifest: file does not exist"}` (status 200: the
headers were already sent); `DELETE /api/delete` (`{"model"}`) answers 200, or 404 with
`{"error": "model 'NAME' not found"}`. `NAME` is `NAME:latest`. ComfyUI's `POST /free`
(server.py: a JSON body with `unload_models` / `free_memory`, answered 200 with an empty body)
is served on the same double when `comfyui=True`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GIB = 1024**3


@dataclass
class OllamaState:
    loaded: dict[str, int] = field(default_factory=dict)  # name -> size_vram
    known: set[str] = field(default_factory=set)
    comfyui: bool = False
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # method, path, body
    registry: dict[str, int] = field(default_factory=dict)  # what `/api/pull` can fetch: bytes
    on_disk: dict[str, int] = field(default_factory=dict)  # what `/api/tags` lists: bytes


def _tag(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _handler(state: OllamaState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def answer(self, status: int, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, None))
            if self.path == "/api/ps":
                models = [
                    {
                        "name": name,
                        "model": name,
                        "size": vram,
                        "size_vram": vram,
                        "expires_at": "2026-11-23T21:00:00.123456789Z",
                    }
                    for name, vram in state.loaded.items()
                ]
                self.answer(200, {"models": models})
            elif self.path == "/api/version":
                self.answer(200, {"version": "0.40.2"})
            elif self.path == "/api/tags":
                models = [
                    {
                        "name": name,
                        "model": name,
                        "size": size,
                        "digest": "f" * 64,
                        "modified_at": "2026-11-23T20:00:00.123456789Z",
                        "details": {"format": "gguf", "family": "llama"},
                    }
                    for name, size in state.on_disk.items()
                ]
                self.answer(200, {"models": models})
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            state.requests.append(("POST", self.path, body))
            if self.path == "/api/generate":
                name = body.get("model")
                if name not in state.known:
                    self.answer(404, {"error": f"model '{name}' not found"})
                    return
                if body.get("keep_alive") in (0, "0") and not body.get("prompt"):
                    state.loaded.pop(name, None)
                    self.answer(
                        200,
                        {
                            "model": name,
                            "created_at": "2026-11-23T20:00:00Z",
                            "response": "",
                            "done": True,
                            "done_reason": "unload",
                        },
                    )
                    return
                self.answer(400, {"error": "this double only unloads"})
            elif self.path == "/api/pull":
                self.pull(_tag(str(body.get("model") or body.get("name") or "")))
            elif self.path == "/free" and state.comfyui:
                self.answer(200, None)
            else:
                self.answer(404, {"error": "not found"})

        def do_DELETE(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            state.requests.append(("DELETE", self.path, body))
            name = _tag(str(body.get("model") or body.get("name") or ""))
            if self.path != "/api/delete":
                self.answer(404, {"error": "not found"})
            elif state.on_disk.pop(name, None) is None:
                self.answer(404, {"error": f"model '{name}' not found"})
            else:
                self.answer(200, None)

        def pull(self, name: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()  # HTTP/1.0 without a length: the body ends when it closes

            def line(item: dict[str, Any]) -> None:
                self.wfile.write(json.dumps(item).encode() + b"\n")
                self.wfile.flush()

            line({"status": "pulling manifest"})
            size = state.registry.get(name)
            if size is None:
                line({"error": "pull model manifest: file does not exist"})
            else:
                digest = "sha256:" + "a" * 64
                for completed in (0, size // 4, size // 2, size):
                    line(
                        {
                            "status": f"pulling {digest[7:19]}",
                            "digest": digest,
                            "total": size,
                            "completed": completed,
                        }
                    )
                for status in ("verifying sha256 digest", "writing manifest", "success"):
                    line({"status": status})
                state.on_disk[name] = size
                state.known.add(name)
            self.close_connection = True

    return Handler


@contextmanager
def ollama_double(
    loaded: dict[str, int],
    *,
    comfyui: bool = False,
    registry: dict[str, int] | None = None,
    on_disk: dict[str, int] | None = None,
    port: int = 0,
) -> Iterator[tuple[str, OllamaState]]:
    """(base URL, state) of a running double holding `loaded` models (name -> bytes of VRAM),
    with `on_disk` models listed by `/api/tags` and `registry` ones that `/api/pull` fetches."""
    state = OllamaState(dict(loaded), set(loaded), comfyui)
    state.registry = dict(registry or {})
    state.on_disk = dict(on_disk or {})
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
