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
    """
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)
    pending = iter(range(len(calls)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(pending, None)
            if index is None:
                return
            try:
                results[index] = calls[index]()
            except BaseException as exc:  # raised in the caller's thread below
                errors[index] = exc
                if on_failure is not None:
                    on_failure()

    threads = [threading.Thread(target=work) for _ in range(min(workers, len(calls)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        if on_failure is not None:
            on_failure()
        for thread in threads:
            thread.join()
        raise
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]  # every call returned: no None is left
