"""`aitherctl serve`'s request log: one line per request on stderr, and the count for the line
it writes when it stops.

A line says when, who (the address, and the API key's or the client's name), which `model` was
asked for and which backend answered, the status sent, the time spent waiting for a queue place
and for a model to load, the tokens in and out, and the whole duration:

    2026-12-07 00:12:03 127.0.0.1 editor auto → llama 200 queue 0.00s load 2.31s tokens 9/12 2.52s

Never the prompt, never a key (a key is named by its holder's name from the keys file).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


class AccessLog:
    """Writes each request's line through `write` (None: count only, for `serve --quiet`)."""

    def __init__(
        self,
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.write = write
        self.clock = clock
        self.requests = 0
        self.failed = 0  # answered with a status of 400 or more

    def request(  # noqa: PLR0917 - one field of the line each
        self,
        remote: str | None,
        client: str,
        model: str,
        backend: str | None,
        status: int,
        queue_wait_s: float | None,
        load_wait_s: float | None,
        tokens_in: int | None,
        tokens_out: int | None,
        duration_s: float,
    ) -> None:
        self.requests += 1
        if status >= 400:
            self.failed += 1
        if self.write is None:
            return
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.clock()))
        who = remote or "-"
        if client and client != remote:
            who += f" {client}"
        self.write(
            f"{when} {who} {model} → {backend or '-'} {status} "
            f"queue {_seconds(queue_wait_s)} load {_seconds(load_wait_s)} "
            f"tokens {_count(tokens_in)}/{_count(tokens_out)} {_seconds(duration_s)}"
        )

    def summary(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.requests} request(s){failed}"


def stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
