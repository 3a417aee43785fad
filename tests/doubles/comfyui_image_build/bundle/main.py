"""Stub ComfyUI: parses the options aitherctl relies on as comfy/cli_args.py does (unknown ones are
an error) and serves the parts of server.py a scheduler uses.

Read from github.com/comfyanonymous/ComfyUI @ d4b509799f875455e5e9b9405026afc8755f14fe
(`server.py`, `main.py`, `execution.py`; nothing copied):
- `POST /prompt {"prompt": {...}}` queues a prompt and answers `{"prompt_id", "number",
  "node_errors": {}}`; one prompt worker runs them one at a time.
- `GET /queue` answers `{"queue_running": [...], "queue_pending": [...]}`, each item
  `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
- `POST /free {"unload_models": bool, "free_memory": bool}` only *sets flags* on the prompt
  queue and answers 200 with an empty body at once. The prompt worker reads the flags in its
  loop (`main.py`: `q.get_flags()`, then `unload_all_models()` / `e.reset()`), which it reaches
  only between prompts: memory is given back a moment after the answer, and not before a
  running prompt ends. `free_memory` alone implies `unload_models`.
- `GET /system_stats`: `system` (with `argv`) and `devices[]` (`name`, `type`, `index`,
  `vram_total`, `vram_free`, `torch_vram_total`, `torch_vram_free`); with `--cpu` the device is
  the CPU.
What the double adds: a prompt "loads a model" of `COMFY_DOUBLE_MODEL_BYTES` (2 GiB) and runs
`COMFY_DOUBLE_PROMPT_S` (0.5 s); the worker polls its flags every `COMFY_DOUBLE_POLL_S` (0.1 s);
`GET /_double/state` reports what it holds, every /free and when it was applied, and the hazard
`free_while_prompt_running`.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

parser = argparse.ArgumentParser()
parser.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--reserve-vram", type=float, default=None)
parser.add_argument("--cpu", action="store_true")
parser.add_argument("--enable-manager", action="store_true")
parser.add_argument("--enable-manager-legacy-ui", action="store_true")
parser.add_argument("--preview-method", default="none")
args = parser.parse_args()

MODEL_BYTES = int(os.environ.get("COMFY_DOUBLE_MODEL_BYTES", str(2 * 1024**3)))
PROMPT_S = float(os.environ.get("COMFY_DOUBLE_PROMPT_S", "0.5"))
POLL_S = float(os.environ.get("COMFY_DOUBLE_POLL_S", "0.1"))
TOTAL = 24 * 1024**3

lock = threading.Condition()
state: dict[str, Any] = {
    "held_bytes": 0,
    "running": [],
    "pending": [],
    "number": 0,
    "flags": {},
    "frees": [],
    "counts": {"prompts": 0, "completed": 0, "frees_requested": 0, "frees_applied": 0},
    "hazards": {"free_while_prompt_running": 0},
}


def worker() -> None:
    """The prompt worker: apply pending flags between prompts, then run the next prompt."""
    while True:
        with lock:
            if not state["pending"]:
                lock.wait(POLL_S)
            flags, state["flags"] = state["flags"], {}
            if flags:
                free_memory = flags.get("free_memory", False)
                freed = 0
                if flags.get("unload_models", free_memory):
                    freed, state["held_bytes"] = state["held_bytes"], 0
                state["counts"]["frees_applied"] += 1
                for entry in state["frees"]:
                    if entry["applied_at"] is None:
                        entry["applied_at"] = round(time.time(), 3)
                        entry["freed_bytes"] = freed
            if not state["pending"]:
                continue
            item = state["pending"].pop(0)
            state["running"].append(item)
            state["held_bytes"] = max(state["held_bytes"], MODEL_BYTES)
        time.sleep(PROMPT_S)
        with lock:
            state["running"].remove(item)
            state["counts"]["completed"] += 1
            lock.notify_all()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def answer(self, body: object, status: int = 200) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/system_stats":
            with lock:
                held = state["held_bytes"]
            device = {
                "name": "cpu" if args.cpu else "cuda:0 double",
                "type": "cpu" if args.cpu else "cuda",
                "index": None if args.cpu else 0,
                "vram_total": TOTAL,
                "vram_free": TOTAL - held,
                "torch_vram_total": held,
                "torch_vram_free": 0,
            }
            self.answer({"system": {"argv": sys.argv[1:]}, "devices": [device]})
        elif self.path == "/queue":
            with lock:
                self.answer(
                    {
                        "queue_running": list(state["running"]),
                        "queue_pending": list(state["pending"]),
                    }
                )
        elif self.path == "/_double/state":
            with lock:
                self.answer(
                    {
                        "engine": "comfyui",
                        "memory_bytes": state["held_bytes"],
                        "queue_running": len(state["running"]),
                        "queue_pending": len(state["pending"]),
                        "frees": state["frees"][-50:],
                        "counts": state["counts"],
                        "hazards": state["hazards"],
                    }
                )
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        if self.path == "/free":
            body = self.body()
            unload, free = body.get("unload_models", False), body.get("free_memory", False)
            with lock:
                state["counts"]["frees_requested"] += 1
                if state["running"]:
                    state["hazards"]["free_while_prompt_running"] += 1
                if unload:
                    state["flags"]["unload_models"] = unload
                if free:
                    state["flags"]["free_memory"] = free
                state["frees"].append(
                    {
                        "requested_at": round(time.time(), 3),
                        "unload_models": unload,
                        "free_memory": free,
                        "prompt_running": bool(state["running"]),
                        "held_bytes": state["held_bytes"],
                        "applied_at": None,
                        "freed_bytes": None,
                    }
                )
                lock.notify_all()
            self.answer(None)
        elif self.path == "/prompt":
            body = self.body()
            with lock:
                prompt_id = str(uuid.uuid4())
                number = state["number"]
                state["number"] += 1
                state["counts"]["prompts"] += 1
                state["pending"].append([number, prompt_id, body.get("prompt", {}), {}, []])
                lock.notify_all()
            self.answer({"prompt_id": prompt_id, "number": number, "node_errors": {}})
        else:
            self.send_error(404)


threading.Thread(target=worker, daemon=True).start()
host = "0.0.0.0" if "0.0.0.0" in args.listen.split(",") else args.listen
server = ThreadingHTTPServer((host, args.port), Handler)
server.daemon_threads = True
server.serve_forever()
