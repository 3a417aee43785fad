"""`aitherctl.threads.in_threads`: what the switch's transaction and the container listing rely on
when they run calls at once (results in order, every call ended before it returns, the first
failure in order raised, a failure or an interruption cancelling the others at once)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from aitherctl.threads import in_threads


def test_results_come_back_in_the_order_of_the_calls_whatever_order_they_end_in() -> None:
    def after(delay: float, value: int) -> int:
        time.sleep(delay)
        return value

    calls = [lambda: after(0.2, 1), lambda: after(0.0, 2), lambda: after(0.1, 3)]
    assert in_threads(calls) == [1, 2, 3]


def test_at_most_workers_calls_run_at_once() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    in_threads([call] * 6, workers=2)
    assert most == 2


def test_the_first_failure_in_order_is_raised_once_every_call_has_ended() -> None:
    ended: list[str] = []

    def slow() -> None:
        time.sleep(0.2)
        ended.append("slow")

    def fails(message: str) -> None:
        raise ValueError(message)

    with pytest.raises(ValueError, match="first"):
        in_threads([slow, lambda: fails("first"), lambda: fails("second")])
    assert ended == ["slow"]  # it was waited for, not left running


def test_a_failure_calls_on_failure_while_the_others_still_run() -> None:
    cancel = threading.Event()

    def waits_for_cancel() -> str:
        return "cancelled" if cancel.wait(10) else "timed out"

    def fails() -> str:
        raise RuntimeError("boom")

    began = time.monotonic()
    with pytest.raises(RuntimeError):
        in_threads([waits_for_cancel, fails], on_failure=cancel.set)
    assert time.monotonic() - began < 5  # the waiting call was cancelled, not timed out


def test_an_interrupted_wait_cancels_the_calls_waits_for_them_and_raises() -> None:
    """A signal whose handler raises (the switch's guard) arrives while the caller waits."""
    cancel = threading.Event()
    started = threading.Semaphore(0)
    stopped: list[bool] = []

    def waits_for_cancel() -> None:
        started.release()
        stopped.append(cancel.wait(10))

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    main = threading.main_thread().ident

    def interrupt_once_both_wait() -> None:
        for _ in range(2):
            started.acquire()
        # ... and once the caller waits for them (its frame is in in_threads' wait), not before.
        while True:
            frame = sys._current_frames().get(main)
            names = []
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            if "wait_for_all" in names:
                break
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Thread(target=interrupt_once_both_wait)
    sender.start()
    try:
        with pytest.raises(Interrupted):
            in_threads([waits_for_cancel, waits_for_cancel], on_failure=cancel.set)
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert stopped == [True, True]  # both saw the cancel and ended before the raise


def test_no_calls_start_no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("a thread was started for no calls")

    monkeypatch.setattr(threading, "Thread", no_thread)
    assert in_threads([]) == []
