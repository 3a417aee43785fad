"""The VRAM planner: will the target's services fit on each GPU, beside what else holds memory?

Per GPU, what will be held must not exceed the GPU's total memory (NVML
`nvmlDeviceGetMemoryInfo().total`, as in `nvidia-smi --query-gpu=memory.total`):
- each service that will run, at its budget on *that* GPU (a 35% budget is resolved against each
  card's own total), or at what it really uses now when that is more (a kept llama.cpp or Ollama
  server that no flag holds to its budget);
- the profile's reserve;
- memory held outside aitherctl: the larger of what NVML's process list attributes to processes
  that are not in aitherctl's containers (`nvidia-smi --query-compute-apps=pid,used_memory`) and
  the GPU's used memory minus what aitherctl's running services really use. The second term keeps
  WSL2 and vGPU machines safe, where the process list is empty although memory is taken;
- what the NVIDIA driver and firmware reserve (NVML memory info v2's `reserved`; older drivers
  count it in `used`, so it lands in the term above instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines.container import ContainerSpec
from aitherctl.gpu.model import GpuInventory, GpuProcess
from aitherctl.units import MemoryAmount, format_bytes


@dataclass(frozen=True, slots=True)
class GpuClaim:
    """A service that will hold memory on `gpus`: `budgets` per GPU ((index, bytes), ...)."""

    service: str
    gpus: tuple[int, ...]
    budgets: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, spec: ContainerSpec | ManagedContainer) -> GpuClaim:
        budgets = tuple((gpu, spec.budget_on(gpu) or 0) for gpu in spec.gpus)
        return cls(spec.service, spec.gpus, budgets)

    def budget_on(self, gpu: int) -> int:
        return next((value for index, value in self.budgets if index == gpu), 0)


# service → GPU index → bytes it really holds there (NVML per-process memory of its PIDs)
ActualUse = Mapping[str, Mapping[int, int]]


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """A service's line in a GPU's budget: the bytes counted for it (its budget, or what it
    really uses when that is more, which `note` says)."""

    service: str
    bytes: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class GpuBudget:
    """One GPU in the plan: its total, the profile's reserve, the services' lines and the memory
    held outside aitherctl. It `fits` when all of that is within the total."""

    index: int
    name: str
    total_bytes: int
    reserve_bytes: int
    services: tuple[BudgetLine, ...]
    others: tuple[GpuProcess, ...]  # processes aitherctl does not manage
    # used memory minus aitherctl's services' real use; counted when more than `others` add up
    unattributed_bytes: int = 0
    # the NVIDIA driver's and firmware's own reservation (NVML memory info v2): in no process
    driver_reserved_bytes: int = 0

    @property
    def services_bytes(self) -> int:
        return sum(line.bytes for line in self.services)

    @property
    def listed_others_bytes(self) -> int:
        return sum(proc.used_bytes or 0 for proc in self.others)

    @property
    def others_bytes(self) -> int:
        """Memory held outside aitherctl: max(NVML's foreign processes, used - aitherctl's),
        plus what the driver reserves."""
        return max(self.listed_others_bytes, self.unattributed_bytes) + self.driver_reserved_bytes

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
    """The planner's verdict for the target's GPUs: one budget per GPU, and `problems` when the
    check could not be made at all."""

    gpus: tuple[GpuBudget, ...]
    problems: tuple[str, ...] = ()  # reasons the check could not pass at all (no NVML, no GPU N)

    @property
    def fits(self) -> bool:
        return not self.problems and all(gpu.fits for gpu in self.gpus)


# Without an engine to look at, no profile whose images are here can be named: say how to find
# one rather than name one (the built-in `cpu` needs an image that may not be pullable here).
NO_GPU_HINT = (
    "CPU services still can: `aitherctl profile plan NAME` says whether a profile's images are "
    "on the Docker engine (`bash scripts/quickstart.sh` builds an image and a `cpu-local` "
    "profile that uses it)."
)


def check_vram(
    services: Sequence[GpuClaim],
    inventory: GpuInventory,
    reserve: MemoryAmount,
    managed_pids: Iterable[int] = (),
    *,
    actual_use: ActualUse | None = None,
    running: Sequence[GpuClaim] = (),
    no_gpu_hint: str | None = None,
) -> VramCheck:
    """Check `services` (what will run after the change) against the GPUs in `inventory`.

    `managed_pids` are the host PIDs of aitherctl's containers (their memory is accounted for by
    budgets, not as "other processes"); `actual_use` is what each running service really holds
    per GPU; `running` are aitherctl's services running now, whose real use (or, when NVML cannot
    attribute it, their budget) is subtracted from the GPU's used memory to find what is held
    outside aitherctl. `no_gpu_hint` says what to run instead when there is no GPU (the caller
    knows which profiles' images are on the engine: `aitherctl.switching.images.no_gpu_hint`).
    """
    gpu_services = [spec for spec in services if spec.gpus]
    if not gpu_services:
        return VramCheck(())
    if not inventory.available:
        names = ", ".join(spec.service for spec in gpu_services)
        return VramCheck(
            (),
            (
                f"GPU services ({names}) cannot run: {inventory.error}. "
                + (no_gpu_hint or NO_GPU_HINT),
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
            budget = spec.budget_on(index)
            used = actual_use.get(spec.service, {}).get(index)
            if used is not None and used > budget:
                lines.append(
                    BudgetLine(spec.service, used, f"uses {format_bytes(used)}, over budget")
                )
            else:
                lines.append(BudgetLine(spec.service, budget))
        ours = 0
        for claim in running:
            if index not in claim.gpus:
                continue
            real = actual_use.get(claim.service, {}).get(index)
            ours += real if real is not None else claim.budget_on(index)
        others = tuple(proc for proc in gpu.processes if proc.pid not in managed)
        budgets.append(
            GpuBudget(
                index=index,
                name=gpu.name,
                total_bytes=gpu.memory_total_bytes,
                reserve_bytes=reserve.resolve(gpu.memory_total_bytes),
                services=tuple(lines),
                others=others,
                unattributed_bytes=max(0, gpu.memory_used_bytes - ours),
                driver_reserved_bytes=gpu.memory_reserved_bytes,
            )
        )
    return VramCheck(tuple(budgets), tuple(problems))


def actual_use_by_service(
    containers: Iterable[ManagedContainer], inventory: GpuInventory
) -> dict[str, dict[int, int]]:
    """What each running service really holds on each GPU: NVML's per-process memory
    (`nvmlDeviceGetComputeRunningProcesses`) of the host PIDs in its container."""
    owner = {pid: item.service for item in containers if item.running for pid in item.pids}
    use: dict[str, dict[int, int]] = {}
    for gpu in inventory.gpus:
        for proc in gpu.processes:
            service = owner.get(proc.pid)
            if service is None or proc.used_bytes is None:
                continue
            per_gpu = use.setdefault(service, {})
            per_gpu[gpu.index] = per_gpu.get(gpu.index, 0) + proc.used_bytes
    return use


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
        if gpu.driver_reserved_bytes:
            held = gpu.driver_reserved_bytes
            lines.append(
                f"  {'driver reserved':<20} {format_bytes(held):>10}  {share(held)}  (the NVIDIA "
                "driver and firmware)"
            )
        extra = gpu.unattributed_bytes - gpu.listed_others_bytes
        if extra > 0:
            lines.append(
                f"  {'unattributed':<20} {format_bytes(extra):>10}  {share(extra)}  (used memory "
                "no listed process explains: not aitherctl's)"
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
