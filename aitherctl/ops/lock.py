"""One switch at a time per Docker engine: an advisory file lock (flock) every user shares.

The lock is keyed on the engine's ID (`docker info` → `ID`), not on how its endpoint was spelled
(`unix:///var/run/docker.sock`, the default context and `DOCKER_HOST=` all reach one engine),
and it lives in the machine-wide folder (`aitherctl.adapters.paths.machine_dir`), so two users,
or a user and `sudo`, take the same lock. The namespace (`AITHER_NAMESPACE`) is part of the key:
stacks in different namespaces never touch each other's containers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator

from aitherctl.adapters.paths import machine_dir
from aitherctl.errors import BusyError


def lock_key(engine_id: str, namespace: str) -> str:
    return hashlib.sha256(f"{engine_id}|{namespace}".encode()).hexdigest()[:16]


@contextlib.contextmanager
def switch_lock(
    engine_id: str,
    namespace: str,
    *,
    timeout_s: float = 900.0,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the lock for the engine `engine_id` and `namespace`; wait up to `timeout_s`."""
    path = machine_dir() / f"switch-{lock_key(engine_id, namespace)}.lock"
    # 0666 so that whichever user creates it first, every other user can open it too.
    old_mask = os.umask(0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    finally:
        os.umask(old_mask)
    handle = os.fdopen(fd, "r+")
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
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, uid {os.getuid()}")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
