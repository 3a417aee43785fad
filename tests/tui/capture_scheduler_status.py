"""Captures `GET /status` of a real `aitherctl serve` into tests/fixtures/scheduler_status*.json.

Run from the repository root with the test environment (`set -a; . /tmp/env.sh; set +a` or
`scripts/test-env.sh`): `python -m tests.tui.capture_scheduler_status`. It serves a tiny
profile in a namespace of its own (one on-demand llama.cpp service with SmolLM2 on the CPU, one
slot, in a 2 GiB RAM pool, and an endpoint nothing listens on), sends one request to the
endpoint (it fails) and four to the service at once, with different priorities, and reads
/status while one runs and three wait (`scheduler_status_busy.json`), then once all are done
(`scheduler_status_idle.json`). Its containers are removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port, llama_service

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SOURCE = (
    "Captured from a real `aitherctl serve` (tests/tui/capture_scheduler_status.py): GET /status "
    "of profile 'schedcap' (on-demand llama.cpp 'llm' with SmolLM2-135M on the CPU, "
    "max_concurrency 1, ram 512MiB in a 2GiB RAM pool; endpoint 'cloud' on a closed port)"
)


def _profile(port: int, dead_port: int) -> dict[str, Any]:
    return {
        "ram": {"limit": "2GiB"},
        "services": {
            "llm": llama_service(
                port, on_demand=True, ram="512MiB", max_concurrency=1, max_queue=8
            ),
        },
        "endpoints": {
            "cloud": {"base_url": f"http://127.0.0.1:{dead_port}/v1", "model": "m"},
        },
    }


def _chat(url: str, model: str, priority: str, tokens: int) -> None:
    body = {
        "model": model,
        "max_tokens": tokens,
        "priority": priority,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
    }
    try:
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300, trust_env=False)
    except httpx.HTTPError as exc:
        print(f"{model}/{priority}: {exc}", file=sys.stderr)


def _status(url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{url}/status", timeout=5, trust_env=False).json()
    return document


def _write(name: str, document: dict[str, Any], when: str) -> None:
    path = FIXTURES / name
    path.write_text(json.dumps({"_source": f"{SOURCE}; {when}", **document}, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="schedcap-"))
    env = {
        **os.environ,
        "AITHER_NAMESPACE": "cap" + uuid.uuid4().hex[:8],
        "AITHER_STATE_DIR": str(work / "state"),
        "AITHER_DATA_DIR": str(work / "data"),
        "AITHER_PROFILE_DIR": str(work / "profiles"),
        "AITHER_MACHINE_DIR": str(work / "machine"),
    }
    (work / "profiles").mkdir()
    (work / "profiles" / "schedcap.yaml").write_text(
        yaml.safe_dump(_profile(free_port(), free_port()), sort_keys=False)
    )
    gateway_port = free_port()
    url = f"http://127.0.0.1:{gateway_port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aitherctl",
            "serve",
            "--port",
            str(gateway_port),
            "--profile",
            "schedcap",
        ],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        _chat(url, "cloud", "normal", 8)  # refused: a failed request in the events
        clients = [
            threading.Thread(target=_chat, args=(url, "llm", priority, 160))
            for priority in ("normal", "batch", "batch", "interactive")
        ]
        for client in clients:
            client.start()
            time.sleep(0.3)
        busy = None
        for _ in range(600):
            document = _status(url)
            llm = next(b for b in document["backends"] if b["backend"] == "llm")
            if llm["in_flight"] == 1 and llm["queued"] == 3:
                busy = document
                break
            time.sleep(0.05)
        if busy is None:
            raise SystemExit("never saw one request running and three waiting")
        _write("scheduler_status_busy.json", busy, "read while one request ran and three waited")
        for client in clients:
            client.join()
        _write("scheduler_status_idle.json", _status(url), "read after every request was done")
    finally:
        server.terminate()
        server.wait(timeout=60)
        subprocess.run(
            [sys.executable, "-m", "aitherctl", "down", "--all", "--yes"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            check=False,
            capture_output=True,
        )


if __name__ == "__main__":
    main()
