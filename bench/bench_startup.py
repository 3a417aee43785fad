"""Start-up and hot-path benchmark (issue 10): each `aitherctl` command against what a user would
otherwise type, run interleaved in one process, `--rounds` times (default 20), medians reported.

    eval "$(bash scripts/test-env.sh)"; python bench/bench_startup.py [--before /tmp/wt-before]

Groups (each round runs a group's members back to back, in an order that rotates every round):
- `aitherctl --version` and `aitherctl profile switch --help` against `python -c pass` (the same
  interpreter, so the difference is aitherctl's own start-up);
- `aitherctl ps --json` with three services running against `docker ps --format json`;
- `aitherctl run --direct PROMPT`, spawn to the first byte of the answer on stdout, against
  `curl` streaming the same prompt straight to the same llama.cpp server, spawn to the first
  content chunk of its stream;
- `aitherctl run PROMPT` while `aitherctl serve` runs (it goes through the gateway), against
  `curl` streaming the same prompt to the gateway.
The three services (a real llama.cpp server with SmolLM2 on the CPU and two tiny HTTP servers)
are started by `aitherctl profile switch` in a private namespace and removed at the end. They are
the user's own profile file in the profile folder, `mine.yaml`, that `extends: cpu` (the built-in
profile, its routing and cloud endpoints included) and only points its `assistant` at the test
image and model, as a user's first profile does (issue 20: measured with a stand-alone profile,
`run` looked 28 ms faster than users see it).

`--before TREE` runs every aitherctl command from another source tree too (a git worktree of an
older commit, put first on PYTHONPATH), interleaved with the current one, so both see the same
load. Commands run as a user's installed copy does: the `aitherctl` console script, with bytecode
caches (kept in a private PYTHONPYCACHEPREFIX, written during the warm-up rounds; this project's
shells set PYTHONDONTWRITEBYTECODE, which would compile every module on every start).
The machine's load average is printed with the results: on a shared machine, compare numbers
from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = os.environ.get("AITHER_TEST_MODELS", "/var/cache/aitherctl-test/models")
MODEL = os.environ.get("AITHER_TEST_MODEL_FILE", "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT = "Name one colour."
MAX_TOKENS = 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def profile_text(ports: list[int]) -> str:
    """`mine.yaml`: the built-in `cpu` profile, its `assistant` on the test image and port."""
    llama, web1, web2 = ports
    services: dict[str, Any] = {
        "assistant": {
            "image": "aither-test/llamacpp:latest",
            "model": f"/models/{MODEL}",
            "port": llama,
            "args": ["--ctx-size", "1024", "--threads", "1"],
            "volumes": {MODELS: "/models:ro"},
            "health": {"timeout": 120},
        },
    }
    for name, port in (("web1", web1), ("web2", web2)):
        services[name] = {
            "engine": "generic",
            "image": "aither-test/base:bookworm",
            "port": port,
            "gpu": "none",
            "args": ["python3", "-m", "http.server", str(port)],
            "health": {"path": "/", "timeout": 30},
        }
    document = {"name": "mine", "extends": "cpu", "services": services}
    return json.dumps(document, indent=2)  # JSON is YAML


class Runner:
    """Runs one tree's `aitherctl` as a user would (console script, bytecode cached)."""

    def __init__(self, tree: Path, env: dict[str, str], cwd: Path) -> None:
        self.tree = tree
        self.env = {**env, "PYTHONPATH": str(tree)}
        self.cwd = cwd
        script = Path(sys.executable).with_name("aitherctl")
        self.argv0 = [str(script)] if script.exists() else [sys.executable, "-m", "aitherctl"]

    def wall(self, *args: str) -> float:
        return wall([*self.argv0, *args], self.env, self.cwd)

    def first_byte(self, *args: str) -> float:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*self.argv0, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
        )
        assert process.stdout is not None
        first = process.stdout.read(1)
        elapsed = time.perf_counter() - started
        rest = process.stdout.read()
        process.wait()
        if process.returncode != 0 or not first:
            raise SystemExit(f"aitherctl {' '.join(args)} exited {process.returncode}: {rest!r}")
        return elapsed

    def check(self, *args: str) -> str:
        done = subprocess.run(
            [*self.argv0, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"aitherctl {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout


def wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-400:]!r}")
    return elapsed


