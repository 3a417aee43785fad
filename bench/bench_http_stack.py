"""Which HTTP server and client for the gateway: minimal streaming proxies, measured (issue 8).

    python bench/bench_http_stack.py                 # 5 interleaved rounds, every variant
    python bench/bench_http_stack.py --quick
    python bench/bench_http_stack.py --serve aiohttp --port 8150 \\
        --route fast=fast@http://127.0.0.1:8201/v1   # run one prototype by itself

Each variant is the same ~40-line pass-through proxy: read the JSON body, pick the upstream by its
`model` field (`--route NAME=MODEL@BASE_URL`), rewrite `model`, send it upstream on a pooled
keep-alive client (idle connections dropped after 4 s, before llama.cpp's cpp-httplib closes them
at 5 s), and copy the upstream's bytes to the client as they arrive (`x-aither-backend`
names the upstream). What differs is the library under it:
- aiohttp: aiohttp's server (`web.Application`, `StreamResponse`) and aiohttp's `ClientSession`,
  on asyncio's default loop; aiohttp-uvloop: the same on uvloop;
- uvicorn-asgi-httpx: uvicorn (httptools parser, uvloop) with a raw ASGI callable and httpx's
  `AsyncClient` (`send(..., stream=True)`, `aiter_raw`);
- uvicorn-starlette-httpx: the same with Starlette's `Request` / `StreamingResponse` routing;
- uvicorn-asgi-aiohttp: uvicorn's server with aiohttp's client (to tell server from client).
All run in the stack virtualenv (bench_gateway.STACK_REQUIREMENTS pins every version) and in
front of bench/fast_upstream.py, so the proxy's own cost is what differs. Measured per variant,
interleaved (the order rotates every round), with bench_gateway's aiohttp client: first-token
time p50/p95 at 1 and 32 streaming clients, overhead against the upstream directly, and requests
per second at 32 and 64 clients; plus each proxy's RSS after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = (
    "aiohttp",
    "aiohttp-uvloop",
    "uvicorn-asgi-httpx",
    "uvicorn-starlette-httpx",
    "uvicorn-asgi-aiohttp",
)


def parse_routes(values: list[str]) -> dict[str, tuple[str, str]]:
    """`NAME=MODEL@BASE_URL` → {name: (model, base_url)}."""
    routes = {}
    for value in values:
        name, _, rest = value.partition("=")
        model, _, base = rest.partition("@")
        routes[name] = (model, base.rstrip("/"))
    return routes


def pick(routes: dict[str, tuple[str, str]], body: bytes) -> tuple[str, str, bytes] | None:
    """The upstream for this body: (name, base URL, body with the upstream's model name)."""
    payload = json.loads(body)
    route = routes.get(payload.get("model"))
    if route is None:
        return None
    name = payload["model"]
    payload["model"] = route[0]
    return name, route[1], json.dumps(payload).encode()


# ---- (a) aiohttp server + aiohttp client ---------------------------------------------------


async def post_upstream(session: Any, url: str, body: bytes) -> Any:
    """POST on the pool, once more on a fresh connection if a pooled one was dead.

    llama.cpp closes the connection after each streamed answer (while its headers say
    keep-alive), so a connection taken from the pool at once can fail before any response byte.
    """
    import aiohttp

    headers = {"content-type": "application/json"}
    try:
        return await session.post(url, data=body, headers=headers)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return await session.post(url, data=body, headers=headers)


def serve_aiohttp(port: int, routes: dict[str, tuple[str, str]]) -> None:
    import aiohttp
    from aiohttp import web

    # The same per-stage probes as `aitherctl serve` (bench/timeline_gateway.py compares them),
    # when AITHER_SERVE_TIMELINE names a file and aitherctl is importable.
    try:
        from aitherctl.serve import timeline
    except ImportError:
        timeline = None  # type: ignore[assignment]
    on = timeline is not None and timeline.ON

    async def proxy(request: web.Request) -> web.StreamResponse:
        if on:
            timeline.begin(request.headers.get(timeline.CLIENT_T0_HEADER))
        try:
            return await _proxy(request)
        finally:
            if on:
                timeline.mark("handler_done")
                timeline.end()

    async def _proxy(request: web.Request) -> web.StreamResponse:
        chosen = pick(routes, await request.read())
        if chosen is None:
            return web.json_response({"error": "unknown model"}, status=404)
        name, base, body = chosen
        if on:
            timeline.mark("body_parsed")
        upstream = await post_upstream(
            request.app["session"], base + request.path.removeprefix("/v1"), body
        )
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={
                    "content-type": upstream.headers.get("content-type", "application/json"),
                    "x-aither-backend": name,
                },
            )
            await response.prepare(request)
            if on:
                timeline.mark("client_head_prepared")
            async for chunk in upstream.content.iter_any():
                if on:
                    timeline.mark_nth("upstream_chunk")
                await response.write(chunk)
                if on:
                    timeline.mark_nth("client_written")
            await response.write_eof()
            return response

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def client(app: web.Application) -> Any:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            trace_configs=timeline.trace_configs() if on else None,
        )
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/{tail:.*}", proxy)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---- (b) uvicorn + raw ASGI (+ httpx or aiohttp client) ------------------------------------


