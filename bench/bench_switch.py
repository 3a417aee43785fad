"""Switch time: one of three services changes.

aitherctl's switch (recreates only the changed service) against stopping and starting all three,
on real llama.cpp servers (SmolLM2, CPU) in a real Docker engine. Prints each run's wall time, the
ratio of the medians, and each service's own ready time as aitherctl reports it.

    eval "$(bash scripts/test-env.sh)"; python bench/bench_switch.py [--rounds 3] [--before DIR]

`--before DIR`: another checkout (`git worktree add --detach DIR COMMIT`) whose switch is timed
in the same rounds, each of its switches right after this tree's, so that both meet the same
load; only the overhead is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

MODELS = os.environ.get("AITHER_TEST_MODELS", "/var/cache/aitherctl-test/models")
MODEL = os.environ.get("AITHER_TEST_MODEL_FILE", "SmolLM2-135M-Instruct.Q4_1.gguf")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service(port: int, ctx: int) -> dict[str, object]:
    return {
        "engine": "llamacpp",
        "image": "aither-test/llamacpp:latest",
        "model": f"/models/{MODEL}",
        "port": port,
        "gpu": "none",
        "args": ["--ctx-size", str(ctx), "--threads", "1"],
        "volumes": {MODELS: "/models:ro"},
    }


def cli(*args: str, tree: Path | None = None) -> dict[str, object]:
    """`aitherctl ARGS` from this checkout, or from `tree` (its `aitherctl` package first)."""
    done = subprocess.run(
        [sys.executable, "-m", "aitherctl", *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=tree or Path(__file__).resolve().parents[1],
    )
    if done.returncode != 0:
        raise SystemExit(f"aitherctl {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout, timed alternately")
    options = parser.parse_args()
    rounds, before = options.rounds, options.before
    folder = Path(tempfile.mkdtemp(prefix="aither-bench-"))
    # As a user's installed copy runs: with bytecode caches (a private PYTHONPYCACHEPREFIX, written
    # by the first switch below). This project's shells set PYTHONDONTWRITEBYTECODE, which would
    # compile every module on every start and add about 0.3 s to each switch.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.update(
        PYTHONPYCACHEPREFIX=str(folder / "pycache"),
        AITHER_PROFILE_DIR=str(folder),
        AITHER_STATE_DIR=str(folder / "state"),
        AITHER_NAMESPACE="bench" + uuid.uuid4().hex[:6],
    )
    ports = [free_port() for _ in range(3)]
    for name, ctx in (("one", 1024), ("two", 1536)):
        services = {
            "a": service(ports[0], 1024),
            "b": service(ports[1], 1024),
            "c": service(ports[2], ctx),
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"services": services}))

    smart, full, ready = [], [], {}
    overhead = []  # the switch's wall time beyond the changed service's own start-to-ready
    overhead_before = []  # the same, of --before's switch
    cli("profile", "switch", "one", "--yes", "--json")  # also the warm-up that writes bytecode
    if before is not None:
        cli("profile", "switch", "one", "--yes", "--json", tree=before)  # its bytecode
    try:
        for _ in range(rounds):
            for target in ("two", "one"):
                if before is not None:  # there and back again, each way's overhead counted
                    for there in (target, "one" if target == "two" else "two"):
                        began = time.monotonic()
                        result = cli("profile", "switch", there, "--yes", "--json", tree=before)
                        [changed] = result["services"]  # type: ignore[misc]
                        overhead_before.append(time.monotonic() - began - changed["seconds"])
                began = time.monotonic()
                result = cli("profile", "switch", target, "--yes", "--json")
                smart.append(time.monotonic() - began)
                for item in result.get("services", []):  # type: ignore[union-attr]
                    ready.setdefault(item["service"], []).append(item["seconds"])
                [changed] = result["services"]  # type: ignore[misc]
                overhead.append(smart[-1] - changed["seconds"])
                back = "one" if target == "two" else "two"
                began = time.monotonic()  # the naive way: stop all three, start all three
                cli("down", "--all", "--yes")
                result = cli("profile", "switch", back, "--yes", "--json")
                full.append(time.monotonic() - began)
                for item in result.get("services", []):  # type: ignore[union-attr]
                    ready.setdefault(item["service"], []).append(item["seconds"])
                cli("down", "--all", "--yes")
                cli("profile", "switch", target, "--yes", "--json")
    finally:
        cli("down", "--all", "--yes")
    print(
        f"switch, one of three changed (aitherctl): median {statistics.median(smart):.2f}s "
        f"over {len(smart)} runs {[round(x, 2) for x in smart]}"
    )
    print(
        f"stop all three + start all three:          median {statistics.median(full):.2f}s "
        f"over {len(full)} runs {[round(x, 2) for x in full]}"
    )
    ratio = statistics.median(full) / statistics.median(smart)
    print(f"ratio (full restart / aitherctl switch): {ratio:.2f}x")
    print(
        "switch overhead beyond the changed service's start-to-ready: median "
        f"{statistics.median(overhead):.2f}s {[round(x, 2) for x in overhead]} "
        "(target <= 0.5s)"
    )
    if overhead_before:
        print(
            f"  the same, {before}: median {statistics.median(overhead_before):.2f}s "
            f"{[round(x, 2) for x in overhead_before]}"
        )
    for name, times in sorted(ready.items()):
        median = statistics.median(times)
        print(f"  service {name}: ready in median {median:.2f}s ({len(times)} starts)")


if __name__ == "__main__":
    main()
