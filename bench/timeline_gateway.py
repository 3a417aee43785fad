"""Where the first token's time goes through `aitherctl serve`, stage by stage, beside a minimal
aiohttp pass-through and the same request straight to llama.cpp (issue 18's first-token bound).

    python bench/timeline_gateway.py                       # 60 requests per way, chat
    python bench/timeline_gateway.py -n 30 --paths chat,messages-native,responses-translated
    python bench/timeline_gateway.py --baseline main     # also serve as of a git revision

One llama.cpp container (the test image with SmolLM2-135M, as bench_gateway.py starts it), one
`aitherctl serve` on bench_apis.py's profile (the server as endpoint `native`, engine llamacpp,
and `translated`, engine openai) and bench_http_stack.py's aiohttp pass-through (`proto`), both
started with AITHER_SERVE_TIMELINE=FILE (aitherctl/serve/timeline.py): each request records
`perf_counter_ns` at every stage (arrived, body parsed, route resolved, cost bound reserved,
admitted, upstream connection taken or opened, request sent, answer's head, each of its first
chunks, the client's head prepared, each of the first chunks written back). One client sends one
request at a time, the ways interleaved (their order rotating every round), and passes its send
time in a header (CLOCK_MONOTONIC: the same clock in every process on the machine); it records
the answer's head and the first event that carries text.

With `--baseline REV`, a second `serve` runs the package as of that revision (`git archive` into
a temporary folder, put first on PYTHONPATH), measured in the same run as `serve`, interleaved
with it: before and after a change, on the same machine at the same time.

Printed per way: the median time of each stage from the client's send, and the median of each
step (a stage minus the one before it). Compare the ways of one run only, and say the load
average beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apis import bench_profile  # the sibling module, found through sys.path
from bench_apis import body as api_body
from bench_gateway import (  # the sibling module, found through sys.path
    JSON_HEADERS,
    ROOT,
    chat_body,
    free_port,
    gateway_argv,
    new_session,
    rotated,
    spawn,
    start_llama,
    tail,
    wait_http,
)

T0_HEADER = "x-aither-timeline-t0"  # aitherctl.serve.timeline.CLIENT_T0_HEADER
# path -> (route, model through serve, the text event's marker)
PATHS = {
    "chat": ("chat/completions", "native", b'"content":"'),
    "messages-native": ("messages", "native", b"text_delta"),
    "messages-translated": ("messages", "translated", b"text_delta"),
    "responses-native": ("responses", "native", b"response.output_text.delta"),
    "responses-translated": ("responses", "translated", b"response.output_text.delta"),
}


async def one(session: Any, url: str, data: bytes, text_marker: bytes) -> dict[str, int]:
    """One streamed request: the client's own marks (perf_counter_ns)."""
    t0 = time.perf_counter_ns()
    marks = {"client_sent": t0}
    headers = {**JSON_HEADERS, T0_HEADER: str(t0)}
    async with session.post(url, data=data, headers=headers) as resp:
        marks["client_got_head"] = time.perf_counter_ns()
        if resp.status != 200:
            raise SystemExit(f"{url}: HTTP {resp.status}: {(await resp.read())[:300]!r}")
        async for line in resp.content:
            if "client_got_byte" not in marks:
                marks["client_got_byte"] = time.perf_counter_ns()
            if text_marker in line and b'"content":""' not in line:
                marks.setdefault("client_got_text", time.perf_counter_ns())
        marks["client_got_end"] = time.perf_counter_ns()
    return marks