def asgi_httpx(routes: dict[str, tuple[str, str]]) -> Any:
    import httpx

    state: dict[str, httpx.AsyncClient] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["client"] = httpx.AsyncClient(
                        timeout=None,
                        limits=httpx.Limits(
                            max_connections=None,
                            max_keepalive_connections=512,
                            keepalive_expiry=4.0,
                        ),
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["client"].aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/health":
            await _asgi_json(send, 200, b'{"status":"ok"}')
            return
        chosen = pick(routes, await _asgi_body(receive))
        if chosen is None:
            await _asgi_json(send, 404, b'{"error":"unknown model"}')
            return
        name, base, body = chosen
        client = state["client"]
        request = client.build_request(
            "POST",
            base + scope["path"].removeprefix("/v1"),
            content=body,
            headers={"content-type": "application/json"},
        )
        upstream = await client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": [
                        (
                            b"content-type",
                            upstream.headers.get("content-type", "application/json").encode(),
                        ),
                        (b"x-aither-backend", name.encode()),
                    ],
                }
            )
            async for chunk in upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await upstream.aclose()

    return app


def asgi_aiohttp(routes: dict[str, tuple[str, str]]) -> Any:
    import aiohttp

    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["client"] = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
                        auto_decompress=False,
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["client"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/health":
            await _asgi_json(send, 200, b'{"status":"ok"}')
            return
        chosen = pick(routes, await _asgi_body(receive))
        if chosen is None:
            await _asgi_json(send, 404, b'{"error":"unknown model"}')
            return
        name, base, body = chosen
        upstream = await post_upstream(
            state["client"], base + scope["path"].removeprefix("/v1"), body
        )
        async with upstream:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status,
                    "headers": [
                        (
                            b"content-type",
                            upstream.headers.get("content-type", "application/json").encode(),
                        ),
                        (b"x-aither-backend", name.encode()),
                    ],
                }
            )
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def starlette_httpx(routes: dict[str, tuple[str, str]]) -> Any:
    import contextlib

    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    state: dict[str, httpx.AsyncClient] = {}

    async def proxy(request: Request) -> Response:
        chosen = pick(routes, await request.body())
        if chosen is None:
            return JSONResponse({"error": "unknown model"}, status_code=404)
        name, base, body = chosen
        client = state["client"]
        upstream = await client.send(
            client.build_request(
                "POST",
                base + request.url.path.removeprefix("/v1"),
                content=body,
                headers={"content-type": "application/json"},
            ),
            stream=True,
        )

        async def relay() -> Any:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(
            relay(),
            status_code=upstream.status_code,
            headers={"x-aither-backend": name},
            media_type=upstream.headers.get("content-type"),
        )

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        state["client"] = httpx.AsyncClient(
            timeout=None,
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=512, keepalive_expiry=4.0
            ),
        )
        yield
        await state["client"].aclose()

    return Starlette(
        routes=[Route("/health", health), Route("/v1/{tail:path}", proxy, methods=["POST"])],
        lifespan=lifespan,
    )


async def _asgi_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _asgi_json(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(variant: str, port: int, routes: dict[str, tuple[str, str]]) -> None:
    if variant == "aiohttp":
        serve_aiohttp(port, routes)
        return
    if variant == "aiohttp-uvloop":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        serve_aiohttp(port, routes)
        return
    import uvicorn

    app = {
        "uvicorn-asgi-httpx": asgi_httpx,
        "uvicorn-starlette-httpx": starlette_httpx,
        "uvicorn-asgi-aiohttp": asgi_aiohttp,
    }[variant](routes)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )


