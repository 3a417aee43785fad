"""Is a host port free on this machine? (Only meaningful when the Docker engine is local.)"""

from __future__ import annotations

import contextlib
import socket


def port_is_free(bind: str, port: int) -> bool:
    """True unless something listens on (bind, port). SO_REUSEADDR so that connections still in
    TIME_WAIT from a server that just stopped do not count as "taken" (a listener still does)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True
