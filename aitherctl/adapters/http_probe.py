"""Readiness and health probes over HTTP (httpx): the engine's own endpoints, short timeouts."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from aitherctl.core.container import HttpCheck


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str  # "ready", "GET /health → 503", "connection refused", ...


def probe_host(bind: str, docker_endpoint: str | None = None) -> str:
    """Where a service published on `bind` is reached from here. For a remote engine
    (`tcp://host:2376`, `ssh://user@host`) that is the engine's host."""
    if docker_endpoint and docker_endpoint.startswith(("tcp://", "ssh://", "http://", "https://")):
        host = urlparse(docker_endpoint).hostname
        if host and bind in ("0.0.0.0", "::"):
            return host
    if bind in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return bind


def probe(
    client: httpx.Client,
    host: str,
    port: int,
    checks: tuple[HttpCheck, ...],
    timeout_s: float = 2.0,
) -> ProbeResult:
    """Run every check in order; the first that fails says why."""
    if not checks:
        return ProbeResult(True, "no probe")
    for check in checks:
        url = f"http://{host}:{port}{check.path}"
        try:
            answer = client.get(url, timeout=timeout_s)
        except httpx.ConnectError:
            return ProbeResult(False, "connection refused")
        except httpx.TimeoutException:
            return ProbeResult(False, f"GET {check.path} timed out after {timeout_s:g}s")
        except httpx.HTTPError as exc:
            return ProbeResult(False, f"GET {check.path}: {type(exc).__name__}")
        if answer.status_code != check.status:
            return ProbeResult(False, f"GET {check.path} → {answer.status_code}")
        if check.model is not None:
            try:
                ids = [item.get("id") for item in answer.json().get("data", [])]
            except (ValueError, AttributeError):
                return ProbeResult(False, f"GET {check.path}: not a model list")
            if check.model not in ids:
                return ProbeResult(False, f"GET {check.path} does not list {check.model!r} yet")
    return ProbeResult(True, "ready")