def curl_first_content(url: str, env: dict[str, str], cwd: Path) -> float:
    """Spawn `curl -N` streaming a chat completion; seconds to the first chunk with content."""
    body = json.dumps(
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            "curl",
            "-sN",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            f"{url}/v1/chat/completions",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )
    assert process.stdout is not None
    elapsed = None
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()):
            elapsed = time.perf_counter() - started
            break
    process.stdout.read()
    process.wait()
    if elapsed is None:
        raise SystemExit("curl: no content in the stream")
    return elapsed


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--before", type=Path, help="an older source tree to compare with")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--only", help="measure only the groups whose name contains this")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aither-bench-startup-"))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        AITHER_NAMESPACE="bench-startup-" + uuid.uuid4().hex[:6],
        AITHER_PROFILE_DIR=str(work / "profiles"),
        AITHER_STATE_DIR=str(work / "state"),
        AITHER_DATA_DIR=str(work / "data"),
        AITHER_MACHINE_DIR=str(work / "machine"),
        PYTHONPYCACHEPREFIX=str(work / "pycache"),
        NO_COLOR="1",
    )
    env.pop("AITHER_GPU_PROFILE", None)
    (work / "profiles").mkdir()
    ports = [free_port() for _ in range(3)]
    (work / "profiles" / "mine.yaml").write_text(profile_text(ports), encoding="utf-8")
    llama_url = f"http://127.0.0.1:{ports[0]}"
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"

    trees = {"after": Runner(ROOT, env, work)}
    if args.before:
        trees["before"] = Runner(args.before.resolve(), env, work)
    python = [sys.executable, "-c", "pass"]
    docker = shutil.which("docker")
    if docker is None:
        raise SystemExit("the docker CLI is needed for the ps comparison")

    groups: dict[str, dict[str, Callable[[], float]]] = {
        "--version": {"python -c pass": lambda: wall(python, env, work)},
        "profile switch --help": {"python -c pass": lambda: wall(python, env, work)},
        "ps --json (3 services)": {
            "docker ps --format json": lambda: wall([docker, "ps", "--format", "json"], env, work)
        },
        "run first byte": {
            "curl (straight to llama.cpp)": lambda: curl_first_content(llama_url, env, work)
        },
        "run first byte via serve": {
            "curl (to aitherctl serve)": lambda: curl_first_content(gateway_url, env, work)
        },
    }
    for name, runner in trees.items():
        groups["--version"][f"aitherctl ({name})"] = lambda r=runner: r.wall("--version")
        groups["profile switch --help"][f"aitherctl ({name})"] = lambda r=runner: r.wall(
            "profile", "switch", "--help"
        )
        groups["ps --json (3 services)"][f"aitherctl ({name})"] = lambda r=runner: r.wall(
            "ps", "--json"
        )
        groups["run first byte"][f"aitherctl ({name})"] = lambda r=runner: r.first_byte(
            "run", "--direct", PROMPT
        )
    groups["run first byte via serve"]["aitherctl (after)"] = lambda: trees["after"].first_byte(
        "run", PROMPT
    )

    if args.only:
        groups = {name: members for name, members in groups.items() if args.only in name}
    load_before = os.getloadavg()
    after = trees["after"]
    print(f"starting three services in namespace {env['AITHER_NAMESPACE']}", file=sys.stderr)
    try:
        after.check("profile", "switch", "mine", "--yes")
        listing = json.loads(after.check("ps", "--json"))
        states = sorted(
            (row["service"], row["state"], row["health"]) for row in listing["services"]
        )
        expected = [(name, "running", "healthy") for name in ("assistant", "web1", "web2")]
        if states != expected:
            raise SystemExit(f"services not up: {states}")
        gateway = subprocess.Popen(
            [*after.argv0, "serve", "--port", str(gateway_port), "--profile", "mine"],
            env=after.env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", gateway_port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        for _ in range(2):  # warm-up: bytecode caches, the server's prompt cache
            for members in groups.values():
                for measure in members.values():
                    measure()
        samples: dict[str, dict[str, list[float]]] = {
            group: {member: [] for member in members} for group, members in groups.items()
        }
        for index in range(args.rounds):
            for group, members in groups.items():
                names = list(members)
                shift = index % len(names)
                for member in names[shift:] + names[:shift]:
                    samples[group][member].append(members[member]())
            print(f"round {index + 1}/{args.rounds}", file=sys.stderr)
    finally:
        if "gateway" in locals():
            gateway.terminate()
            gateway.wait(timeout=60)
        subprocess.run(
            [*after.argv0, "down", "--all", "--yes"],
            env=after.env,
            cwd=work,
            capture_output=True,
            check=False,
        )
        left = subprocess.run(
            [
                docker,
                "ps",
                "-aq",
                "--filter",
                f"label=ai.aitherctl.namespace={env['AITHER_NAMESPACE']}",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if left:
            subprocess.run([docker, "rm", "-f", *left], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    summary: dict[str, Any] = {
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_average_1_5_15_before": [round(x, 2) for x in load_before],
        "load_average_1_5_15_after": [round(x, 2) for x in load_after],
        "median_ms": {
            group: {m: ms(v) for m, v in members.items()} for group, members in samples.items()
        },
        "median_paired_difference_ms": {},
    }
    for group, members in samples.items():
        baseline_name = next(iter(members))
        baseline = members[baseline_name]
        summary["median_paired_difference_ms"][group] = {
            f"{member} - {baseline_name}": ms(
                [a - b for a, b in zip(values, baseline, strict=True)]
            )
            for member, values in members.items()
            if member != baseline_name
        }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
