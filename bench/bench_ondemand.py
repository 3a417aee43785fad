"""On-demand loads through `aitherctl serve`: what the scheduler adds to a container's own start.

For a stopped llama.cpp service (SmolLM2, CPU, real Docker engine), per round:
- own:     the same image and command started straight through the Docker API (container
           created beforehand), from the `start` call to the first 200 on /health, polled every
           10 ms: what the container itself needs;
- warm:    time to first token of a request to the running server, straight (no gateway);
- gateway: time to first token of a streamed request to `aitherctl serve` for the stopped
           service (it is started by the request);
- evict:   the same when the RAM pool has room for one service only, so the resident one must be
           stopped first.
Overhead = gateway - own - warm (target: at most 0.5 s), and the same for evict.

    eval "$(bash scripts/test-env.sh)"; python bench/bench_ondemand.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

MODELS = os.environ.get("AITHER_TEST_MODELS", "/var/cache/aitherctl-test/models")
MODEL = os.environ.get("AITHER_TEST_MODEL_FILE", "SmolLM2-135M-Instruct.Q4_1.gguf")
IMAGE = "aither-test/llamacpp:latest"
ARGS = ["--ctx-size", "512", "--threads", "1", "--parallel", "1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service(port: int, **extra: object) -> dict[str, object]:
    return {
        "engine": "llamacpp",
        "image": IMAGE,
        "model": f"/models/{MODEL}",
        "served_name": "smol",
        "port": port,
        "gpu": "none",
        "args": ARGS,
        "ram": "256MiB",
        "volumes": {MODELS: "/models:ro"},
        "health": {"timeout": 120},
        **extra,
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aitherctl", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def first_token(url: str, model: str | None) -> float:
    body: dict[str, object] = {
        "stream": True,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "Say hi."}],
    }
    if model:
        body["model"] = model
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data:") and '"content"' in line:
                return time.perf_counter() - started
    raise RuntimeError("no token")


def own_start_to_ready() -> float:
    """The container alone: Docker API start → first 200 on /health (10 ms polls)."""
    import docker

    client = docker.from_env()
    port = free_port()
    container = client.containers.create(
        IMAGE,
        ["-m", f"/models/{MODEL}", "--host", "0.0.0.0", "--port", "8080", *ARGS],
        ports={"8080/tcp": ("127.0.0.1", port)},
        volumes={MODELS: {"bind": "/models", "mode": "ro"}},
    )
    try:
        started = time.perf_counter()
        container.start()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.01)
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def serving(env: dict[str, str], profile: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aitherctl", "serve", "--port", str(port), "--profile", profile],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    folder = Path(tempfile.mkdtemp(prefix="aither-bench-ondemand-"))
    env = {
        **os.environ,
        "AITHER_PROFILE_DIR": str(folder / "profiles"),
        "AITHER_STATE_DIR": str(folder / "state"),
        "AITHER_DATA_DIR": str(folder / "data"),
        "AITHER_NAMESPACE": "bench" + uuid.uuid4().hex[:6],
    }
    (folder / "profiles").mkdir()
    ports = {"resident": free_port(), "ondemand": free_port()}
    for name, limit in (("roomy", "1GiB"), ("tight", "300MiB")):
        document = {
            "name": name,
            "ram": {"limit": limit},
            "services": {
                "resident": service(ports["resident"]),
                "ondemand": service(ports["ondemand"], on_demand=True),
            },
        }
        (folder / "profiles" / f"{name}.yaml").write_text(yaml.safe_dump(document))
    results: dict[str, list[float]] = {"own": [], "warm": [], "gateway": [], "evict": []}
    try:
        for _ in range(rounds):
            results["own"].append(own_start_to_ready())
            for profile, key in (("roomy", "gateway"), ("tight", "evict")):
                cli(env, "down", "--all", "--yes")
                switched = cli(env, "profile", "switch", profile, "--yes")
                assert switched.returncode == 0, switched.stderr
                with serving(env, profile) as url:
                    results[key].append(first_token(url, "ondemand"))
                    if key == "gateway":
                        root = f"http://127.0.0.1:{ports['ondemand']}"
                        results["warm"].append(first_token(root, None))
    finally:
        cli(env, "down", "--all", "--yes")
    median = {key: statistics.median(values) for key, values in results.items()}
    print(f"rounds: {rounds}; load average {os.getloadavg()[0]:.1f}")
    print("| measure | median s | all (s) |")
    print("|---|---|---|")
    for key, values in results.items():
        print(f"| {key} | {median[key]:.3f} | {', '.join(f'{v:.2f}' for v in values)} |")
    for key in ("gateway", "evict"):
        overhead = median[key] - median["own"] - median["warm"]
        print(f"| overhead, {key} (- own - warm) | {overhead:.3f} | target ≤ 0.5 |")
    print(json.dumps({k: round(v, 4) for k, v in median.items()}))


if __name__ == "__main__":
    main()
