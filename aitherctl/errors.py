"""The project's own errors: each carries a one-line message a user can act on and an exit code.

Adapters turn docker, NVML and HTTP exceptions into these; the CLI prints `error: MESSAGE` on
stderr and exits with `exit_code`. The codes are documented in README.md and are stable.
"""

from __future__ import annotations

from enum import IntEnum

# Not `typing.TYPE_CHECKING`: importing typing costs `run` through serve a few ms (mypy reads
# any name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad command-line usage (also Typer's own code)
    INVALID_CONFIG = 3  # a profile or configuration file is wrong
    NOT_FOUND = 4  # unknown profile, service or container
    REFUSED = 5  # a pre-check refused the change: VRAM, port, GPU, image; nothing was changed
    SWITCH_FAILED = 6  # a service did not become ready; the previous set was restored
    DOCKER_UNAVAILABLE = 7  # the Docker engine cannot be reached
    BUSY = 8  # another switch holds the lock
    BACKEND_FAILED = 9  # routing: every candidate failed
    BUDGET_EXCEEDED = 10  # routing: the daily budget forbids the request
    INTERRUPTED = 130


class AitherError(Exception):
    """Base of every error a user may see. `str(err)` is the one-line message."""

    exit_code: ExitCode = ExitCode.ERROR
    result: Any = None  # what a failed `run` has to show for itself (its --json document)

    def __init__(
        self,
        message: str,
        *,
        detail: str | None = None,
        host: str | None = None,
        changed: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Extra lines (a VRAM table, a log tail) printed after the one-line message.
        self.detail = detail
        # The profile's name for the Docker host the error happened on (None: this machine's,
        # or no host at all), and whether anything was changed (None: not said).
        self.host = host
        self.changed = changed


class ConfigError(AitherError):
    exit_code = ExitCode.INVALID_CONFIG

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + message)
        self.source = source
        self.line = line
        self.reason = message


class NotFoundError(AitherError):
    exit_code = ExitCode.NOT_FOUND


class RefusedError(AitherError):
    exit_code = ExitCode.REFUSED


class SwitchFailedError(AitherError):
    exit_code = ExitCode.SWITCH_FAILED


class DockerUnavailableError(AitherError):
    exit_code = ExitCode.DOCKER_UNAVAILABLE


class DockerError(AitherError):
    """The engine answered but refused an operation (not a connectivity problem)."""

    exit_code = ExitCode.ERROR


class BusyError(AitherError):
    exit_code = ExitCode.BUSY


class UsageError(AitherError):
    exit_code = ExitCode.USAGE


class GpuUnavailableError(AitherError):
    """NVML cannot be used: no NVIDIA driver, no GPU, or a failed call."""

    exit_code = ExitCode.REFUSED


class BackendFailedError(AitherError):
    """Routing: every candidate failed, or one failed after its answer had started
    (`result.answer` then holds the partial text). `result` is the run's record, if any."""

    exit_code = ExitCode.BACKEND_FAILED
    result: Any = None  # aitherctl.routing.router.RunResult


class BudgetExceededError(AitherError):
    """Routing: the daily budget forbids every candidate that was left."""

    exit_code = ExitCode.BUDGET_EXCEEDED
    result: Any = None  # aitherctl.routing.router.RunResult