def read_lines(path: Path) -> dict[int, list[tuple[str, int]]]:
    """The server's timelines by the client's send time."""
    found: dict[int, list[tuple[str, int]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            marks = [tuple(m) for m in json.loads(line)]
            if marks and marks[0][0] == "client_sent":
                found[int(marks[0][1])] = marks  # type: ignore[assignment]
    return found


def report(name: str, runs: list[list[tuple[str, int]]]) -> None:
    """Median of each stage from the send, and of each step."""
    order: list[str] = []
    since: dict[str, list[float]] = {}
    step: dict[str, list[float]] = {}
    for run in runs:
        marks = sorted(run, key=lambda m: m[1])
        t0 = marks[0][1]
        prev = t0
        for stage, t in marks:
            if stage not in since:
                since[stage], step[stage] = [], []
                if stage not in order:
                    order.append(stage)
            since[stage].append((t - t0) / 1e6)
            step[stage].append((t - prev) / 1e6)
            prev = t
    order.sort(key=lambda s: statistics.median(since[s]))
    # The proxy's own share of one request: before its upstream connection is asked for, and
    # from the first upstream chunk to the client having the text (the rest is the upstream's,
    # as in a direct request). Per request, so the model's own variation drops out.
    own, before, after = [], [], []
    for run in runs:
        got = dict(run)
        asked = got.get("upstream_conn_queued") or got.get("upstream_conn_create_start")
        asked = asked or got.get("upstream_conn_reused")
        if asked and "upstream_chunk1" in got and "client_got_text" in got:
            before.append((asked - got["client_sent"]) / 1e6)
            after.append((got["client_got_text"] - got["upstream_chunk1"]) / 1e6)
            own.append(before[-1] + after[-1])
    if own:
        quartiles = statistics.quantiles(own, n=4)
        print(
            f"\n{name}: own time (before the upstream connection + first chunk to the client's "
            f"text) p50 {quartiles[1]:.3f} ms (p25 {quartiles[0]:.3f}, p75 {quartiles[2]:.3f}); "
            f"before p50 {statistics.median(before):.3f}, after p50 {statistics.median(after):.3f}"
        )
    print(f"\n{name} ({len(runs)} requests): median ms since the client sent / step")
    for stage in order:
        n = len(since[stage])
        print(
            f"  {stage:28s} {statistics.median(since[stage]):8.3f}  "
            f"{statistics.median(step[stage]):+8.3f}" + (f"  (n={n})" if n != len(runs) else "")
        )


async def measure(ways: dict[str, tuple[str, bytes, bytes]], n: int) -> dict[str, list[Any]]:
    sessions = {name: new_session(force_close=name.startswith("direct")) for name in ways}
    got: dict[str, list[Any]] = {name: [] for name in ways}
    try:
        for name, (url, data, marker) in ways.items():  # warm-up
            for _ in range(5):
                await one(sessions[name], url, data, marker)
        for round_no in range(n):
            # The order rotates: the request after a direct one (whose connection to llama.cpp
            # closes as it ends) would otherwise always be the same way's.
            for name in rotated(list(ways), round_no):
                url, data, marker = ways[name]
                got[name].append(await one(sessions[name], url, data, marker))
    finally:
        for session in sessions.values():
            await session.close()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=60, help="requests per way")
    parser.add_argument("--paths", default="chat")
    parser.add_argument("--llama-threads", type=int, default=1)
    parser.add_argument("--baseline", metavar="REV", help="also serve as of this git revision")
    args = parser.parse_args()
    paths = args.paths.split(",")

    work = Path(tempfile.mkdtemp(prefix="aither-bench-timeline-"))
    container, llama_url = start_llama(args.llama_threads, 4)
    servers = []
    try:
        wait_http(llama_url + "/health", 180)
        env = bench_profile(work, llama_url, "bench/timeline_gateway.py", "benchtl")
        names = ["serve", "proto"] + (["base"] if args.baseline else [])
        files = {name: work / f"{name}.timeline" for name in names}
        ports = {name: free_port() for name in names}
        argv = {
            "serve": gateway_argv("aitherctl", ports["serve"], None, None, Path(sys.executable)),
            "proto": gateway_argv(
                "proto-aiohttp", ports["proto"], llama_url, None, Path(sys.executable)
            ),
        }
        extra: dict[str, dict[str, str]] = {name: {} for name in names}
        if args.baseline:
            tree = work / "baseline"
            tree.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline, "aitherctl"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            argv["base"] = [
                sys.executable,
                "-m",
                "aitherctl",
                *argv["serve"][1:],
            ]
            argv["base"][argv["base"].index("--port") + 1] = str(ports["base"])
            extra["base"] = {
                "PYTHONPATH": str(tree),
                # Its own state (one `serve` per profile and state folder) and namespace.
                "AITHER_STATE_DIR": str(work / "base-state"),
                "AITHER_DATA_DIR": str(work / "base-data"),
                "AITHER_MACHINE_DIR": str(work / "base-machine"),
                "AITHER_NAMESPACE": env["AITHER_NAMESPACE"] + "b",
            }
        for name in names:
            server = spawn(
                name,
                argv[name],
                work,
                {**env, **extra[name], "AITHER_SERVE_TIMELINE": str(files[name])},
            )
            servers.append(server)
            try:
                wait_http(f"http://127.0.0.1:{ports[name]}/health", 60, server.proc)
            except SystemExit:
                print(tail(server.log), file=sys.stderr)
                raise
        ways: dict[str, tuple[str, bytes, bytes]] = {}
        for path in paths:
            route, model, marker = PATHS[path]
            api = route.split("/")[0]

            def data(model: str, route: str = route, api: str = api) -> bytes:
                return chat_body(model) if route == "chat/completions" else api_body(api, model)

            ways[f"direct {path}"] = (f"{llama_url}/v1/{route}", data("smollm2"), marker)
            for name in names:
                if name != "proto":
                    ways[f"{name} {path}"] = (
                        f"http://127.0.0.1:{ports[name]}/v1/{route}",
                        data(model),
                        marker,
                    )
            if path == "chat":
                ways["proto chat"] = (
                    f"http://127.0.0.1:{ports['proto']}/v1/{route}",
                    data("llama"),
                    marker,
                )
        with open("/proc/loadavg") as fh:
            load = fh.read().split()[:3]
        got = asyncio.run(measure(ways, args.n))
        for server in servers:
            server.stop()
        print(f"load average before: {' '.join(load)}; {args.n} requests per way")
        lines = {name: read_lines(file) for name, file in files.items()}
        for way, client_runs in got.items():
            runs = []
            server_lines = lines[way.split()[0]] if not way.startswith("direct") else {}
            for marks in client_runs:
                merged = dict(marks)
                for stage, t in server_lines.get(marks["client_sent"], []):
                    merged.setdefault(stage, t)
                runs.append(list(merged.items()))
            report(way, runs)
    finally:
        for server in servers:
            server.stop()
        subprocess.run(
            ["docker", "rm", "-f", container],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"logs in {work}", file=sys.stderr)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
