"""The cost of a switch over SSH against the same switch on a local socket.

The same profile, one small HTTP server (python3 -m http.server in the test base image, ready in
well under a second), is switched on and off with the real CLI (`aitherctl profile switch --yes`):
- local:     the service on this machine's engine (the private test engine, a unix socket);
- ssh warm:  the service on node-a, reached as `ssh://root@node-a:2222` (scripts/test-hosts.sh: a
             private engine behind sshd on loopback, so the network adds nothing; what is measured
             is the SSH transport), with the master connection of the previous command reused
             (what a user sees for commands less than a minute apart);
- ssh cold:  the same, the master stopped (`ssh -O exit`) before each command: one SSH login;
- ssh no-mux: the same with AITHER_SSH_MULTIPLEX=0: kept-alive connections, no master;
- before:    with `--before TREE`, the ssh switch run by the aitherctl in TREE (a git worktree of
             an older commit: the Docker SDK's own ssh transport).
Each round times `switch on` (start + readiness) and `switch off` (stop + remove) of every
variant, interleaved, and counts the `ssh` processes each command started (a wrapper named `ssh`
first on PATH logs them). Medians, differences against local, and `--json` writes everything.

    eval "$(bash scripts/test-env.sh)"; eval "$(bash scripts/test-hosts.sh)"
    git worktree add --detach /tmp/wt-before <older commit>     # optional
    python bench/bench_hosts.py [--rounds 5] [--before /tmp/wt-before] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
        "engine": "generic",
        "image": BASE_IMAGE,
        "port": port,
        "gpu": "none",
        "args": ["python3", "-m", "http.server", str(port)],
        "health": {"path": "/", "timeout": 60},
    }
    document: dict[str, object] = {"name": name, "services": {"web": service}}
    if host:
        service["host"] = host
        document["hosts"] = {host: {"docker": endpoint, "address": "127.0.0.1"}}
    return document


def timed(args: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "aitherctl", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"aitherctl {' '.join(args)} failed:\n{done.stderr}")
    return elapsed


def ssh_counter(folder: Path) -> tuple[Path, Path]:
    """A folder holding an `ssh` that logs its arguments to the returned file, then runs ssh."""
    real = shutil.which("ssh")
    if real is None:
        raise SystemExit("no ssh client")
    (folder / "bin").mkdir()
    log = folder / "ssh.log"
    wrapper = folder / "bin" / "ssh"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return folder / "bin", log


def spawned(log: Path) -> int:
    """ssh processes for the engine started since the last call (`ssh -O` ones not counted)."""
    if not log.exists():
        return 0
    count = sum("dial-stdio" in line for line in log.read_text().splitlines())
    log.write_text("")
    return count


def stop_master(endpoint: str, env: dict[str, str]) -> None:
    """`ssh -O exit` on the master aitherctl keeps for `endpoint` under `env`'s state folder."""
    from aitherctl.docker.ssh_transport import SshTarget, control_path

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        path = control_path(endpoint)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if path:
        subprocess.run(
            ["ssh", "-o", f"ControlPath={path}", "-O", "exit", SshTarget.parse(endpoint).host],
            capture_output=True,
            check=False,
            timeout=10,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="a worktree whose aitherctl is 'before'")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    endpoint = os.environ.get("AITHER_TEST_HOST_A")
    if not endpoint:
        raise SystemExit('run eval "$(bash scripts/test-hosts.sh)" first')
    folder = Path(tempfile.mkdtemp(prefix="aither-bench-hosts-"))
    (folder / "profiles").mkdir()
    wrapper, log = ssh_counter(folder)
    env = {
        **os.environ,
        "PATH": f"{wrapper}{os.pathsep}{os.environ['PATH']}",
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
    # label → (profile, environment, working folder, stop the master before each command)
    variants: dict[str, tuple[str, dict[str, str], Path | None, bool]] = {
        "local": ("on-local", env, None, False),
        "ssh warm": ("on-ssh", env, None, False),
        "ssh cold": ("on-ssh", env, None, True),
        "ssh no-mux": ("on-ssh", {**env, "AITHER_SSH_MULTIPLEX": "0"}, None, False),
    }
    if options.before:
        variants["before"] = ("on-ssh", env, options.before.resolve(), False)
    times: dict[str, dict[str, list[float]]] = {v: {"on": [], "off": []} for v in variants}
    spawns: dict[str, dict[str, list[int]]] = {v: {"on": [], "off": []} for v in variants}
    timed(["profile", "switch", "on-ssh", "--yes"], env)  # warm-up: images, the first master
    timed(["profile", "switch", "idle", "--yes"], env)
    for _ in range(options.rounds):
        for label, (name, variant_env, cwd, cold) in variants.items():
            for step, target in (("on", name), ("off", "idle")):
                if cold:
                    stop_master(endpoint, env)
                spawned(log)
                times[label][step].append(
                    timed(["profile", "switch", target, "--yes"], variant_env, cwd)
                )
                spawns[label][step].append(spawned(log))
    medians = {
        label: {step: statistics.median(values) for step, values in steps.items()}
        for label, steps in times.items()
    }
    print(
        f"{'':12}{'switch on':>11}{'switch off':>11}{'ssh on':>8}{'ssh off':>8}"
        f"   (median of {options.rounds}: seconds, ssh processes started)"
    )
    for label in variants:
        on, off = medians[label]["on"], medians[label]["off"]
        ssh_on = statistics.median(spawns[label]["on"])
        ssh_off = statistics.median(spawns[label]["off"])
        extra = (
            f"   {on - medians['local']['on']:+.2f} / {off - medians['local']['off']:+.2f}"
            if label != "local"
            else ""
        )
        print(f"{label:12}{on:>11.2f}{off:>11.2f}{ssh_on:>8g}{ssh_off:>8g}{extra}")
    if options.json:
        options.json.write_text(
            json.dumps({"times": times, "spawns": spawns, "medians": medians}, indent=1)
        )


if __name__ == "__main__":
    main()
