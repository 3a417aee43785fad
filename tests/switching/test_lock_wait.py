"""The switch lock's wait ends when it is cancelled (a signal, `serve` shutting down), instead of
holding the caller for up to `timeout_s` (15 minutes by default)."""

from __future__ import annotations

import threading
import uuid

import pytest

from aitherctl.errors import BusyError
from aitherctl.switching.lock import LockWaitCancelled, switch_lock


def test_a_cancelled_wait_ends_with_nothing_changed() -> None:
    engine_id = f"test-{uuid.uuid4().hex}"
    waiting = threading.Event()
    cancel = threading.Event()
    outcome: list[BaseException | str] = []

    def wait_for_it() -> None:
        try:
            with switch_lock(engine_id, "default", on_wait=lambda _: waiting.set(), cancel=cancel):
                outcome.append("got the lock")
        except BusyError as exc:
            outcome.append(exc)

    with switch_lock(engine_id, "default", timeout_s=5):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        assert waiting.wait(30), "the second caller never waited"
        cancel.set()
        waiter.join(30)  # a bound for a hung test, not a timing: the default wait is 900 s
        assert not waiter.is_alive()
    [error] = outcome
    assert isinstance(error, LockWaitCancelled)
    assert error.message == "cancelled while waiting for another switch; nothing was changed"


def test_a_wait_that_is_not_cancelled_gets_the_lock_once_it_is_free() -> None:
    engine_id = f"test-{uuid.uuid4().hex}"
    waiting, cancel = threading.Event(), threading.Event()
    got: list[str] = []

    def wait_for_it() -> None:
        with switch_lock(engine_id, "default", on_wait=lambda _: waiting.set(), cancel=cancel):
            got.append("yes")

    holder = switch_lock(engine_id, "default", timeout_s=5)
    holder.__enter__()
    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert waiting.wait(30)
    holder.__exit__(None, None, None)
    waiter.join(30)
    assert got == ["yes"]


def test_a_cancel_set_before_the_wait_refuses_only_when_the_lock_is_taken() -> None:
    engine_id = f"test-{uuid.uuid4().hex}"
    cancel = threading.Event()
    cancel.set()
    second = switch_lock(engine_id, "default", cancel=cancel)
    with switch_lock(engine_id, "default", cancel=cancel), pytest.raises(LockWaitCancelled):
        second.__enter__()
