"""Is a backend worth trying now? A short health probe, its queue, and a memory of failures.

- Health: `GET` the engine's own probe (llama.cpp and vLLM `/health`, Ollama `/api/version`,
  others `/v1/models`) with a short timeout; anything but 2xx is a failure.
- Queue: the Prometheus gauge of requests waiting for a slot, from `GET /metrics`:
  vLLM `vllm:num_requests_waiting` (summed over its `model_name`/`engine` labels), llama.cpp
  `llamacpp:requests_deferred` (served only with `--metrics`; without it the queue is unknown
  and never a reason to skip). Same numbers as `curl -s HOST:PORT/metrics | grep waiting`.
- Failure memory: a failed probe or a failed request is remembered for `health_memory_s`
  (30 s by default) in a small JSON file in the user's state folder, so the next `run` skips
  that backend at once instead of waiting for its timeout again. A switch or `up` that reports
  a service ready makes it forget that service's host:port (`forget_backend`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from aitherctl.paths import BACKEND_FAILURES_FILE, state_dir
from aitherctl.routing.chat import HttpClients, is_local_plain
from aitherctl.routing.table import QUEUE_METRICS, Candidate, loopback_key

DEFAULT_PROBE_TIMEOUT_S = 0.5
FAILURES_FILE = BACKEND_FAILURES_FILE
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _url_key(url: str) -> str | None:
    """`host:port` of a remembered backend's URL (loopback spellings made one)."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return loopback_key(parts.hostname, port)


def queue_waiting_from_metrics(text: str, engine: str) -> float | None:
    """The engine's waiting-queue gauge from Prometheus text, summed over labels; None if absent."""
    wanted = QUEUE_METRICS.get(engine)
    if wanted is None:
        return None
    total: float | None = None
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == wanted:
                    total = (total or 0.0) + float(sample.value)
    except (ValueError, TypeError, IndexError):
        return None
    return total


class FailureMemory:
    """Backends that failed recently, keyed by their URL, each with the reason and the time."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path or state_dir() / FAILURES_FILE
        self.clock = clock

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, dict[str, object]]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            import tempfile  # only when a failure is written

            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".failures-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache: losing it only costs one timeout later

    def recent(self, candidates: list[Candidate], ttl_s: float) -> dict[str, str]:
        """Backend name -> "REASON (Ns ago)" for failures younger than `ttl_s`."""
        if ttl_s <= 0:
            return {}
        data = self._load()
        now = self.clock()
        found = {}
        for candidate in candidates:
            entry = data.get(candidate.base_url)
            if not isinstance(entry, dict):
                continue
            at = entry.get("at")
            if isinstance(at, int | float) and 0 <= now - at < ttl_s:
                found[candidate.name] = f"{entry.get('reason', 'failed')} ({now - at:.0f}s ago)"
        return found

    def remember(self, candidate: Candidate, reason: str) -> None:
        data = self._load()
        now = self.clock()
        # Drop entries older than a day so the file stays small.
        data = {
            k: v
            for k, v in data.items()
            if isinstance(v, dict)
            and isinstance(v.get("at"), int | float)
            and now - float(v["at"]) < 86400  # type: ignore[arg-type]
        }
        data[candidate.base_url] = {"at": now, "reason": reason}
        self._save(data)

    def forget(self, candidate: Candidate) -> None:
        data = self._load()
        if data.pop(candidate.base_url, None) is not None:
            self._save(data)

    def forget_host_port(self, host: str, port: int) -> int:
        """Drop every remembered failure of a backend at host:port; how many were dropped."""
        wanted = loopback_key(host, port)
        data = self._load()
        kept = {url: entry for url, entry in data.items() if _url_key(url) != wanted}
        dropped = len(data) - len(kept)
        if dropped:
            self._save(kept)
        return dropped

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def forget_backend(host: str, port: int) -> None:
    """A service at host:port was just reported ready (by a switch or `up`): forget its remembered
    failures, so the next `run` tries it at once. `localhost`, `127.0.0.1`, `::1` and a wildcard
    bind (`0.0.0.0`) all name this machine."""
    FailureMemory().forget_host_port(host, port)


class BackendProbe:
    """Health and queue checks through the clients the requests use (keep-alive to each server)."""

    def __init__(self, clients: HttpClients, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> None:
        self.clients = clients
        self.timeout_s = timeout_s

    def _get_local(self, url: str) -> tuple[int, bytes]:
        """A GET to a plain-http server on this machine over the small socket client (no httpx
        for a `run` that only talks to local servers)."""
        from aitherctl.loopback_http import connect_tcp, get, host_header

        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return get(
            connect_tcp(host, port, self.timeout_s),
            host_header(host, port),
            target or "/",
            read_timeout_s=self.timeout_s,
        )

    def health(self, candidate: Candidate) -> str | None:
        """None when healthy, else why not ("connection refused", "GET /health → 503")."""
        if not candidate.health_url:
            return None
        path = "/" + candidate.health_url.split("/", 3)[-1]
        if is_local_plain(candidate.health_url):
            try:
                status, _body = self._get_local(candidate.health_url)
            except ConnectionRefusedError:
                return "health: connection refused"
            except TimeoutError:
                return f"health: GET {path} timed out after {self.timeout_s:g}s"
            except OSError as exc:
                if isinstance(exc.__cause__ or exc, ConnectionError):
                    return "health: connection refused"
                return f"health: GET {path}: {type(exc).__name__}"
            except ValueError as exc:
                return f"health: GET {path}: {type(exc).__name__}"
            return None if 200 <= status < 300 else f"health: GET {path} → {status}"
        import httpx

        try:
            answer = self.clients.for_url(candidate.health_url).get(
                candidate.health_url, timeout=self.timeout_s
            )
        except httpx.ConnectError:
            return "health: connection refused"
        except httpx.TimeoutException:
            return f"health: GET {path} timed out after {self.timeout_s:g}s"
        except httpx.HTTPError as exc:
            return f"health: GET {path}: {type(exc).__name__}"
        if not answer.is_success:
            return f"health: GET {path} → {answer.status_code}"
        return None

    def queue_waiting(self, candidate: Candidate) -> float | None:
        """Requests waiting for a slot, or None when the server does not say."""
        if not candidate.metrics_url or candidate.queue_metric is None:
            return None
        if is_local_plain(candidate.metrics_url):
            try:
                status, body = self._get_local(candidate.metrics_url)
            except (OSError, ValueError):
                return None
            if not 200 <= status < 300:
                return None
            return queue_waiting_from_metrics(body.decode("utf-8", "replace"), candidate.engine)
        import httpx

        try:
            answer = self.clients.for_url(candidate.metrics_url).get(
                candidate.metrics_url, timeout=self.timeout_s
            )
        except httpx.HTTPError:
            return None
        if not answer.is_success:
            return None
        return queue_waiting_from_metrics(answer.text, candidate.engine)
