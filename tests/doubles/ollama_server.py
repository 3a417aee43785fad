"""Contract double of an Ollama server's model-memory API, for machines without Ollama.

Follows ollama/ollama docs/api.md: `GET /api/ps` lists the models in memory (`models[]` with
`name`, `model`, `size`, `size_vram`, `expires_at`); `POST /api/generate` with a `model`, no
`prompt` and `"keep_alive": 0` unloads that model and answers
`{"model": NAME, "created_at": ..., "response": "", "done": true, "done_reason": "unload"}`;
a model that does not exist answers 404 `{"error": "model 'NAME' not found"}`.
`GET /api/version` answers `{"version": ...}`. ComfyUI's `POST /free` (server.py: a JSON body
with `unload_models` / `free_memory`, answered 200 with an empty body) is served on the same
double when `comfyui=True`.
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
                    {"name": name, "model": name, "size": vram, "size_vram": vram,
                     "expires_at": "2026-11-23T21:00:00.123456789Z"}
                    for name, vram in state.loaded.items()
                ]
                self.answer(200, {"models": models})
            elif self.path == "/api/version":
                self.answer(200, {"version": "0.40.2"})
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
                    self.answer(200, {"model": name, "created_at": "2026-11-23T20:00:00Z",
                                      "response": "", "done": True, "done_reason": "unload"})
                    return
                self.answer(400, {"error": "this double only unloads"})
            elif self.path == "/free" and state.comfyui:
                self.answer(200, None)
            else:
                self.answer(404, {"error": "not found"})

    return Handler


@contextmanager
def ollama_double(
    loaded: dict[str, int], *, comfyui: bool = False
) -> Iterator[tuple[str, OllamaState]]:
    """(base URL, state) of a running double holding `loaded` models (name -> bytes of VRAM)."""
    state = OllamaState(dict(loaded), set(loaded), comfyui)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
