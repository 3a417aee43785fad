"""One switch at a time per Docker engine: an advisory file lock (flock) every user shares.

The lock is keyed on the engine's ID (`docker info` → `ID`), not on how its endpoint was spelled
(`unix:///var/run/docker.sock`, the default context and `DOCKER_HOST=` all reach one engine),
and it lives in the machine-wide folder (`aitherctl.paths.machine_dir`), so two users,
or a user and `sudo`, take the same lock. The namespace (`AITHER_NAMESPACE`) is part of the key:
stacks in different namespaces never touch each other's containers.

`engine_lock` is the one way to take it: every caller (switch, `up`, `down`, `recover`, serve's
on-demand loads, the monitor's actions, a switch across hosts) keys it the same way for the same
engine, this machine's or another host's, so none of them can run `recover` under a live switch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aitherctl.errors import BusyError
from aitherctl.paths import machine_dir

if TYPE_CHECKING:
    from aitherctl.docker.engine import DockerEngine

POLL_S = 0.1


class LockWaitCancelled(BusyError):
    """The wait for another switch was cancelled (a signal, `serve` shutting down); nothing
    was changed."""


def lock_key(engine_id: str, namespace: str) -> str:
    return hashlib.sha256(f"{engine_id}|{namespace}".encode()).hexdigest()[:16]


def engine_lock_key(engine: DockerEngine) -> str:
    """The lock key of `engine`: its own ID (`docker info` → `ID`, the same however it is
    reached: a socket, `ssh://user@host:port`, a context) and the namespace. Two engines that
    report one ID (cloned machines) share a lock: they wait for each other, never run together."""
    return lock_key(engine.engine_id, engine.namespace)


def engine_lock(
    engine: DockerEngine,
    *,
    timeout_s: float = 900.0,
    on_wait: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> contextlib.AbstractContextManager[None]:
    """The switch lock of `engine`; see `switch_lock`."""
    return switch_lock(
        engine.engine_id, engine.namespace, timeout_s=timeout_s, on_wait=on_wait, cancel=cancel
    )


@contextlib.contextmanager
def switch_lock(
    engine_id: str,
    namespace: str,
    *,
    timeout_s: float = 900.0,
    on_wait: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[None]:
    """Hold the lock for the engine `engine_id` and `namespace`; wait up to `timeout_s`, or
    until `cancel` is set (LockWaitCancelled, within POLL_S)."""
    path = machine_dir() / f"switch-{lock_key(engine_id, namespace)}.lock"
    # 0666 so that whichever user creates it first, every other user can open it too.
    old_mask = os.umask(0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    finally:
        os.umask(old_mask)
    handle = os.fdopen(fd, "r+")
    try:
        stop = cancel if cancel is not None else threading.Event()
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
                if stop.is_set():
                    raise LockWaitCancelled(
                        "cancelled while waiting for another switch; nothing was changed"
                    ) from None
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"another switch is still running after {timeout_s:g}s; try again later"
                    ) from None
                stop.wait(POLL_S)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, uid {os.getuid()}")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
