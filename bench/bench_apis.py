"""First-token overhead of Anthropic Messages and OpenAI Responses requests through `aitherctl
serve` against the same request straight to llama.cpp (issue 24), with chat completions measured
the same way beside them.

    python bench/bench_apis.py            # 5 interleaved rounds of 40 requests per way and API
    python bench/bench_apis.py --quick    # 2 rounds of 5, to check the harness

One real llama.cpp server (the test image with SmolLM2-135M, as bench_gateway.py starts it) and
one `aitherctl serve` (the `.venv` next to this file, else `aitherctl` on PATH) on a temporary
profile that declares the server twice as an endpoint: `native` (engine llamacpp: the request
is passed through to llama.cpp's own /v1/messages and /v1/responses) and `translated` (engine
openai: the request is translated to chat completions and the answer's stream back). Three ways
to the same server, the order rotating every round, one client (aiohttp, keep-alive), one request
at a time:
- direct: llama.cpp's /v1/messages or /v1/responses (a fresh connection each: the server may
  close a kept-alive one after a stream);
- native: through serve, passed through;
- translated: through serve, via llama.cpp's /v1/chat/completions.

Each request streams (`max_tokens` / `max_output_tokens` 16, temperature 0, a short prompt).
TTFT is the time from sending to the first event that carries text (`content_block_delta` with
a `text_delta`; `response.output_text.delta`); total is the time to the API's last event
(`message_stop`; `response.completed` or `response.incomplete`). Reported: p50 and p95 of each,
and the overhead (way minus direct) at the same percentile. The bound is chat's (issue 8): p50
TTFT overhead at most 2 ms at one client. Compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import (  # the sibling module, found through sys.path
    JSON_HEADERS,
    MAX_TOKENS,
    PROMPT,
    ROOT,
    free_port,
    percentile,
    rotated,
    spawn,
    start_llama,
    tail,
    wait_http,
)

WAYS = ("direct", "native", "translated")
# chat: the same harness on chat completions, the API whose bound this is (issue 8), so the
# three are compared like with like (bench_gateway.py and timeline_gateway.py measure chat
# their own ways).
APIS = ("messages", "responses", "chat")
ROUTES = {"messages": "messages", "responses": "responses", "chat": "chat/completions"}
_TEXT_EVENTS = {"messages": b"content_block_delta", "responses": b"response.output_text.delta"}
_END_EVENTS = {
    "messages": (b"message_stop",),
    "responses": (b"response.completed", b"response.incomplete"),
}


def _chat_text(line: bytes) -> bool:
    """A chat completions chunk that carries text (`choices[0].delta.content` not empty)."""
    if not line.startswith(b"data:") or b'"content"' not in line:
        return False
    try:
        choices = json.loads(line[5:]).get("choices") or [{}]
    except ValueError:
        return False
    return bool((choices[0].get("delta") or {}).get("content"))


def body(api: str, model: str) -> bytes:
    if api == "messages":
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": PROMPT}],
        }
    elif api == "chat":
        payload = {
            "model": model,
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": PROMPT}],
        }
    else:
        payload = {"model": model, "max_output_tokens": MAX_TOKENS, "input": PROMPT}
    return json.dumps({**payload, "stream": True, "temperature": 0}).encode()


async def stream_once(session: Any, url: str, api: str, data: bytes) -> tuple[float, float, str]:
    """(TTFT s, total s, error or ""): one streamed request, read event by event, then to the
    end of the response as the official SDKs read it (so their connection is kept alive; one
    left unread at the last event is closed, and the next request pays a new connection)."""
    started = time.perf_counter()
    ttft = total = math.nan
    try:
        async with session.post(url, data=data, headers=JSON_HEADERS) as resp:
            if resp.status != 200:
                await resp.read()
                return math.nan, math.nan, f"HTTP {resp.status}"
            async for line in resp.content:
                if not math.isnan(total):
                    continue  # after the last event: read to the end of the response
                if api == "chat":
                    if math.isnan(ttft) and _chat_text(line):
                        ttft = time.perf_counter() - started
                    if line.startswith(b"data: [DONE]"):
                        total = time.perf_counter() - started
                    continue
                if not line.startswith(b"event:"):
                    continue
                name = line[6:].strip()
                if math.isnan(ttft) and name == _TEXT_EVENTS[api]:
                    ttft = time.perf_counter() - started
                if name in _END_EVENTS[api]:
                    total = time.perf_counter() - started
    except Exception as exc:  # a failed request is counted, not raised
        return math.nan, math.nan, type(exc).__name__
    if math.isnan(total):
        return math.nan, math.nan, "no end event"
    return ttft, total, "no text" if math.isnan(ttft) else ""


async def measure(urls: dict[str, str], models: dict[str, str], rounds: int, per_round: int):  # type: ignore[no-untyped-def]
    import aiohttp

    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    errors: dict[tuple[str, str], list[str]] = {}
    # llama.cpp's server may close a kept-alive connection after a stream (a reused one then
    # fails): direct requests each get a fresh connection, as in bench_gateway.py.
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    async with fresh, aiohttp.ClientSession() as kept:
        sessions = {"direct": fresh, "native": kept, "translated": kept}
        for api in APIS:  # warm-up: connections, the server's prompt cache
            for way in WAYS:
                await stream_once(
                    sessions[way], urls[way] + "/" + ROUTES[api], api, body(api, models[way])
                )
        for round_no in range(rounds):
            for way in rotated(list(WAYS), round_no):
                for api in APIS:
                    data = body(api, models[way])
                    for _ in range(per_round):
                        ttft, total, error = await stream_once(
                            sessions[way], urls[way] + "/" + ROUTES[api], api, data
                        )
                        if error:
                            errors.setdefault((way, api), []).append(error)
                        else:
                            samples.setdefault((way, api), []).append((ttft, total))
    return samples, errors


def render(
    samples: dict[tuple[str, str], list[tuple[float, float]]], errors: dict[Any, Any]
) -> str:
    lines = ["api        way          n   ttft p50   ttft p95  total p50   overhead p50 / p95"]
    for api in APIS:
        base = samples.get(("direct", api), [])
        base50 = percentile([s[0] for s in base], 0.5)
        base95 = percentile([s[0] for s in base], 0.95)
        for way in WAYS:
            got = samples.get((way, api), [])
            p50 = percentile([s[0] for s in got], 0.5)
            p95 = percentile([s[0] for s in got], 0.95)
            total = percentile([s[1] for s in got], 0.5)
            over = (
                ""
                if way == "direct"
                else f"{(p50 - base50) * 1e3:+.2f} / {(p95 - base95) * 1e3:+.2f} ms"
            )
            lines.append(
                f"{api:<10} {way:<11} {len(got):>3} {p50 * 1e3:>8.2f}ms {p95 * 1e3:>8.2f}ms "
                f"{total * 1e3:>8.1f}ms   {over}"
            )
    for key, reasons in errors.items():
        lines.append(
            f"errors {key[0]}/{key[1]}: {len(reasons)} ({', '.join(sorted(set(reasons)))})"
        )
    return "\n".join(lines)


def bench_profile(work: Path, llama_url: str, written_by: str, namespace: str) -> dict[str, str]:
    """A `bench` profile in `work` with one llama.cpp server as two endpoints, `native` (its own
    Responses and Messages routes) and `translated` (chat completions only), and the environment
    of a `serve` that uses it, with its own state, data, machine folders and namespace."""
    profiles = work / "profiles"
    profiles.mkdir()
    endpoint = {"base_url": f"{llama_url}/v1", "model": "smollm2"}
    profile = {
        "name": "bench",
        "description": f"{written_by}: one llama.cpp, native and translated",
        "services": {},
        "endpoints": {
            "native": {**endpoint, "engine": "llamacpp"},
            "translated": {**endpoint, "engine": "openai"},
        },
    }
    (profiles / "bench.yaml").write_text(json.dumps(profile, indent=2))  # JSON is YAML
    return {
        **os.environ,
        "AITHER_PROFILE_DIR": str(profiles),
        "AITHER_STATE_DIR": str(work / "state"),
        "AITHER_DATA_DIR": str(work / "data"),
        "AITHER_MACHINE_DIR": str(work / "machine"),
        "AITHER_NAMESPACE": f"{namespace}{uuid.uuid4().hex[:6]}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 requests")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--llama-threads", type=int, default=1)
    args = parser.parse_args()
    rounds, per_round = (2, 5) if args.quick else (args.rounds, args.per_round)

    work = Path(tempfile.mkdtemp(prefix="aither-bench-apis-"))
    container, llama_url = start_llama(args.llama_threads, 4)
    gateway = None
    try:
        wait_http(llama_url + "/health", 180)
        env = bench_profile(work, llama_url, "bench/bench_apis.py", "benchapi")
        exe = ROOT / ".venv" / "bin" / "aitherctl"
        program = str(exe) if exe.exists() else "aitherctl"
        port = free_port()
        argv = [program, "serve", "--host", "127.0.0.1", "--port", str(port), "--profile", "bench"]
        gateway = spawn("gateway", argv, work, env)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", 60, gateway.proc)
        except SystemExit:
            print(tail(gateway.log), file=sys.stderr)
            raise
        served = f"http://127.0.0.1:{port}/v1"
        urls = {"direct": f"{llama_url}/v1", "native": served, "translated": served}
        models = {"direct": "smollm2", "native": "native", "translated": "translated"}
        samples, errors = asyncio.run(measure(urls, models, rounds, per_round))
        print(f"{rounds} rounds x {per_round} requests per way and API, one client")
        print(render(samples, errors))
    finally:
        if gateway is not None:
            gateway.stop()
        subprocess.run(["docker", "rm", "-f", container], check=False, capture_output=True)


if __name__ == "__main__":
    main()
