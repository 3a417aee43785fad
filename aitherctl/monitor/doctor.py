"""Is this machine ready to run profiles? The checks behind `aitherctl doctor` and `profile
validate`; the CLI only renders the report.

Each check is `ok`, `warn` (works, with a limitation) or `fail`. Profile mistakes are listed one
per line as `file:line: message`, every section included (services, `extends`, `${VAR}`,
routing, endpoints, budget), as the loader finds them at load time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from aitherctl.errors import AitherError, ConfigError, ExitCode
from aitherctl.models.check import profile_fits, short_context_warnings, too_small_problems
from aitherctl.models.fit import FitVerdict
from aitherctl.profiles.machine_ram import machine_ram_problems
from aitherctl.profiles.problems import problems_of

if TYPE_CHECKING:
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.gpu.model import GpuInventory
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.profiles.profile import Profile

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of `doctor`'s report: what was checked, `ok`, `warn` or `fail`, the detail, and a
    profile's mistakes one per line."""

    name: str
    status: Status
    detail: str
    problems: tuple[str, ...] = ()  # `file:line: message`, one per mistake


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """One profile file as the loader found it: its name, its mistakes (`file:line: message`),
    and the profile when it loaded."""

    path: Path
    name: str
    problems: tuple[str, ...]
    profile: Profile | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """What `doctor` and `profile validate` found: the machine's checks and each profile's
    result."""

    checks: tuple[Check, ...]
    profiles: tuple[ProfileResult, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not any(check.status == "fail" for check in self.checks)

    @property
    def exit_code(self) -> ExitCode:
        """3 when a profile is wrong (what `profile validate` says too), 1 for another failure."""
        if any(not result.ok for result in self.profiles):
            return ExitCode.INVALID_CONFIG
        return ExitCode.OK if self.ok else ExitCode.ERROR


def validate_profiles(
    catalog: ProfileCatalog,
    paths: Sequence[Path],
    *,
    models: bool = True,
    gpu_totals: Mapping[int, int] | None = None,
) -> list[ProfileResult]:
    """Load each file as a switch would (`extends` resolved, `${VAR}` expanded) and list every
    mistake in it; with `models`, a GPU budget that cannot hold its model's weights is one
    (absolute budgets, and shares of the GPUs in `gpu_totals`)."""
    results = []
    for path in paths:
        try:
            profile = catalog.load_file(path)
        except ConfigError as exc:
            results.append(
                ProfileResult(path, path.stem, tuple(p.message for p in problems_of(exc)))
            )
        except AitherError as exc:
            results.append(ProfileResult(path, path.stem, (exc.message,)))
        else:
            # The file is sound; a `ram:` budget this machine's memory cannot hold is not.
            ram = machine_ram_problems(profile)
            where = profile.source
            problems = tuple(
                f"{where}:{problem.line}: {problem.message}"
                if problem.line is not None
                else f"{where}: {problem.message}"
                for problem in ram
            )
            if models:
                problems += tuple(too_small_problems(profile, profile_fits(profile, gpu_totals)))
            results.append(ProfileResult(path, profile.name, problems, profile))
    return results


def run_doctor(
    docker: Callable[[], DockerEngine],
    inventory: GpuInventory,
    catalog: ProfileCatalog,
    port_is_free: Callable[[str, int], bool],
) -> DoctorReport:
    """Docker, the NVIDIA runtime, GPUs, every profile, and whether their ports are free.
    `docker` connects to the engine (raising `AitherError` when it cannot)."""
    checks: list[Check] = []
    engine: DockerEngine | None = None
    try:
        engine = docker()
        version = engine.version()
        checks.append(
            Check("docker", "ok", f"engine {version.get('Version')} at {engine.endpoint}")
        )
    except AitherError as exc:
        checks.append(Check("docker", "fail", exc.message))

    if inventory.available:
        names = ", ".join(f"{gpu.index}: {gpu.name}" for gpu in inventory.gpus)
        checks.append(Check("gpu", "ok", f"driver {inventory.driver_version}; {names}"))
    else:
        checks.append(Check("gpu", "warn", f"{inventory.error}; only CPU services can run"))

    if engine is not None:
        checks.append(_nvidia_runtime(engine, gpu_present=inventory.available))

    results = validate_profiles(catalog, [entry.path for entry in catalog.entries()], models=False)
    bad = [result for result in results if not result.ok]
    if bad:
        problems = tuple(problem for result in bad for problem in result.problems)
        checks.append(
            Check(
                "profiles",
                "fail",
                f"{len(bad)} of {len(results)} profiles have mistakes "
                f"({len(problems)} in all); fix each line below",
                problems,
            )
        )
    else:
        checks.append(Check("profiles", "ok", f"{len(results)} valid"))

    profiles = [result.profile for result in results if result.profile is not None]
    checks.append(_ports(engine, profiles, port_is_free))
    checks.append(_unauthenticated(profiles))
    totals = {gpu.index: gpu.memory_total_bytes for gpu in inventory.gpus}
    checks.append(_models(profiles, totals if inventory.available else None))
    return DoctorReport(tuple(checks), tuple(results))


def _nvidia_runtime(engine: DockerEngine, *, gpu_present: bool) -> Check:
    try:
        info = engine.info()
    except AitherError as exc:
        return Check("nvidia runtime", "fail", exc.message)
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    cdi = info.get("CDISpecDirs")
    if "nvidia" in runtimes:
        return Check("nvidia runtime", "ok", "nvidia runtime registered")
    return Check(
        "nvidia runtime",
        "fail" if gpu_present else "warn",
        f"no nvidia runtime (runtimes: {', '.join(runtimes)}); install the NVIDIA "
        "Container Toolkit and run `nvidia-ctk runtime configure`"
        + (f" (CDI dirs: {cdi})" if cdi else ""),
    )


def _unauthenticated(profiles: Sequence[Profile]) -> Check:
    """Services that answer beyond loopback without an API key: only a profile that says
    `allow_unauthenticated_network: true` may have them, and anyone on that network can use
    them."""
    found = [
        f"{profile.name}/{name} ({svc.reach or svc.bind or '0.0.0.0'}:{svc.port})"
        for profile in profiles
        for name, svc in sorted(profile.services.items())
        if name in profile.open_services
    ]
    if not found:
        return Check("network", "ok", "no service answers on the network without an API key")
    return Check(
        "network",
        "warn",
        "answer on the network without an API key (allow_unauthenticated_network): "
        + ", ".join(found),
    )


def _ports(
    engine: DockerEngine | None,
    profiles: Sequence[Profile],
    port_is_free: Callable[[str, int], bool],
) -> Check:
    ours: set[int] = set()
    if engine is not None:
        with contextlib.suppress(AitherError):
            ours = {item.port for item in engine.list_managed() if item.port and item.running}
    taken = []
    for profile in profiles:
        for svc in profile.services.values():
            if svc.port not in ours and not port_is_free(svc.bind, svc.port):
                taken.append(f"{svc.port} ({profile.name}/{svc.name})")
    if taken:
        return Check("ports", "warn", "in use by other programs: " + ", ".join(sorted(set(taken))))
    return Check("ports", "ok", "every profile's ports are free or aitherctl's")


def _models(profiles: Sequence[Profile], gpu_totals: Mapping[int, int] | None) -> Check:
    """Services whose budget cannot hold their model's weights (fail), or not its KV cache at
    the configured context (warn), from the model files on this machine."""
    too_small: list[str] = []
    short: list[str] = []
    estimated = unknown = 0
    for profile in profiles:
        fits = profile_fits(profile, gpu_totals)
        estimated += sum(1 for fit in fits if fit.estimate is not None)
        unknown += sum(1 for fit in fits if fit.verdict is FitVerdict.UNKNOWN)
        too_small += too_small_problems(profile, fits)
        short += [f"{profile.name}/{line}" for line in short_context_warnings(fits)]
    counts = f"{estimated} estimated, {unknown} unknown until downloaded"
    if too_small:
        return Check(
            "models",
            "fail",
            (
                "1 service's budget cannot hold its model"
                if len(too_small) == 1
                else f"{len(too_small)} services' budgets cannot hold their models"
            )
            + f" ({counts})",
            tuple(too_small + short),
        )
    if short:
        return Check("models", "warn", f"KV cache short of the context ({counts})", tuple(short))
    if not estimated:
        return Check("models", "ok", f"no model's size is known here yet ({counts})")
    return Check("models", "ok", f"every budget holds its model ({counts})")
