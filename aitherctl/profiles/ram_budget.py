"""Host-RAM budgets of CPU services (`ram:`) against the profile's `ram.limit` and the machine's
memory: a service that can never fit is a mistake in the file, found before anything runs."""

from __future__ import annotations

from dataclasses import dataclass

from aitherctl.profiles.profile import LOCAL_HOST, Profile
from aitherctl.units import MemoryAmount, format_bytes


@dataclass(frozen=True, slots=True)
class RamProblem:
    """A CPU service whose `ram:` budget can never fit, and why, with the service's line in its
    file."""

    service: str
    message: str  # one line, without file:line
    line: int | None  # the service's line in its file


def _bytes(amount: MemoryAmount, machine_bytes: int | None) -> int | None:
    if amount.bytes is not None:
        return amount.bytes
    return amount.resolve(machine_bytes) if machine_bytes is not None else None


def ram_problems(profile: Profile, machine_bytes: int | None = None) -> list[RamProblem]:
    """Each service whose `ram:` is more than `ram.limit` or than `machine_bytes` (the host's
    total memory, `/proc/meminfo` MemTotal, as `free -b` shows it; None: not checked). Shares
    (`ram: 25%`) are of the machine's memory, so they compare with bytes only when it is given."""
    problems = []
    limit = profile.ram_limit
    for name, svc in profile.services.items():
        if svc.ram is None:
            continue
        # Only this machine's memory is known: a service on another host is held to the limit.
        machine = machine_bytes if svc.host == LOCAL_HOST else None
        wanted = _bytes(svc.ram, machine)
        if limit is not None:
            cap = _bytes(limit, machine)
            over = (
                wanted > cap
                if wanted is not None and cap is not None
                else svc.ram.share is not None
                and limit.share is not None
                and svc.ram.share > limit.share
            )
            if over:
                problems.append(
                    RamProblem(
                        name,
                        f"service {name!r}: `ram: {svc.ram}` is more than the profile's "
                        f"`ram.limit` ({limit}): lower it, or raise the limit",
                        svc.line,
                    )
                )
                continue
        if machine is not None and wanted is not None and wanted > machine:
            problems.append(
                RamProblem(
                    name,
                    f"service {name!r}: `ram: {svc.ram}` is more than this machine's memory "
                    f"({format_bytes(machine)})",
                    svc.line,
                )
            )
    return problems


__all__ = ["RamProblem", "ram_problems"]
