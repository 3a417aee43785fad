"""Benchmark of `aitherctl run` against a direct streaming request to the same llama.cpp server.

    python bench/bench_run.py                 # starts its own llama.cpp container (test image)
    python bench/bench_run.py --url http://127.0.0.1:8090 --model smollm2   # an existing server
    python bench/bench_run.py --effort-only   # only the effort score's agreement

Three measurements per round, interleaved (the order alternates each round), same prompt,
`temperature: 0`, same `max_tokens`:
- direct: a fresh httpx client streams `POST /v1/chat/completions` itself; time to the first
  content chunk and to `[DONE]`;
- routed: the same request through the router in-process (`open_router` + `Router.run`: profile
  routing table, health probe, ledger row), from before the router is built to its first token;
  the difference to `direct` is the routing overhead apart from the interpreter's start;
- command: the whole `python -m aitherctl run --profile bench PROMPT` process: wall time, and
  time from spawning it to the first byte of the answer on its stdout.
And the effort score's agreement with tests/data/effort_labelled.yaml (the set it was tuned on)
and with tests/data/effort_holdout.yaml (written after tuning, never tuned against). Prints the
summary and writes it as JSON with `--json-out FILE`.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LLAMA_IMAGE = "aither-test/llamacpp:latest"
MODELS_DIR = os.environ.get("AITHER_TEST_MODELS", "/var/cache/aitherctl-test/models")
MODEL_FILE = os.environ.get("AITHER_TEST_MODEL_FILE", "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT = "Name three colours of the rainbow."


def effort_agreement(name: str) -> dict[str, Any]:
    import yaml

    from aitherctl.routing.static_embedding import score_effort
    from aitherctl.routing.table import DEFAULT_TIER_EFFORTS, tier_for_effort_default

    tiers = [name for name, _ in DEFAULT_TIER_EFFORTS]
    rows = yaml.safe_load((ROOT / "tests/data" / name).read_text(encoding="utf-8"))
    exact = near = 0
    per_tier: dict[str, list[int]] = {t: [0, 0] for t in tiers}
    started = time.perf_counter()
    for row in rows:
        got = tier_for_effort_default(score_effort(row["prompt"]).score)
        exact += got == row["tier"]
        near += abs(tiers.index(got) - tiers.index(row["tier"])) <= 1
        per_tier[row["tier"]][0] += got == row["tier"]
        per_tier[row["tier"]][1] += 1
    elapsed = time.perf_counter() - started
    return {
        "prompts": len(rows),
        "exact_agreement": round(exact / len(rows), 4),
        "within_one_tier": round(near / len(rows), 4),
        "per_tier": {t: f"{ok}/{n}" for t, (ok, n) in per_tier.items()},
        "score_us_per_prompt": round(elapsed / len(rows) * 1e6, 1),
    }


def start_llama() -> tuple[Any, str]:
    import docker

    client = docker.from_env()
    name = f"aither-bench-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(
        LLAMA_IMAGE,
        [
            "-m",
            f"/models/{MODEL_FILE}",
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--metrics",
            "--alias",
            "smollm2",
            "--ctx-size",
            "2048",
            "--threads",
            "2",
        ],
        name=name,
        detach=True,
        labels={"ai.aitherctl.bench": "true"},
        ports={"8080/tcp": ("127.0.0.1", None)},
        volumes={MODELS_DIR: {"bind": "/models", "mode": "ro"}},
    )
    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return container, url


def wait_ready(url: str, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} did not become healthy in {timeout_s:.0f}s")


def direct_once(url: str, model: str, max_tokens: int) -> tuple[float, float]:
    import httpx
    from httpx_sse import connect_sse

    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    started = time.perf_counter()
    ttft = None
    # Built like the router's own client for local servers (no TLS context), so the difference
    # measures the routing work, not the client's construction.
    plain = httpx.HTTPTransport(verify=False)
    with (
        httpx.Client(transport=plain) as client,
        connect_sse(client, "POST", url + "/v1/chat/completions", json=body, timeout=60) as source,
    ):
        for event in source.iter_sse():
            if event.data == "[DONE]":
                break
            chunk = json.loads(event.data)
            for choice in chunk.get("choices") or ():
                if ttft is None and (choice.get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - started
    total = time.perf_counter() - started
    return (ttft if ttft is not None else total), total


def routed_once(profile_name: str, max_tokens: int) -> tuple[float, float]:
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.routing.router import RunOptions, open_router

    started = time.perf_counter()
    first: list[float] = []

    def on_text(_: str) -> None:
        if not first:
            first.append(time.perf_counter() - started)

    profile = ProfileCatalog().load(profile_name)
    with open_router(profile) as router:
        router.run(RunOptions(PROMPT, max_tokens=max_tokens, temperature=0.0), on_text)
    total = time.perf_counter() - started
    return (first[0] if first else total), total


def command_once(profile_name: str, max_tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aitherctl",
            "run",
            "--profile",
            profile_name,
            "--max-tokens",
            str(max_tokens),
            "--temperature",
            "0",
            PROMPT,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert process.stdout is not None
    process.stdout.read(1)
    first = time.perf_counter() - started
    process.stdout.read()
    process.wait()
    total = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"aitherctl run exited {process.returncode}")
    return first, total


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing llama.cpp server (default: start one)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--effort-only", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    summary: dict[str, Any] = {
        "effort_labelled": effort_agreement("effort_labelled.yaml"),
        "effort_holdout": effort_agreement("effort_holdout.yaml"),
    }
    if not args.effort_only:
        container = None
        url = args.url
        if url is None:
            container, url = start_llama()
        else:
            wait_ready(url)
        work = Path(tempfile.mkdtemp(prefix="aither-bench-"))
        for key, sub in (
            ("AITHER_PROFILE_DIR", "profiles"),
            ("AITHER_DATA_DIR", "data"),
            ("AITHER_STATE_DIR", "state"),
        ):
            os.environ[key] = str(work / sub)
        (work / "profiles").mkdir(parents=True)
        (work / "profiles/bench.yaml").write_text(
            "name: bench\nservices: {}\n"
            "routing:\n  tiers:\n    all: {effort: 1-10, candidates: [llama]}\n"
            f"endpoints:\n  llama: {{base_url: '{url}/v1', model: {args.model}, "
            "engine: llamacpp, health: /health}\n",
            encoding="utf-8",
        )
        try:
            for _ in range(3):  # warm the server's caches and our imports
                direct_once(url, args.model, args.max_tokens)
                routed_once("bench", args.max_tokens)
            direct: list[tuple[float, float]] = []
            routed: list[tuple[float, float]] = []
            command: list[tuple[float, float]] = []
            for index in range(args.pairs):
                order = [0, 1, 2] if index % 2 == 0 else [2, 1, 0]
                for which in order:
                    if which == 0:
                        direct.append(direct_once(url, args.model, args.max_tokens))
                    elif which == 1:
                        routed.append(routed_once("bench", args.max_tokens))
                    else:
                        command.append(command_once("bench", args.max_tokens))
            overhead = [r[0] - d[0] for r, d in zip(routed, direct, strict=True)]
            summary["run"] = {
                "pairs": args.pairs,
                "max_tokens": args.max_tokens,
                "direct_ttft_ms_median": ms([d[0] for d in direct]),
                "direct_total_ms_median": ms([d[1] for d in direct]),
                "routed_ttft_ms_median": ms([r[0] for r in routed]),
                "routed_total_ms_median": ms([r[1] for r in routed]),
                "ttft_overhead_ms_median": ms(overhead),
                "total_overhead_ms_median": ms(
                    [r[1] - d[1] for r, d in zip(routed, direct, strict=True)]
                ),
                "command_first_byte_ms_median": ms([c[0] for c in command]),
                "command_wall_ms_median": ms([c[1] for c in command]),
            }
        finally:
            if container is not None:
                container.remove(force=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
