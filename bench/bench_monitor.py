"""The monitor's own cost: CPU use at a 1 s refresh with five services, and one refresh's time.

    python bench/bench_monitor.py               # five real llama.cpp containers (Docker)
    python bench/bench_monitor.py --fake        # five local HTTP servers, no Docker
    python bench/bench_monitor.py --seconds 60

With Docker, five llama-server containers (aither-test/llamacpp:latest, SmolLM2) are started in a
fresh AITHER_NAMESPACE with aitherctl's labels, so the monitor reads them exactly as it reads a
profile's services (list, inspect, events, /metrics and /slots of each), and removed afterwards.
The monitor runs headless (Textual's test driver) at the given interval; its CPU use is this
process's CPU time over the run (every thread: UI, refresh worker, scrapes) divided by the wall
time. Target: under 3% of one core at 1 s. Needs DOCKER_HOST and AITHER_TEST_MODELS for Docker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aitherctl.monitor.collect import MonitorCollector  # noqa: E402
from aitherctl.monitor.model import StackReading  # noqa: E402
from aitherctl.monitor.procs import HostReader, ProcessTable  # noqa: E402
from aitherctl.monitor.scrape import Scraper  # noqa: E402
from aitherctl.tui.app import MonitorApp  # noqa: E402

SERVICES = 5
IMAGE = "aither-test/llamacpp:latest"
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_containers(namespace: str) -> list[Any]:
    import docker

    from aitherctl.engines import container as c

    client = docker.from_env()
    models = os.environ.get("AITHER_TEST_MODELS", "/var/cache/aitherctl-test/models")
    started = []
    for number in range(SERVICES):
        port = free_port()
        labels = {
            c.LABEL_MANAGED: "true",
            c.LABEL_NAMESPACE: namespace,
            c.LABEL_PROFILE: "bench",
            c.LABEL_SERVICE: f"llm{number}",
            c.LABEL_ENGINE: "llamacpp",
            c.LABEL_PORT: str(port),
            c.LABEL_BIND: "127.0.0.1",
            c.LABEL_MODEL: MODEL,
            c.LABEL_GPUS: "none",
        }
        started.append(
            client.containers.run(
                IMAGE,
                [
                    "-m",
                    f"/models/{MODEL}",
                    "--host",
                    "0.0.0.0",
                    "--port",
                    "8080",
                    "--metrics",
                    "--slots",
                    "-c",
                    "512",
                    "-t",
                    "1",
                ],
                name=f"aither-bench-{namespace}-{number}",
                detach=True,
                labels=labels,
                ports={"8080/tcp": ("127.0.0.1", port)},
                volumes={models: {"bind": "/models", "mode": "ro"}},
            )
        )
    deadline = time.monotonic() + 180
    import httpx

    for item in started:
        port = int(item.labels[c.LABEL_PORT])
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    return started


class FakeStack:
    """Five llama.cpp-like servers on local ports serving the captured payloads."""

    def __init__(self) -> None:
        from aitherctl.docker.stack import ManagedContainer

        fixtures = ROOT / "tests" / "fixtures" / "metrics"
        metrics = fixtures / "llamacpp_metrics_after.prom"
        body = metrics.read_bytes() if metrics.exists() else b"llamacpp:requests_processing 0\n"
        slots = fixtures / "llamacpp_slots.json"
        slots_body = slots.read_bytes() if slots.exists() else b"[]"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                payload = body if self.path == "/metrics" else slots_body
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.servers = []
        containers = []
        for number in range(SERVICES):
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)
            containers.append(
                ManagedContainer(
                    id=f"{number:064x}",
                    name=f"llm{number}",
                    service=f"llm{number}",
                    profile="bench",
                    spec_hash="",
                    state="running",
                    image=IMAGE,
                    engine="llamacpp",
                    model=MODEL,
                    served_model=None,
                    port=server.server_address[1],
                    bind="127.0.0.1",
                    gpus=(),
                    vram_bytes=None,
                    role=None,
                    pinned=False,
                    on_demand=False,
                    health_checks=(),
                    started_at="2025-01-01T00:00:00Z",
                )
            )
        self.reading = StackReading(
            containers=tuple(containers), active_profile="bench", engine="fake"
        )

    def read(self) -> StackReading:
        return self.reading


async def run_monitor(collector: MonitorCollector, seconds: float, interval: float) -> MonitorApp:
    app = MonitorApp(collector, interval_s=interval)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.pause(3 * interval)  # warm-up: imports, first layout, first scrapes
        wall0, cpu0, refreshes0 = time.monotonic(), time.process_time(), app.refreshes
        await pilot.pause(seconds)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        app.bench = (wall, cpu, app.refreshes - refreshes0)  # type: ignore[attr-defined]
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake", action="store_true", help="local HTTP servers, no Docker")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()

    containers: list[Any] = []
    if args.fake:
        stack: Any = FakeStack()
        mode = "five local fake llama.cpp servers"
    else:
        from aitherctl.docker.engine import DockerEngine
        from aitherctl.monitor.stack_reader import DockerStackSource

        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        containers = start_containers(namespace)
        stack = DockerStackSource(lambda: DockerEngine.connect(namespace))
        mode = "five real llama.cpp containers on Docker"
    collector = MonitorCollector(
        stack=stack,
        gpus=None,
        scraper=Scraper(timeout_s=0.5),
        procs=ProcessTable(),
        host=HostReader(),
    )
    try:
        app = asyncio.run(run_monitor(collector, args.seconds, args.interval))
        wall, cpu, refreshes = app.bench  # type: ignore[attr-defined]
        timings = []
        for _ in range(20):
            time.sleep(0.2)  # as in the monitor: host CPU is sampled since the last refresh
            started = time.perf_counter()
            collector.collect()
            timings.append(time.perf_counter() - started)
    finally:
        for item in containers:
            item.remove(force=True)
    print(f"mode: {mode}; interval {args.interval:g} s; {wall:.1f} s measured")
    print(f"refreshes: {refreshes} ({refreshes / wall:.2f}/s)")
    print(f"monitor CPU: {100 * cpu / wall:.2f}% of one core (target < 3%)")
    print(
        f"one refresh: median {1000 * statistics.median(timings):.1f} ms, "
        f"max {1000 * max(timings):.1f} ms (20 refreshes, wall time)"
    )


if __name__ == "__main__":
    main()