# ---- the comparison ------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> None:
    import bench_gateway as bg

    stack_python = bg.ensure_venv(bg.STACK_VENV, bg.STACK_REQUIREMENTS)
    work = Path(tempfile.mkdtemp(prefix="aither-bench-stack-"))
    servers: list[bg.Server] = []
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        up_port = bg.free_port()
        servers.append(
            bg.spawn(
                "fast-upstream",
                [
                    str(stack_python),
                    str(Path(__file__).with_name("fast_upstream.py")),
                    "--port",
                    str(up_port),
                    "--tokens",
                    str(bg.MAX_TOKENS),
                ],
                work,
            )
        )
        fast = f"http://127.0.0.1:{up_port}"
        bg.wait_http(fast + "/health", 30, servers[-1].proc)
        targets = [bg.Target("direct", {"fast": f"{fast}/v1"}, {"fast": "fast"})]
        for variant in variants:
            port = bg.free_port()
            server = bg.spawn(
                variant,
                [
                    str(stack_python),
                    __file__,
                    "--serve",
                    variant,
                    "--port",
                    str(port),
                    "--route",
                    f"fast=fast@{fast}/v1",
                ],
                work,
            )
            servers.append(server)
            try:
                bg.wait_http(f"http://127.0.0.1:{port}/health", 30, server.proc)
            except SystemExit:
                print(bg.tail(server.log), file=sys.stderr)
                raise
            targets.append(
                bg.Target(
                    variant,
                    {"fast": f"http://127.0.0.1:{port}/v1"},
                    {"fast": "fast"},
                    server.proc.pid,
                )
            )
        plan = (
            bg.Plan(rounds=2, llama_one=0, llama_many=0, fast_one=30, fast_many=3, seconds=1.5)
            if args.quick
            else bg.Plan(
                rounds=args.rounds,
                llama_one=0,
                llama_many=0,
                fast_one=100,
                fast_many=8,
                seconds=3.0,
            )
        )
        load_before = os.getloadavg()
        results = bg.run_loop(bg.measure(targets, plan, ["fast"], gateway=""))
        load_after = os.getloadavg()
        rss = {t.name: bg.process_rss(t.pid) for t in targets if t.pid}
    finally:
        for server in reversed(servers):
            server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    summary = bg.summarise(results, [t.name for t in targets], "")
    print(
        render(
            summary,
            rss,
            plan,
            load_before=load_before[0],
            load_after=load_after[0],
            loop=bg.loop_name(),
        )
    )
    if args.json_out:
        summary["rss_bytes"] = rss
        args.json_out.write_text(json.dumps(summary, indent=2, default=str))


def render(
    summary: dict[str, Any],
    rss: dict[str, int],
    plan: Any,
    *,
    load_before: float,
    load_after: float,
    loop: str,
) -> str:
    import bench_gateway as bg

    lat = {(r["target"], r["clients"]): r for r in summary["latency"]}
    rps = {(r["target"], r["clients"]): r["rps"] for r in summary["throughput"]}
    names = list(dict.fromkeys(r["target"] for r in summary["latency"]))
    out = [
        f"## bench_http_stack.py — {time.strftime('%Y-%m-%d %H:%M')}, {plan.rounds} rounds, "
        f"{os.cpu_count()} CPUs, load {load_before:.2f} → {load_after:.2f}, "
        f"client aiohttp on {loop}",
        "",
        "| proxy | TTFT p50, 1 client | p95, 1 | TTFT p50, 32 clients | p95, 32 "
        "| overhead p50, 1 | p95, 1 | overhead p50, 32 | p95, 32 | req/s 32 | req/s 64 "
        "| RSS after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        one, many = lat.get((name, 1)), lat.get((name, plan.many))
        if not one or not many:
            continue
        mem = f"{rss[name] / 2**20:.0f} MiB" if name in rss else "—"
        out.append(
            f"| {name} | {bg._ms(one['ttft_p50_s'])} | {bg._ms(one['ttft_p95_s'])} "
            f"| {bg._ms(many['ttft_p50_s'])} | {bg._ms(many['ttft_p95_s'])} "
            f"| {bg._delta(one['ttft_p50_overhead_s'])} | {bg._delta(one['ttft_p95_overhead_s'])} "
            f"| {bg._delta(many['ttft_p50_overhead_s'])} "
            f"| {bg._delta(many['ttft_p95_overhead_s'])} "
            f"| {rps.get((name, 32), float('nan')):.0f} | {rps.get((name, 64), float('nan')):.0f} "
            f"| {mem} |"
        )
    failed = sum(r["failed"] for r in summary["latency"]) + sum(
        r["failed"] for r in summary["throughput"]
    )
    out += [
        "",
        f"(milliseconds; overhead = proxy minus direct at the same percentile; "
        f"{failed} failed requests)",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", choices=VARIANTS, help="run one prototype in the foreground")
    parser.add_argument("--port", type=int)
    parser.add_argument("--route", action="append", default=[], help="NAME=MODEL@BASE_URL")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if args.serve:
        if not args.port or not args.route:
            parser.error("--serve needs --port and at least one --route")
        serve(args.serve, args.port, parse_routes(args.route))
        return
    compare(args)


if __name__ == "__main__":
    main()
