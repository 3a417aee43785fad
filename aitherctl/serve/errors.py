"""What the scheduler raises when it cannot place a request, and what its effects raise when a
load fails. Each carries the HTTP status the gateway answers with."""

from __future__ import annotations

from aitherctl.errors import AitherError


class SchedulerError(AitherError):
    """A request the scheduler cannot place. `status` is the HTTP status the gateway answers."""

    status = 503
    kind = "unavailable"


class QueueFull(SchedulerError):
    status = 429
    kind = "queue_full"

    def __init__(self, backend: str, retry_after_s: int) -> None:
        super().__init__(f"{backend}: queue full ({retry_after_s}s suggested before retrying)")
        self.retry_after_s = retry_after_s


class LoadFailed(SchedulerError):
    kind = "load_failed"


class ExternallyBusy(LoadFailed):
    """A service the gateway sees idle is working on requests sent to it directly."""
