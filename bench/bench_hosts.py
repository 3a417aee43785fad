"""The cost of a switch over SSH against the same switch on a local socket.

The same profile, one small HTTP server (python3 -m http.server in the test base image, ready in
well under a second), is switched on and off with the real CLI (`aitherctl profile switch --yes`):
- local: the service on this machine's engine (the private test engine, a unix socket);
- ssh:   the service on node-a, reached as `ssh://root@node-a:2222` (scripts/test-hosts.sh: a
         private engine behind sshd on loopback, so the network adds nothing; what is measured is
         the SSH transport: one `ssh` process per Docker connection, key exchange, dial-stdio).
Each round times `switch on` (start + readiness) and `switch off` (stop + remove); the medians
and the differences are printed, and `--json` writes them.

    eval "$(bash scripts/test-env.sh)"; eval "$(bash scripts/test-hosts.sh)"
    python bench/bench_hosts.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

BASE_IMAGE = "aither-test/base:bookworm"


def profile(name: str, port: int, host: str | None, endpoint: str) -> dict[str, object]:
    service: dict[str, object] = {
        "engine": "generic", "image": BASE_IMAGE, "port": port, "gpu": "none",
        "args": ["python3", "-m", "http.server", str(port)],
        "health": {"path": "/", "timeout": 60},
    }
    document: dict[str, object] = {"name": name, "services": {"web": service}}
    if host:
        service["host"] = host
        document["hosts"] = {host: {"docker": endpoint, "address": "127.0.0.1"}}
    return document


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "aitherctl", *args], env=env, capture_output=True, text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"aitherctl {' '.join(args)} failed:\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    endpoint = os.environ.get("AITHER_TEST_HOST_A")
    if not endpoint:
        raise SystemExit('run eval "$(bash scripts/test-hosts.sh)" first')
    folder = Path(tempfile.mkdtemp(prefix="aither-bench-hosts-"))
    (folder / "profiles").mkdir()
    env = {
        **os.environ,
        "AITHER_NAMESPACE": "bench" + uuid.uuid4().hex[:6],
        "AITHER_STATE_DIR": str(folder / "state"),
        "AITHER_PROFILE_DIR": str(folder / "profiles"),
        "AITHER_MACHINE_DIR": str(folder / "machine"),
        "AITHER_DATA_DIR": str(folder / "data"),
    }
    port = 18590
    for name, host in (("on-local", None), ("on-ssh", "a")):
        text = yaml.safe_dump(profile(name, port, host, endpoint), sort_keys=False)
        (folder / "profiles" / f"{name}.yaml").write_text(text)
    (folder / "profiles" / "idle.yaml").write_text("name: idle\nservices: {}\n")
    results: dict[str, dict[str, list[float]]] = {
        "local": {"on": [], "off": []}, "ssh": {"on": [], "off": []}}
    for _ in range(options.rounds):
        for label, name in (("local", "on-local"), ("ssh", "on-ssh")):
            results[label]["on"].append(timed(["profile", "switch", name, "--yes"], env))
            results[label]["off"].append(timed(["profile", "switch", "idle", "--yes"], env))
    medians = {
        label: {step: statistics.median(values) for step, values in steps.items()}
        for label, steps in results.items()
    }
    print(f"{'':8}{'switch on':>12}{'switch off':>12}   (median of {options.rounds}, seconds)")
    for label in ("local", "ssh"):
        print(f"{label:8}{medians[label]['on']:>12.2f}{medians[label]['off']:>12.2f}")
    extra_on = medians["ssh"]["on"] - medians["local"]["on"]
    extra_off = medians["ssh"]["off"] - medians["local"]["off"]
    print(f"{'ssh − local':8}{extra_on:>+12.2f}{extra_off:>+12.2f}")
    if options.json:
        options.json.write_text(json.dumps({"rounds": results, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
