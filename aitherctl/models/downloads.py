"""The downloads in progress, where every front-end can see them: one small JSON file per
(host, service) in the state folder's `downloads/`, written by the process that downloads (a
switch, `up`, `pull`, `serve`'s on-demand start) at each reported step and removed when it ends.
The monitor reads the folder on each refresh. A file left by a process that died (its `pid`
gone), or not updated for `STALE_S`, is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from aitherctl.models.pull_model import DownloadState, PullEvent
from aitherctl.paths import pid_alive

FOLDER = "downloads"
STALE_S = 120.0  # Ollama and the Hub pulls report at least every second while bytes flow


def _folder() -> Path:
    from aitherctl.paths import state_dir

    return state_dir() / FOLDER


def _path(host: str, service: str) -> Path:
    return _folder() / f"{host}--{service}.json"


def report_download(
    host: str, event: PullEvent, engine: str | None = None, model: str | None = None
) -> None:
    """Record `event` as the service's download in progress (never raises: a monitor's view
    must not break a download). `engine` and `model` let a service without a container yet
    be shown."""
    body = {
        "service": event.service, "host": host, "file": event.file,
        "done_bytes": event.done_bytes, "total_bytes": event.total_bytes,
        "updated_ts": time.time(), "pid": os.getpid(), "engine": engine, "model": model,
    }  # fmt: skip
    with contextlib.suppress(OSError):
        path = _path(host, event.service)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(body))
        temporary.replace(path)


def end_download(host: str, service: str) -> None:
    with contextlib.suppress(OSError):
        _path(host, service).unlink(missing_ok=True)


def downloads_in_progress(now: float | None = None) -> dict[tuple[str, str], DownloadState]:
    """(host, service) → its download in progress."""
    now = time.time() if now is None else now
    found: dict[tuple[str, str], DownloadState] = {}
    try:
        paths = sorted(_folder().glob("*.json"))
    except OSError:
        return found
    for path in paths:
        try:
            item = json.loads(path.read_text())
            state = DownloadState(
                str(item["service"]), str(item["host"]), item.get("file"),
                int(item["done_bytes"]), item.get("total_bytes"), float(item["updated_ts"]),
                item.get("engine"), item.get("model"),
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if now - state.updated_ts > STALE_S or not pid_alive(item.get("pid")):
            continue
        found[(state.host, state.service)] = state
    return found
