"""A few calls at once, in plain threads.

`concurrent.futures` imports `logging` (and `traceback` with it): about 10 ms of every switch's and
`ps`'s start-up on a small machine, for work that starts a handful of threads once. These callers
need only this: run the calls, wait for all of them, and raise the first failure in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

WAIT_SLICE_S = 0.05  # the longest a signal's handler waits to run while the caller waits


def in_threads(
    calls: Sequence[Callable[[], T]],
    *,
    workers: int = 8,
    on_failure: Callable[[], None] | None = None,
) -> list[T]:
    """`[call() for call in calls]`, at most `workers` at a time, each in a thread of its own.

    Returns once every call has ended; the first failure in the order of `calls` is then raised
    in the caller's thread. `on_failure` (say, setting a cancel event) runs as soon as a call
    fails, or when the caller's wait is interrupted (a signal's exception): the wait then goes on
    until every call has ended, as a `ThreadPoolExecutor` leaving its `with` block does, and the
    interruption is raised. A second interruption during that wait is raised at once.

    The caller waits on a condition of its own, in slices, not in `Thread.join`: on Python 3.11
    a join that a signal's exception interrupts marks the thread stopped while it still runs
    (bpo-45274), and a later join would not wait for it.
    """
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)
    pending = iter(range(len(calls)))
    remaining = len(calls)
    ended = threading.Condition()

    def work() -> None:
        nonlocal remaining
        while True:
            with ended:
                index = next(pending, None)
            if index is None:
                return
            try:
                results[index] = calls[index]()
            except BaseException as exc:  # raised in the caller's thread below
                errors[index] = exc
                if on_failure is not None:
                    on_failure()
            finally:
                with ended:
                    remaining -= 1
                    if not remaining:
                        ended.notify_all()

    def wait_for_all() -> None:
        with ended:
            while remaining:
                # In slices: a signal the OS gives another thread does not wake this one from a
                # lock's wait, and Python runs its handler here only when this thread runs.
                ended.wait(WAIT_SLICE_S)

    threads = [threading.Thread(target=work) for _ in range(min(workers, len(calls)))]
    try:
        for thread in threads:
            thread.start()
        wait_for_all()
    except BaseException:  # a signal's exception, while starting them or waiting
        if on_failure is not None:
            on_failure()
        if any(thread.ident is not None for thread in threads):
            wait_for_all()  # a started thread takes every call that is left
        raise
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]  # every call returned: no None is left
