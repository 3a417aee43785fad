"""Where `aitherctl serve` spends its time per streamed request, per API path, on a real
llama.cpp server (issue 18's first-token bound, issue 24's Messages and Responses).

    python bench/profile_gateway.py                 # 200 requests per path: CPU µs per request
    python bench/profile_gateway.py --cprofile DIR  # the same under cProfile: DIR/serve.prof
    python bench/profile_gateway.py --paths chat,messages-native -n 50

One llama.cpp container (the test image with SmolLM2-135M, as bench_gateway.py starts it) and
one `aitherctl serve` on a temporary profile that declares it twice as an endpoint: `native`
(engine llamacpp: Messages and Responses passed through) and `translated` (engine openai: via
chat completions). One client, one request at a time, each streamed with 16 tokens at most.

What it reports per path: the CPU time of serve's event loop per request (its main thread's
user + system time from `/proc/PID/task/PID/stat` over N requests after a warm-up, less its
idle rate), which does not depend on how busy the machine is as a latency does, and the
client's median time to the first text beside the same request straight to llama.cpp (noisy
on a busy machine: say the load average beside it). With `--cprofile`, serve runs under
cProfile timed by the thread's CPU clock (`time.thread_time`: waiting for a core is not
counted) and the top functions by cumulative and own time are printed (`python -m pstats
DIR/serve.prof` reads it again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apis import bench_profile  # the sibling module, found through sys.path
from bench_gateway import (  # the sibling module, found through sys.path
    JSON_HEADERS,
    MAX_TOKENS,
    PROMPT,
    ROOT,
    free_port,
    percentile,
    spawn,
    start_llama,
    tail,
    wait_http,
)

# path name -> (route, model, the event/line that carries text, the end marker)
PATHS: dict[str, tuple[str, str]] = {
    "chat": ("chat/completions", "native"),
    "messages-native": ("messages", "native"),
    "messages-translated": ("messages", "translated"),
    "responses-native": ("responses", "native"),
    "responses-translated": ("responses", "translated"),
}
_TEXT = {
    "chat/completions": b'"content":"',
    "messages": b"content_block_delta",
    "responses": b"response.output_text.delta",
}
_END = {
    "chat/completions": (b"[DONE]",),
    "messages": (b"message_stop",),
    "responses": (b"response.completed", b"response.incomplete"),
}


def body(route: str, model: str) -> bytes:
    payload: dict[str, Any]
    if route == "messages":
        payload = {"max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}
    elif route == "responses":
        payload = {"max_output_tokens": MAX_TOKENS, "input": PROMPT}
    else:
        payload = {"max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}
    return json.dumps({"model": model, **payload, "stream": True, "temperature": 0}).encode()


async def stream_once(session: Any, url: str, route: str, data: bytes) -> float:
    """The time to the first text (s), or NaN when the stream failed."""
    started = time.perf_counter()
    ttft = math.nan
    try:
        async with session.post(url, data=data, headers=JSON_HEADERS) as resp:
            if resp.status != 200:
                await resp.read()
                return math.nan
            async for line in resp.content:
                if math.isnan(ttft) and _TEXT[route] in line:
                    ttft = time.perf_counter() - started
                if any(end in line for end in _END[route]):
                    return ttft
    except Exception:  # a failed request is counted, not raised
        return math.nan
    return math.nan


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process's main thread, the event loop's (s), from
    /proc/PID/task/PID/stat (fields 14 and 15): the worker threads (Docker observations, ledger
    writes) are left out, and so is the time the thread waited for a core."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_rate(pid: int, seconds: float = 5.0) -> float:
    """The loop's CPU seconds per second with no request (housekeeping), to subtract."""
    before, began = cpu_s(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_s(pid) - before) / (time.monotonic() - began)


async def measure(
    served: str, direct: str, pid: int, paths: list[str], n: int
) -> list[tuple[str, float, float, float, int]]:
    import aiohttp

    rows = []
    idle = await idle_rate(pid)
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    async with fresh, aiohttp.ClientSession() as kept:
        for name in paths:
            route, model = PATHS[name]
            data, raw = body(route, model), body(route, "smollm2")
            for _ in range(5):  # warm-up: imports, connections, the prompt cache
                await stream_once(kept, f"{served}/{route}", route, data)
                await stream_once(fresh, f"{direct}/{route}", route, raw)
            ours, theirs, failed = [], [], 0
            before, began = cpu_s(pid), time.monotonic()
            for _ in range(n):
                ttft = await stream_once(kept, f"{served}/{route}", route, data)
                if math.isnan(ttft):
                    failed += 1
                else:
                    ours.append(ttft)
            used = cpu_s(pid) - before - idle * (time.monotonic() - began)
            for _ in range(max(5, n // 4)):
                ttft = await stream_once(fresh, f"{direct}/{route}", route, raw)
                if not math.isnan(ttft):
                    theirs.append(ttft)
            rows.append(
                (name, used / n * 1e6, percentile(ours, 0.5), percentile(theirs, 0.5), failed)
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="requests per path")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--cprofile", type=Path, help="run serve under cProfile, into DIR")
    parser.add_argument("--llama-url", help="an existing llama.cpp server instead of a container")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    work = Path(tempfile.mkdtemp(prefix="aither-profile-gw-"))
    container = None
    if args.llama_url:
        llama_url = args.llama_url.rstrip("/")
    else:
        container, llama_url = start_llama(1, 2)
    gateway = None
    try:
        wait_http(llama_url + "/health", 180)
        env = bench_profile(work, llama_url, "bench/profile_gateway.py", "benchprof")
        python = ROOT / ".venv" / "bin" / "python"
        port = free_port()
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--profile", "bench"]
        if args.cprofile:
            args.cprofile.mkdir(parents=True, exist_ok=True)
            prof = args.cprofile.resolve() / "serve.prof"
            # Typer's entry point, not the console script's (which leaves through os._exit).
            code = (
                "import cProfile, sys, time; from aitherctl.cli.app import main; "
                "p = cProfile.Profile(time.thread_time); p.enable()\n"
                "try:\n    main()\nexcept SystemExit:\n    pass\n"
                f"p.disable(); p.dump_stats({str(prof)!r})"
            )
            argv = [str(python), "-c", code, *serve]
        else:
            argv = [str(python), "-m", "aitherctl", *serve]
        gateway = spawn("gateway", argv, work, env)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", 60, gateway.proc)
        except SystemExit:
            print(tail(gateway.log), file=sys.stderr)
            raise
        rows = asyncio.run(
            measure(
                f"http://127.0.0.1:{port}/v1", f"{llama_url}/v1", gateway.proc.pid, paths, args.n
            )
        )
        print(f"{args.n} requests per path, one client; load average {os.getloadavg()[0]:.2f}")
        print("path                   loop CPU/request   ttft p50 serve / direct   failed")
        for name, cpu_us, ours, theirs, failed in rows:
            print(
                f"{name:<22} {cpu_us:>11.0f} µs   {ours * 1e3:>8.2f} / {theirs * 1e3:.2f} ms "
                f"({(ours - theirs) * 1e3:+.2f})   {failed}"
            )
    finally:
        if gateway is not None:
            gateway.proc.send_signal(signal.SIGTERM)
            try:
                gateway.proc.wait(30)
            except subprocess.TimeoutExpired:
                gateway.proc.kill()
        if container is not None:
            subprocess.run(["docker", "rm", "-f", container], check=False, capture_output=True)
    if args.cprofile:
        import pstats

        stats = pstats.Stats(str(args.cprofile / "serve.prof"))
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(35)


if __name__ == "__main__":
    main()
