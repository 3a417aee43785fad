"""A timeline of one request through the gateway, for finding where first-token time goes
(issue 18's bound; bench/timeline_gateway.py reads it).

Off unless `AITHER_SERVE_TIMELINE=FILE` is in `serve`'s environment: then every request records
`time.perf_counter_ns()` (CLOCK_MONOTONIC on Linux, so comparable with a client's clock on the
same machine) at each stage, from its arrival to its first chunks written back, and appends one
JSON line per request to FILE when it ends. Off, a probe is one module-global test
(`if timeline.ON:`); nothing is imported or installed.
"""

from __future__ import annotations

import json
import os
import time
from contextvars import ContextVar
from typing import Any

FILE = os.environ.get("AITHER_SERVE_TIMELINE") or None
ON = FILE is not None
# The client's send time (its perf_counter_ns), when the client passes it.
CLIENT_T0_HEADER = "x-aither-timeline-t0"

_marks: ContextVar[list[tuple[str, int]] | None] = ContextVar("aither_timeline", default=None)


def begin(client_t0: str | None) -> None:
    """Start this request's timeline (in its handler's task)."""
    marks = [("arrived", time.perf_counter_ns())]
    if client_t0 and client_t0.isdigit():
        marks.insert(0, ("client_sent", int(client_t0)))
    _marks.set(marks)


def mark(stage: str) -> None:
    marks = _marks.get()
    if marks is not None:
        marks.append((stage, time.perf_counter_ns()))


def mark_nth(stage: str, most: int = 3) -> None:
    """`stage1`, `stage2`... for the first `most` times this stage is reached."""
    marks = _marks.get()
    if marks is None:
        return
    seen = sum(1 for name, _ in marks if name.startswith(stage))
    if seen < most:
        marks.append((f"{stage}{seen + 1}", time.perf_counter_ns()))


def end() -> None:
    """Append this request's marks to FILE (after its answer: off the first-token path)."""
    marks = _marks.get()
    _marks.set(None)
    if marks is None or FILE is None:
        return
    with open(FILE, "a", encoding="utf-8") as out:
        out.write(json.dumps(marks) + "\n")


def _gc_probe(phase: str, info: dict[str, Any]) -> None:
    """A garbage collection during a request (`gc2_start`... `gc2_stop`): a full one scans
    every object the process holds."""
    mark(f"gc{info.get('generation')}_{phase}")


if ON:
    import gc

    gc.callbacks.append(_gc_probe)


def trace_configs() -> list[Any]:
    """aiohttp client probes (connection taken or opened, request sent, answer's head): an
    empty list when off, so the sessions carry no tracing at all."""
    if not ON:
        return []
    import aiohttp

    config = aiohttp.TraceConfig()

    def probe(stage: str) -> Any:
        async def record(*_: Any) -> None:
            mark(stage)

        return record

    config.on_request_start.append(probe("upstream_request_start"))
    config.on_connection_queued_start.append(probe("upstream_conn_queued"))
    config.on_connection_create_start.append(probe("upstream_conn_create_start"))
    config.on_connection_create_end.append(probe("upstream_conn_created"))
    config.on_connection_reuseconn.append(probe("upstream_conn_reused"))
    config.on_request_headers_sent.append(probe("upstream_headers_sent"))
    config.on_request_chunk_sent.append(probe("upstream_body_sent"))
    config.on_request_end.append(probe("upstream_answer_head"))
    config.on_request_exception.append(probe("upstream_exception"))
    return [config]
