"""Who may use the gateway from a browser: the `Host` and `Origin` rules that keep a web page the
user visits from spending their keys and budget (a cross-site request) or reading the answers
(DNS rebinding: a name the page controls made to resolve to 127.0.0.1).

- `Host` must name this machine: an IP address, `localhost` (or `*.localhost`), the machine's
  host name, the address `serve` listens on, or a name allowed with `--allow-host` /
  `$AITHER_ALLOWED_HOSTS`. A rebinding page's requests carry its own name and are refused.
- `Origin` (sent by browsers only) must be this machine's (`http(s)://localhost`, `127.0.0.1`,
  `[::1]`, any port) or one allowed with `--allow-origin` / `$AITHER_ORIGINS`, as Ollama's
  `OLLAMA_ORIGINS` does; entries may use `*` wildcards, and `*` alone allows every one.
- Allowed origins get CORS answers (preflight included); others get 403 before anything runs.

Pure: the machine's names are passed in.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOWED_HOSTS_ENV = "AITHER_ALLOWED_HOSTS"
ORIGINS_ENV = "AITHER_ORIGINS"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Allowed `Host` names (lower case, no port) and extra allowed `Origin`s (patterns)."""

    hosts: frozenset[str] = frozenset(_LOOPBACK_NAMES)
    origins: tuple[str, ...] = ()

    def host_allowed(self, host_header: str | None) -> bool:
        """Does this `Host` header name this machine? (None: no header, not a browser.)"""
        if host_header is None:
            return True
        return _host_allowed(self, host_header)

    def _check_host(self, host_header: str) -> bool:
        name = host_name(host_header)
        if not name:
            return False
        if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.hosts)

    def origin_allowed(self, origin: str) -> bool:
        """May a page of this origin call the gateway? Loopback origins always may."""
        normal = origin.strip().rstrip("/").lower()
        parts = urlsplit(normal)
        if parts.scheme in ("http", "https") and (parts.hostname or "") in _LOOPBACK_NAMES:
            return True
        return any(fnmatch.fnmatchcase(normal, pattern) for pattern in self.origins)


@functools.lru_cache(maxsize=256)
def _host_allowed(policy: AccessPolicy, host_header: str) -> bool:
    """Every request asks about the same few `Host` values: each is worked out once."""
    return policy._check_host(host_header)


def host_name(host_header: str) -> str:
    """`Host` without its port, lower case, without a final dot (`[::1]:8150` -> `::1`)."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def split_list(text: str | None) -> list[str]:
    """`a,b c` -> [a, b, c] (the environment variables' form)."""
    return [item for item in (text or "").replace(",", " ").split() if item]


def access_policy(
    bind_host: str,
    machine_names: Iterable[str],
    allow_hosts: Iterable[str] = (),
    allow_origins: Iterable[str] = (),
) -> AccessPolicy:
    """The policy for a gateway listening on `bind_host` on a machine called `machine_names`."""
    hosts = {*_LOOPBACK_NAMES, bind_host.strip("[]").lower()}
    hosts.update(name.lower().rstrip(".") for name in machine_names if name)
    hosts.update(host_name(name) if "*" not in name else name.lower() for name in allow_hosts)
    origins = tuple(origin.strip().rstrip("/").lower() for origin in allow_origins)
    return AccessPolicy(frozenset(h for h in hosts if h), origins)
