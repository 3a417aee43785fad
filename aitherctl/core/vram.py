"""The VRAM planner: will the target's services fit on each GPU, beside what else holds memory?

Per GPU: the budgets of the services that will run (resident services of the target, plus
on-demand ones already running and kept) + the profile's reserve + memory held by processes
aitherctl does not manage (NVML's per-process list) must not exceed the GPU's total memory.
A kept service that already uses more than its budget is counted at what it uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aitherctl.core.container import ContainerSpec
from aitherctl.core.gpu import GpuInventory, GpuProcess
from aitherctl.core.stack import ManagedContainer
from aitherctl.core.units import MemoryAmount, format_bytes


@dataclass(frozen=True, slots=True)
class GpuClaim:
    """A service that will hold memory on `gpus`: `vram_bytes` on each."""

    service: str
    gpus: tuple[int, ...]
    vram_bytes: int | None

    @classmethod
    def of(cls, spec: ContainerSpec | ManagedContainer) -> GpuClaim:
        name = spec.service
        return cls(name, spec.gpus, spec.vram_bytes)


@dataclass(frozen=True, slots=True)
class BudgetLine:
    service: str
    bytes: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class GpuBudget:
    index: int
    name: str
    total_bytes: int
    reserve_bytes: int
    services: tuple[BudgetLine, ...]
    others: tuple[GpuProcess, ...]  # processes aitherctl does not manage

    @property
    def services_bytes(self) -> int:
        return sum(line.bytes for line in self.services)

    @property
    def others_bytes(self) -> int:
        return sum(proc.used_bytes or 0 for proc in self.others)

    @property
    def needed_bytes(self) -> int:
        return self.services_bytes + self.reserve_bytes + self.others_bytes

    @property
    def missing_bytes(self) -> int:
        return max(0, self.needed_bytes - self.total_bytes)

    @property
    def fits(self) -> bool:
        return self.missing_bytes == 0


@dataclass(frozen=True, slots=True)
class VramCheck:
    gpus: tuple[GpuBudget, ...]
    problems: tuple[str, ...] = ()  # reasons the check could not pass at all (no NVML, no GPU N)

    @property
    def fits(self) -> bool:
        return not self.problems and all(gpu.fits for gpu in self.gpus)


def check_vram(
    services: Sequence[GpuClaim],
    inventory: GpuInventory,
    reserve: MemoryAmount,
    managed_pids: Iterable[int] = (),
    actual_use: Mapping[str, int] | None = None,
) -> VramCheck:
    """Check `services` (what will run after the switch) against the GPUs in `inventory`.

    `managed_pids` are the host PIDs of aitherctl's containers (their memory is accounted for by
    budgets, not as "other processes"); `actual_use` maps a kept service to the bytes it holds now.
    """
    gpu_services = [spec for spec in services if spec.gpus]
    if not gpu_services:
        return VramCheck(())
    if not inventory.available:
        names = ", ".join(spec.service for spec in gpu_services)
        return VramCheck(
            (),
            (
                f"GPU services ({names}) cannot run: {inventory.error}. CPU services still can "
                "(e.g. `aitherctl profile switch cpu`).",
            ),
        )
    managed = set(managed_pids)
    actual_use = actual_use or {}
    problems = []
    budgets = []
    wanted = sorted({index for spec in gpu_services for index in spec.gpus})
    for index in wanted:
        gpu = inventory.by_index(index)
        users = [spec for spec in gpu_services if index in spec.gpus]
        if gpu is None:
            known = ", ".join(str(g.index) for g in inventory.gpus)
            problems.append(
                f"GPU {index} does not exist (this machine has GPU {known}); "
                f"needed by {', '.join(spec.service for spec in users)}"
            )
            continue
        lines = []
        for spec in users:
            budget = spec.vram_bytes or 0
            used = actual_use.get(spec.service)
            if used is not None and used > budget:
                lines.append(
                    BudgetLine(spec.service, used, f"uses {format_bytes(used)}, over budget")
                )
            else:
                lines.append(BudgetLine(spec.service, budget))
        others = tuple(proc for proc in gpu.processes if proc.pid not in managed)
        budgets.append(
            GpuBudget(
                index=index,
                name=gpu.name,
                total_bytes=gpu.memory_total_bytes,
                reserve_bytes=reserve.resolve(gpu.memory_total_bytes),
                services=tuple(lines),
                others=others,
            )
        )
    return VramCheck(tuple(budgets), tuple(problems))


def describe_vram(check: VramCheck, *, only_failing: bool = False) -> list[str]:
    """The arithmetic, one line each, for error messages and `profile plan`."""
    lines = list(check.problems)
    for gpu in check.gpus:
        if only_failing and gpu.fits:
            continue
        total = gpu.total_bytes

        def share(value: int, total: int = total) -> str:
            return f"{value / total * 100:4.1f}%"

        lines.append(f"GPU {gpu.index} ({gpu.name}, {format_bytes(total)}):")
        for line in gpu.services:
            note = f"  ({line.note})" if line.note else ""
            lines.append(
                f"  {line.service:<20} {format_bytes(line.bytes):>10}  {share(line.bytes)}{note}"
            )
        lines.append(
            f"  {'reserve':<20} {format_bytes(gpu.reserve_bytes):>10}  {share(gpu.reserve_bytes)}"
        )
        for proc in gpu.others:
            label = f"pid {proc.pid}" + (f" {proc.name}" if proc.name else "")
            used = proc.used_bytes or 0
            lines.append(
                f"  {label:<20} {format_bytes(used):>10}  {share(used)}  (not aitherctl's)"
            )
        verdict = (
            f"fits, {format_bytes(total - gpu.needed_bytes)} spare"
            if gpu.fits
            else f"missing {format_bytes(gpu.missing_bytes)}"
        )
        lines.append(
            f"  {'needed':<20} {format_bytes(gpu.needed_bytes):>10}  of "
            f"{format_bytes(total)}: {verdict}"
        )
    return lines
