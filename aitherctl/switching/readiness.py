"""Readiness and health probes over HTTP: the engine's own endpoints, short timeouts.

One set of rules (`run_checks`), fetched over the small socket client of
aitherctl/loopback_http.py (`probe_plain`), a new connection per probe: a probe is plain HTTP to a
published port, and importing httpx (about 0.1 s of CPU on a small machine) delayed a switch's
first probe and `ps`'s answer for nothing a kept-alive connection would win back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from aitherctl.engines.container import HttpCheck


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A readiness or health probe's answer: ready or not, and what it saw."""

    ok: bool
    detail: str  # "ready", "GET /health → 503", "connection refused", ...


class ProbeFailure(Exception):
    """The request got no HTTP answer; `detail` says why, as a probe result words it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# path → (status, body); raises ProbeFailure when no answer came.
Fetch = Callable[[str], tuple[int, bytes]]


def probe_host(bind: str, docker_endpoint: str | None = None, address: str | None = None) -> str:
    """Where a service published on `bind` is reached from here. For a remote engine
    (`tcp://host:2376`, `ssh://user@host`) that is the engine's host, or the profile host's
    `address` when it gives one (a specific bind other than loopback is used as it is)."""
    if address:
        from aitherctl.profiles.checks import WILDCARD_BINDS
        from aitherctl.profiles.profile import is_loopback

        specific = bind not in WILDCARD_BINDS and not is_loopback(bind)
        return bind if specific else address
    if docker_endpoint and docker_endpoint.startswith(("tcp://", "ssh://", "http://", "https://")):
        host = urlparse(docker_endpoint).hostname
        if host and bind in ("0.0.0.0", "::"):
            return host
    if bind in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return bind


def run_checks(fetch: Fetch, checks: tuple[HttpCheck, ...]) -> ProbeResult:
    """Run every check in order; the first that fails says why."""
    if not checks:
        return ProbeResult(True, "no probe")
    for check in checks:
        try:
            status, body = fetch(check.path)
        except ProbeFailure as exc:
            return ProbeResult(False, exc.detail)
        if status != check.status:
            return ProbeResult(False, f"GET {check.path} → {status}")
        if check.model is not None:
            try:
                ids = [item.get("id") for item in json.loads(body).get("data", [])]
            except (ValueError, AttributeError):
                return ProbeResult(False, f"GET {check.path}: not a model list")
            if check.model not in ids:
                return ProbeResult(False, f"GET {check.path} does not list {check.model!r} yet")
    return ProbeResult(True, "ready")


class ReadinessProbe:
    """The probes of one wait (`with ReadinessProbe() as p:`): one short connection per
    request, over the socket client of loopback_http.py."""

    def __enter__(self) -> ReadinessProbe:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def check(
        self, host: str, port: int, checks: tuple[HttpCheck, ...], timeout_s: float = 2.0
    ) -> ProbeResult:
        return probe_plain(host, port, checks, timeout_s)


def probe_plain(
    host: str, port: int, checks: tuple[HttpCheck, ...], timeout_s: float = 2.0
) -> ProbeResult:
    """The checks over a plain socket, one connection per request (plain http only: the small
    client of loopback_http.py, without http.client's ssl and email imports)."""
    from aitherctl.loopback_http import connect_tcp, get, host_header

    def fetch(path: str) -> tuple[int, bytes]:
        try:
            return get(connect_tcp(host, port, timeout_s), host_header(host, port), path)
        except ConnectionRefusedError:
            raise ProbeFailure("connection refused") from None
        except TimeoutError:
            raise ProbeFailure(f"GET {path} timed out after {timeout_s:g}s") from None
        except (OSError, ValueError) as exc:
            raise ProbeFailure(f"GET {path}: {type(exc).__name__}") from None

    return run_checks(fetch, checks)


def netloc(host: str) -> str:
    """A host as it stands in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host
