"""Does each service's model fit its budget? The operation `profile plan`, `switch`, `up`,
`validate` and `doctor` share: read each model's metadata here (`files.py`), estimate
(`fit.py`), and refuse a budget that cannot hold the weights alone.

A model whose files cannot be read on this machine is "size unknown until downloaded", never a
reason to refuse; one whose files are there but unreadable says why, and is not refused either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from aitherctl.errors import RefusedError
from aitherctl.models.files import ModelNotHere, read_model_shape
from aitherctl.models.fit import (
    ESTIMATED_ENGINES,
    EstimateError,
    FitVerdict,
    ServiceFit,
    estimate_fit,
    judge_fit,
)
from aitherctl.models.gguf import MetadataError
from aitherctl.profiles.profile import Profile, Service
from aitherctl.units import format_bytes


def fit_service(
    service: Service, budget_bytes: int | None, pool: str = "vram"
) -> ServiceFit | None:
    """The estimate for one service beside its budget: per GPU (`pool` "vram"), or a CPU
    service's `ram:` ("ram"); None for an engine with no estimate (Ollama, ComfyUI,
    generic)."""
    if service.engine.value not in ESTIMATED_ENGINES:
        return None
    try:
        shape = read_model_shape(service)
    except ModelNotHere as exc:
        return ServiceFit(
            service.name, FitVerdict.UNKNOWN, budget_bytes=budget_bytes,
            reason=f"size unknown until downloaded ({exc})", pool=pool,
        )  # fmt: skip
    except MetadataError as exc:
        return ServiceFit(
            service.name, FitVerdict.UNKNOWN, budget_bytes=budget_bytes,
            reason=f"size unknown: {exc}", pool=pool,
        )  # fmt: skip
    except (OSError, ValueError) as exc:  # an unreadable cache folder, a refs file not UTF-8
        return ServiceFit(
            service.name, FitVerdict.UNKNOWN, budget_bytes=budget_bytes,
            reason=f"size unknown: {service.model}: {exc}", pool=pool,
        )  # fmt: skip
    try:
        estimate = estimate_fit(
            service.engine.value,
            shape,
            service.args,
            gpus=max(1, len(service.gpus)),
            on_cpu=not service.gpus,
            env=service.env,
        )
    except EstimateError as exc:
        return ServiceFit(
            service.name, FitVerdict.UNKNOWN, budget_bytes=budget_bytes,
            reason=f"size unknown: {exc}", pool=pool,
        )  # fmt: skip
    fit = judge_fit(service.name, estimate, budget_bytes, pool)
    return replace(fit, source=shape.source)


def fit_services(
    services: Iterable[Service],
    budgets: Mapping[str, int | None],
    machine_ram: int | None = None,
) -> tuple[ServiceFit, ...]:
    """Every service with an estimating engine, in the order given: a GPU service against its
    per-GPU budget in `budgets`, a CPU service against its `ram:` (a share of `machine_ram`)."""
    fits = (
        fit_service(svc, budgets.get(svc.name))
        if svc.gpus
        else fit_service(svc, ram_budget(svc, machine_ram), "ram")
        for svc in services
    )
    return tuple(fit for fit in fits if fit is not None)


def ram_budget(service: Service, machine_ram: int | None) -> int | None:
    """A CPU service's `ram:` in bytes: as written, or its share of `machine_ram` when that is
    known; None without one."""
    return None if service.ram is None else service.ram.of(machine_ram)


def service_budget(service: Service, gpu_totals: Mapping[int, int] | None) -> int | None:
    """The service's budget per GPU without a built container: an absolute `vram` as it is, a
    share against each GPU's total when `gpu_totals` are known (the smallest); None otherwise."""
    if not service.gpus or service.vram is None:
        return None
    if service.vram.bytes is not None:
        return service.vram.bytes
    if not gpu_totals or any(gpu not in gpu_totals for gpu in service.gpus):
        return None
    return min(service.vram.resolve(gpu_totals[gpu]) for gpu in service.gpus)


def profile_fits(
    profile: Profile, gpu_totals: Mapping[int, int] | None = None
) -> tuple[ServiceFit, ...]:
    """Every service of `profile` (`validate`, `doctor`: no container built)."""
    services = list(profile.services.values())
    budgets = {svc.name: service_budget(svc, gpu_totals) for svc in services}
    return fit_services(services, budgets, machine_ram_for(profile))


def machine_ram_for(profile: Profile) -> int | None:
    """This machine's memory where a CPU service's `ram:` is a share of it (psutil is only
    imported then)."""
    if not any(svc.ram is not None and svc.ram.is_share for svc in profile.services.values()):
        return None
    from aitherctl.profiles.machine_ram import machine_ram_bytes

    return machine_ram_bytes()


def too_small_problems(profile: Profile, fits: Iterable[ServiceFit]) -> list[str]:
    """One line per service whose budget cannot hold its weights: `file:line: ...`."""
    lines = []
    for fit in fits:
        if fit.verdict is not FitVerdict.TOO_SMALL or fit.estimate is None:
            continue
        service = profile.services.get(fit.service)
        line = service.line if service is not None else None
        where = f"{profile.source}:{line}: " if line is not None else f"{profile.source}: "
        assert fit.budget_bytes is not None
        estimate = fit.estimate
        ram = fit.pool == "ram"
        per_gpu = " per GPU" if estimate.gpus > 1 and not ram else ""
        lines.append(
            f"{where}service {fit.service!r}: its {'RAM ' if ram else ''}budget of "
            f"{format_bytes(fit.budget_bytes)} "
            f"cannot hold its model's weights alone ({format_bytes(estimate.weights_per_gpu_bytes)}"
            f"{per_gpu}, {estimate.weights_method}): raise `{'ram' if ram else 'vram'}` or use a "
            "smaller model or quantisation"
        )
    return lines


def refuse_too_small(profile: Profile, fits: Iterable[ServiceFit]) -> None:
    """RefusedError for the first service whose budget cannot hold its weights."""
    problems = too_small_problems(profile, fits)
    if problems:
        raise RefusedError(problems[0], detail="\n".join(problems[1:]) or None)


def short_context_warnings(fits: Iterable[ServiceFit]) -> list[str]:
    """Budgets that hold the weights but not the KV cache at the configured context."""
    warnings = []
    for fit in fits:
        if fit.verdict is FitVerdict.SHORT_CONTEXT and fit.estimate is not None:
            flag = "--ctx-size" if fit.estimate.engine == "llamacpp" else "--max-model-len"
            warnings.append(
                f"service {fit.service!r}: its budget of {format_bytes(fit.budget_bytes)} holds "
                f"the weights but not the KV cache at {fit.estimate.kv_tokens:,} tokens; "
                + (
                    f"{flag} {fit.fitting_tokens} would fit"
                    if fit.fitting_tokens
                    else "no context fits beside the engine's overhead "
                    f"(about {format_bytes(fit.estimate.overhead_bytes)})"
                )
            )
    return warnings
