"""The machine's memory against the profile's `ram:` budgets, for `validate`, a switch and
`serve`: a service that could never fit is refused before anything runs."""

from __future__ import annotations

from aitherctl.errors import RefusedError
from aitherctl.profiles.profile import Profile
from aitherctl.profiles.ram_budget import RamProblem, ram_problems


def machine_ram_bytes() -> int | None:
    """This machine's total memory (`/proc/meminfo` MemTotal, as `free -b` shows it)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except (ImportError, OSError):
        return None


def machine_ram_problems(profile: Profile) -> list[RamProblem]:
    if all(svc.ram is None for svc in profile.services.values()):
        return []  # nothing to compare: psutil is not even imported (10 ms of every switch)
    return ram_problems(profile, machine_ram_bytes())


def refuse_impossible_ram(profile: Profile) -> None:
    """RefusedError (one line) when a service's `ram:` is more than `ram.limit` or this
    machine's memory."""
    problems = machine_ram_problems(profile)
    if problems:
        raise RefusedError(problems[0].message)


__all__ = ["machine_ram_bytes", "machine_ram_problems", "refuse_impossible_ram"]
