"""Request to first token on a cold rented node through `aitherctl serve`, less what is not
serve's: the Vast double's boot delay and the node container's own start-to-ready (issue 25).

    eval "$(bash scripts/test-env.sh)"; python bench/bench_nodes.py           # 5 rounds
    python bench/bench_nodes.py --quick                                       # 2 rounds

The Vast.ai contract double (tests/doubles/vast_api.py) runs in this process and starts a real
llama.cpp container (the test image, SmolLM2-135M) per instance after `--boot-delay` seconds.
One `aitherctl serve` (the `.venv` next to this file, else `aitherctl` on PATH) serves a
temporary profile with one on-demand node (`idle_after: 1s`). Each round, with no instance
running, one streaming request names the node (`model: reasoning`, so it waits for the node
instead of falling back), `max_tokens` 8:

- ttft: from sending the request to the first chunk that carries text;
- boot delay: the double's (the marketplace's "loading" time, here a fixed sleep);
- start-to-ready: from the double's boot (the container is created and started) until the
  engine's `/health` first answers 200, polled every 20 ms from this process;
- overhead = ttft - boot delay - start-to-ready: serve's own part (search, create, the record
  writes, its polling of the provider and of the engine's health, routing, the first token).

Then the node is left idle, destroyed by serve, and the next round starts once the double has
no instance. Reported: each round, and the median and maximum of the overhead. Compare numbers
from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.doubles: the double
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import ROOT, free_port, spawn, tail, wait_http  # the sibling module

MODELS = os.environ.get("AITHER_TEST_MODELS", "/var/cache/aitherctl-test/models")
MODEL_FILE = os.environ.get("AITHER_TEST_MODEL_FILE", "SmolLM2-135M-Instruct.Q4_1.gguf")
IMAGE = "aither-test/llamacpp:latest"


def _profile() -> dict[str, Any]:
    return {
        "services": {},
        "cloud": {"daily_cap": 5.0},
        "nodes": {
            "reasoning": {
                "provider": "vast",
                "gpu": "RTX 3090",
                "max_price_per_hour": 0.20,
                "engine": "llamacpp",
                "image": IMAGE,
                "model": f"/models/{MODEL_FILE}",
                "served_name": "smollm2",
                "port": 8080,
                "args": ["--ctx-size", "1024", "--threads", "1", "-ngl", "0"],
                "idle_after": "1s",
            }
        },
    }


class BootWatch:
    """Wraps the double's boot: when it began, and when the container's engine first
    answered /health (polled from a thread every 20 ms)."""

    def __init__(self, vast_api: Any) -> None:
        self.vast_api = vast_api
        self.original = vast_api._boot
        self.began: float | None = None
        self.ready: float | None = None
        vast_api._boot = self._boot

    def reset(self) -> None:
        self.began = self.ready = None

    def _boot(self, state: Any, inst: Any) -> None:
        import httpx

        self.began = time.perf_counter()
        self.original(state, inst)
        bindings = inst.ports.get("8080/tcp") or []
        if not bindings:
            return
        url = f"http://127.0.0.1:{bindings[0]['HostPort']}/health"
        with httpx.Client(timeout=2, trust_env=False) as client:
            while time.perf_counter() - self.began < 300:
                try:
                    if client.get(url).status_code == 200:
                        self.ready = time.perf_counter()
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)


def _first_token(url: str) -> float:
    import httpx

    body = {
        "model": "reasoning",
        "stream": True,
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    started = time.perf_counter()
    with (
        httpx.Client(timeout=600, trust_env=False) as client,
        client.stream("POST", url + "/v1/chat/completions", json=body) as response,
    ):
        if response.status_code != 200:
            raise SystemExit(f"serve answered {response.status_code}: {response.read()!r}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0].get("delta", {})
            if delta.get("content"):
                return time.perf_counter() - started
    raise SystemExit("the stream ended without text")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds, to check the harness")
    parser.add_argument("--boot-delay", type=float, default=1.0)
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds

    import docker
    import yaml

    from tests.doubles import vast_api

    watch = BootWatch(vast_api)
    namespace = "bench" + uuid.uuid4().hex[:6]
    state = vast_api.VastState(
        offers=vast_api.standard_offers(),
        boot_delay_s=args.boot_delay,
        docker=docker.from_env(),
        models_dir=MODELS,
        namespace=namespace,
    )
    workdir = Path(tempfile.mkdtemp(prefix="aither-bench-nodes-"))
    (workdir / "profiles").mkdir()
    (workdir / "profiles" / "bench.yaml").write_text(yaml.safe_dump(_profile()))
    venv_python = ROOT / ".venv" / "bin" / "python"
    command = (
        [str(venv_python), "-m", "aitherctl"]
        if venv_python.exists()
        else [shutil.which("aitherctl") or "aitherctl"]
    )
    port = free_port()
    results: list[tuple[float, float, float]] = []
    with vast_api.serve_vast(state) as vast_url:
        env = {
            **os.environ,
            "AITHER_NAMESPACE": namespace,
            "AITHER_STATE_DIR": str(workdir / "state"),
            "AITHER_DATA_DIR": str(workdir / "data"),
            "AITHER_PROFILE_DIR": str(workdir / "profiles"),
            "AITHER_MACHINE_DIR": str(workdir / "machine"),
            "VAST_URL": vast_url,
            "VAST_API_KEY": state.api_key,
        }
        server = spawn(
            "serve", [*command, "serve", "--port", str(port), "--profile", "bench"], workdir, env
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/health", 60, server.proc)
            for number in range(1, rounds + 1):
                watch.reset()
                ttft = _first_token(url)
                boot_thread = next(iter(state.timers[-1:]), None)
                if boot_thread is not None:
                    boot_thread.join(timeout=60)  # its /health polling has ended
                if watch.began is None or watch.ready is None:
                    raise SystemExit("the double's boot was not seen")
                start_to_ready = watch.ready - watch.began
                overhead = ttft - args.boot_delay - start_to_ready
                results.append((ttft, start_to_ready, overhead))
                print(
                    f"round {number}: ttft {ttft:.3f} s = boot delay {args.boot_delay:.3f} s "
                    f"+ start-to-ready {start_to_ready:.3f} s + serve {overhead:.3f} s",
                    flush=True,
                )
                deadline = time.monotonic() + 120
                while state.instances and time.monotonic() < deadline:
                    time.sleep(0.1)  # serve destroys it after 1 s idle
                if state.instances:
                    raise SystemExit("serve did not destroy the idle node")
                # and serve has seen it stopped (the next request must find it cold)
                while time.monotonic() < deadline:
                    status = json.loads(_get(url + "/status"))
                    entry = next(b for b in status["backends"] if b["backend"] == "reasoning")
                    if entry["state"] == "stopped":
                        break
                    time.sleep(0.1)
        except BaseException:
            print(tail(server.log), file=sys.stderr)
            raise
        finally:
            server.proc.terminate()
            server.proc.wait(timeout=60)
    overheads = [r[2] for r in results]
    print(
        f"serve's overhead on a cold node over {len(results)} rounds: "
        f"median {statistics.median(overheads):.3f} s, max {max(overheads):.3f} s "
        f"(ttft median {statistics.median(r[0] for r in results):.3f} s)"
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


if __name__ == "__main__":
    raise SystemExit(main())
