"""Bringing an evicted service back: resuming its stopped container against creating a new one.

`serve` evicts a service whose engine can neither sleep nor free its memory (llama.cpp, vLLM
without sleep mode); the next request loads it again. This measures what that load costs on a
real llama.cpp server (SmolLM2, CPU) in a real Docker engine, through the real CLI, both ways:
- resume: the container was stopped (`docker stop`); `profile switch` plans `resume` and starts
  the same container;
- create: the container was removed (`aitherctl down`); `profile switch` creates a new one.
Prints each way's service start-to-ready time (as the switch reports it) and wall time.

    eval "$(bash scripts/test-env.sh)"; python bench/bench_resume.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import yaml

# The same command runner, model and port helper as the switch benchmark.
from bench_switch import MODEL, MODELS, cli, free_port


def timed_switch() -> tuple[float, float, str]:
    began = time.monotonic()
    result = cli("profile", "switch", "llm", "--yes", "--json")
    wall = time.monotonic() - began
    [step] = [s for s in result["steps"] if s["action"] != "keep"]  # type: ignore[union-attr]
    [outcome] = result["services"]  # type: ignore[misc]
    return wall, float(outcome["seconds"]), str(step["action"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    folder = Path(tempfile.mkdtemp(prefix="aither-bench-"))
    namespace = "bench" + uuid.uuid4().hex[:6]
    os.environ.update(
        AITHER_PROFILE_DIR=str(folder),
        AITHER_STATE_DIR=str(folder / "state"),
        AITHER_NAMESPACE=namespace,
    )
    service = {
        "engine": "llamacpp",
        "image": "aither-test/llamacpp:latest",
        "model": f"/models/{MODEL}",
        "port": free_port(),
        "gpu": "none",
        "args": ["--ctx-size", "1024", "--threads", "1"],
        "volumes": {MODELS: "/models:ro"},
    }
    (folder / "llm.yaml").write_text(yaml.safe_dump({"services": {"llm": service}}))
    times: dict[str, list[tuple[float, float]]] = {"resume": [], "start": []}
    name = f"aither-{namespace}-llm"
    try:
        cli("profile", "switch", "llm", "--yes", "--json")
        for _ in range(rounds):
            subprocess.run(["docker", "stop", "-t", "10", name], check=True, capture_output=True)
            wall, ready, action = timed_switch()
            times[action].append((wall, ready))
            cli("down", "llm", "--yes")
            wall, ready, action = timed_switch()
            times[action].append((wall, ready))
    finally:
        cli("down", "--all", "--yes")
    for action, label in (
        ("resume", "resume the stopped container"),
        ("start", "create a new container     "),
    ):
        walls = [w for w, _ in times[action]]
        readies = [r for _, r in times[action]]
        print(
            f"{label}: start-to-ready median {statistics.median(readies):.2f}s "
            f"{[round(r, 2) for r in readies]}; switch wall median "
            f"{statistics.median(walls):.2f}s {[round(w, 2) for w in walls]}"
        )


if __name__ == "__main__":
    main()
