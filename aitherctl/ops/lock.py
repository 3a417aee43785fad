"""One switch at a time per Docker engine and namespace: an advisory file lock (flock)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from aitherctl.errors import BusyError


def lock_dir() -> Path:
    override = os.environ.get("AITHER_STATE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_state_path

    return user_state_path("aitherctl")


@contextlib.contextmanager
def switch_lock(
    endpoint: str,
    namespace: str,
    *,
    timeout_s: float = 900.0,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the lock for `endpoint`/`namespace`; wait up to `timeout_s` for another holder."""
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{endpoint}|{namespace}".encode()).hexdigest()[:12]
    path = folder / f"switch-{key}.lock"
    handle = path.open("a+")
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    handle.seek(0)
                    holder = handle.read().strip() or "another aitherctl"
                    on_wait(f"waiting for another switch to finish ({holder})")
                    told = True
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"another switch is still running after {timeout_s:g}s; try again later"
                    ) from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
