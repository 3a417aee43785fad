"""The local engine's `GET /info`, asked for before it is needed.

A switch takes its lock on the engine's own ID (`docker info` → `ID`), and dockerd builds its
whole `/info` answer (storage, plugins, runtimes, counts) to give it: 10-16 ms on a small machine.
`start()` sends that request from a thread as soon as a command knows it will switch, so the
engine answers while the command is still importing the rest of its code; `DockerEngine.engine_id`
then takes the answer (`take`) instead of asking again.

Only for the local unix socket, whose client opens one connection per request and so is safe to
use from another thread. A request that fails is forgotten here: the engine's own request then
reports the failure as it always has.
"""

from __future__ import annotations

import threading
from typing import Any

_asked: dict[str, tuple[threading.Thread, list[dict[str, Any]]]] = {}
_lock = threading.Lock()


def start() -> None:
    """Ask the local engine (the socket the `docker` CLI would use) for `/info` in a thread; no-op
    when it has been asked already or the engine is not reached over a local socket."""
    from aitherctl.docker.listing import local_socket
    from aitherctl.docker.socket_api import SocketAPI

    path = local_socket()
    if path is None:
        return
    with _lock:
        if path in _asked:
            return
        answer: list[dict[str, Any]] = []

        def read() -> None:
            try:
                answer.append(SocketAPI(path).info())
            except Exception:  # the engine's own request reports it (module docstring)
                return

        thread = threading.Thread(target=read, name="docker-info", daemon=True)
        _asked[path] = (thread, answer)
    thread.start()


def take(socket_path: str) -> dict[str, Any] | None:
    """The answer `start()` asked the engine at `socket_path` for, once it has come (None when it
    was not asked or failed). Each answer is taken once."""
    with _lock:
        asked = _asked.pop(socket_path, None)
    if asked is None:
        return None
    thread, answer = asked
    thread.join()
    return answer[0] if answer else None
