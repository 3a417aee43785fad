"""Every change to the running set, one way: prepare a plan, then execute it as a transaction.

`prepare_*` build the plan for a profile switch, `up`, `down` or the monitor's restart, and check
it (VRAM per GPU, ports, GPUs) without the lock and without changing anything, so a front-end can
show it and ask. `execute` then takes the engine's switch lock, first recovers what an earlier,
killed switch left behind, re-prepares the same change with fresh GPU readings, and applies it
only if it is still the plan that was shown (`PlanChangedError` otherwise: show it, ask again).
The CLI, `up`/`down` and the monitor all go through here; the sequence itself is
`aitherctl.ops.transaction`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from aitherctl.adapters.docker_engine import DockerEngine
from aitherctl.adapters.ports import port_is_free
from aitherctl.adapters.profile_store import ProfileCatalog
from aitherctl.core.container import ContainerSpec
from aitherctl.core.gpu import GpuInventory
from aitherctl.core.plan import Action, Plan, compute_plan, restart_plan, stop_plan
from aitherctl.core.profile import Profile
from aitherctl.core.specs import ProfileSpecs, build_specs
from aitherctl.core.stack import ManagedContainer
from aitherctl.core.units import MemoryAmount
from aitherctl.core.vram import (
    GpuClaim,
    VramCheck,
    actual_use_by_service,
    check_vram,
    describe_vram,
)
from aitherctl.errors import AitherError, NotFoundError, RefusedError
from aitherctl.ops.images import no_gpu_hint
from aitherctl.ops.lock import switch_lock
from aitherctl.ops.ram import refuse_impossible_ram
from aitherctl.ops.state import StackState, gpu_memory, observe
from aitherctl.ops.transaction import (
    Progress,
    ServiceOutcome,
    SwitchResult,
    Transaction,
    pending,
    recover,
)

InventoryReader = Callable[[], GpuInventory]


@dataclass(frozen=True, slots=True)
class Prepared:
    plan: Plan
    vram: VramCheck
    state: StackState
    profile: Profile | None = None
    specs: ProfileSpecs | None = None


class PlanChangedError(RefusedError):
    """Between the confirmation and the lock, the machine changed: the plan is not the one the
    user saw. Nothing was changed; `fresh` is the new plan to show."""

    def __init__(self, fresh: Prepared) -> None:
        super().__init__(
            "the plan changed since it was shown (another switch ran, or a container changed); "
            "nothing was changed: review the new plan and confirm again"
        )
        self.fresh = fresh


# ---- preparing ----------------------------------------------------------------------------------


def prepare(
    engine: DockerEngine,
    profile: Profile,
    inventory: GpuInventory,
    *,
    catalog: ProfileCatalog | None = None,
    only: Sequence[str] | None = None,
) -> Prepared:
    """Plan the move to `profile` (or, with `only`, bring just those services up) and check it.

    Raises RefusedError, with the reason and nothing changed, when it cannot work.
    """
    _require_gpus(profile, inventory, only, engine=engine, catalog=catalog)
    refuse_impossible_ram(profile)
    state = observe(engine, catalog, inventory, with_pids=inventory.available)
    specs = _specs(profile, inventory)
    if only is None:
        plan = compute_plan(profile.name, state.containers, specs.resident, specs.on_demand)
        untouched: list[ManagedContainer] = []
    else:
        for name in only:
            profile.service(name)  # NotFoundError for an unknown service
        wanted = {name: spec for name in only if (spec := specs.get(name)) is not None}
        mine = [item for item in state.containers if item.service in wanted]
        plan = compute_plan(profile.name, mine, wanted)
        untouched = [
            item for item in state.running if item.service not in wanted and not item.aside
        ]
    return _checked(
        engine,
        plan,
        state,
        inventory,
        profile.gpu_reserve,
        untouched=untouched,
        profile=profile,
        specs=specs,
    )


def _require_gpus(
    profile: Profile,
    inventory: GpuInventory,
    only: Sequence[str] | None = None,
    *,
    engine: DockerEngine | None = None,
    catalog: ProfileCatalog | None = None,
) -> None:
    """RefusedError when services that need a GPU would start and NVML sees none; its hint
    names a profile without GPU services whose images are on `engine` (or can be pulled)."""
    needs_gpu = (
        [name for name, svc in profile.resident.items() if svc.uses_gpu]
        if only is None
        else [name for name in only if profile.service(name).uses_gpu]
    )
    if needs_gpu and not inventory.available:
        raise RefusedError(
            f"profile {profile.name!r} needs a GPU for {', '.join(needs_gpu)}, "
            f"but {inventory.error}",
            detail=no_gpu_hint(engine, catalog) + "\n"
            f"Its plan for a GPU of a given size: `aitherctl profile plan {profile.name} "
            "--gpu-memory 24GiB`.",
        )


def prepare_offline(profile: Profile, inventory: GpuInventory) -> Prepared:
    """The plan as if nothing ran, for a machine whose Docker engine is not reachable (yet), or
    for GPUs assumed by `profile plan --gpu-memory`: every resident service starts; the VRAM
    check uses `inventory` (NVML's GPUs, or the assumed ones)."""
    _require_gpus(profile, inventory)
    state = StackState("-", "(no Docker engine)", (), None)
    specs = _specs(profile, inventory)
    plan = compute_plan(profile.name, [], specs.resident, specs.on_demand)
    claims = [GpuClaim.of(item) for item in plan.after]
    vram = check_vram(claims, inventory, profile.gpu_reserve)
    _refuse_unless_it_fits(plan.profile, vram)
    return Prepared(plan, vram, state, profile, specs)


def _specs(profile: Profile, inventory: GpuInventory) -> ProfileSpecs:
    # Without NVML only CPU services can be built (and only they were asked for).
    usable = {
        name: svc
        for name, svc in profile.services.items()
        if inventory.available or not svc.uses_gpu
    }
    return build_specs(replace(profile, services=usable), gpu_memory(inventory))


def _checked(
    engine: DockerEngine,
    plan: Plan,
    state: StackState,
    inventory: GpuInventory,
    reserve: MemoryAmount,
    *,
    untouched: Sequence[ManagedContainer] = (),
    profile: Profile | None = None,
    specs: ProfileSpecs | None = None,
) -> Prepared:
    running = [item for item in state.running if not item.aside]
    claims = [GpuClaim.of(item) for item in plan.after] + [GpuClaim.of(c) for c in untouched]
    managed_pids = [pid for item in state.containers for pid in item.pids]
    vram = check_vram(
        claims,
        inventory,
        reserve,
        managed_pids,
        actual_use=actual_use_by_service(state.containers, inventory),
        running=[GpuClaim.of(item) for item in running],
    )
    _refuse_unless_it_fits(plan.profile, vram)
    _check_ports(engine, plan, untouched)
    _check_keys(plan)
    return Prepared(plan, vram, state, profile, specs)


def _check_keys(plan: Plan) -> None:
    """Every new container that checks an API key has its key in this machine's environment."""
    import os

    for spec in plan.to_start:
        if spec.key_env is not None and not os.environ.get(spec.key_env[1]):
            raise RefusedError(
                f"service {spec.service!r} answers only with an API key, and ${spec.key_env[1]} "
                "(its `api_key_env`) is not set here: export it, then switch again"
            )


def _refuse_unless_it_fits(profile: str, vram: VramCheck) -> None:
    """RefusedError with the per-GPU arithmetic when what will run does not fit."""
    if vram.fits:
        return
    failing = [gpu for gpu in vram.gpus if not gpu.fits]
    head = (
        vram.problems[0]
        if vram.problems
        else f"profile {profile!r} does not fit in VRAM on GPU "
        + ", ".join(
            f"{gpu.index} (missing {gpu.missing_bytes / 1024**3:.1f} GiB)" for gpu in failing
        )
    )
    raise RefusedError(head, detail="\n".join(describe_vram(vram, only_failing=True)))


def prepare_down(engine: DockerEngine, services: Sequence[str] | None) -> Prepared:
    """`down`: the named services' containers (all of aitherctl's when `services` is None)."""
    state = observe(engine)
    if services is not None:
        known = {item.service for item in state.containers if not item.aside}
        unknown = [name for name in services if name not in known]
        if unknown:
            raise NotFoundError(
                f"no container for service {', '.join(map(repr, unknown))} "
                f"(running: {', '.join(sorted(known)) or 'none'})"
            )
    plan = stop_plan(state.active_profile or "-", state.containers, services)
    return Prepared(plan, VramCheck(()), state)


def prepare_restart(engine: DockerEngine, service: str) -> Prepared:
    """The monitor's restart of one service: stop and start its container, wait until ready."""
    state = observe(engine)
    plan = restart_plan(state.active_profile or "-", state.running, service)
    if not plan.steps:
        raise NotFoundError(f"service {service!r} has no running container to restart")
    return Prepared(plan, VramCheck(()), state)


def _check_ports(
    engine: DockerEngine, plan: Plan, untouched: Sequence[ManagedContainer] = ()
) -> None:
    """Every port the plan will publish is free: not published by another container (stopped
    ones of this plan excepted), not bound by a program on this machine, and not wanted twice
    within the plan itself or by a service left running."""
    freed = {(item.bind, item.port) for item in plan.to_stop if item.port}
    wanted: list[tuple[str, int, str]] = []
    for step in plan.steps:
        if step.action in (Action.START, Action.RECREATE) and step.target is not None:
            wanted.append((step.target.bind, step.target.host_port, step.service))
        elif step.action is Action.RESUME and step.current and step.current.port:
            wanted.append((step.current.bind, step.current.port, step.service))
    staying: list[tuple[str, int, str]] = [
        (item.bind, item.port, item.service) for item in untouched if item.port
    ]
    for step in plan.of(Action.KEEP, Action.RESTART):
        target: ContainerSpec | ManagedContainer | None = step.target or step.current
        if isinstance(target, ContainerSpec):
            staying.append((target.bind, target.host_port, step.service))
        elif target is not None and target.port:
            staying.append((target.bind, target.port, step.service))
    seen: list[tuple[str, int, str]] = list(staying)
    for bind, port, service in wanted:
        for other_bind, other_port, other in seen:
            if other_port == port and _binds_overlap(bind, other_bind):
                raise RefusedError(
                    f"port {port} is wanted by both {other!r} and {service!r}; give one of "
                    "them another `port`"
                )
        seen.append((bind, port, service))
    if not wanted:
        return
    taken = engine.published_ports()
    ours = {item.name for item in plan.to_stop} | {
        s.current.name for s in plan.of(Action.RESUME) if s.current
    }
    local = engine.endpoint.startswith(("unix://", "npipe://")) or "socket" in engine.endpoint
    for bind, port, service in wanted:
        if (bind, port) in freed or ("0.0.0.0", port) in freed:
            continue
        holders = [
            name
            for (ip, p), name in taken.items()
            if p == port and _binds_overlap(bind, ip) and name not in ours
        ]
        if holders:
            raise RefusedError(
                f"port {port} for service {service!r} is already published by "
                f"container {holders[0]}; stop it or change the service's `port`"
            )
        if local and not port_is_free(bind, port):
            raise RefusedError(
                f"port {port} for service {service!r} is already in use on "
                f"{bind}; stop what holds it (`ss -ltnp 'sport = :{port}'`) "
                "or change the service's `port`"
            )


def _binds_overlap(first: str, second: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return first == second or first in wildcard or second in wildcard


def ensure_images(engine: DockerEngine, plan: Plan, progress: Progress) -> None:
    """Pull what is missing before anything stops, so a failed pull changes nothing."""
    for image in sorted({spec.image for spec in plan.to_start}):
        if engine.image_exists(image):
            continue
        progress.note(f"pulling {image}")
        try:
            engine.pull(image)
        except AitherError as exc:
            raise RefusedError(
                f"image {image} is not on this engine and could not be pulled ({exc.message}); "
                "build or load it, or change the service's `image`"
            ) from None


# ---- executing ----------------------------------------------------------------------------------


def execute(
    engine: DockerEngine,
    prepared: Prepared,
    reprepare: Callable[[], Prepared],
    progress: Progress,
    *,
    lock_timeout_s: float = 900.0,
    cancel: threading.Event | None = None,
) -> SwitchResult:
    """Apply `prepared` under the engine's lock, if re-preparing under the lock (fresh GPU
    readings, fresh container list, after recovering an interrupted switch) gives the same plan.
    """
    with switch_lock(
        engine.engine_id, engine.namespace, timeout_s=lock_timeout_s, on_wait=progress.note
    ):
        recovered = recover(engine, progress) if pending(engine) else []
        fresh = reprepare()
        if fresh.plan.signature() != prepared.plan.signature():
            raise PlanChangedError(fresh)
        if not fresh.plan.changes:
            result = SwitchResult(fresh.plan.profile, fresh.plan)
        else:
            ensure_images(engine, fresh.plan, progress)
            result = Transaction(engine, fresh.plan, progress, cancel).apply()
            _forget_failures(engine, fresh.plan, result.outcomes)
        if recovered:
            result.recovered = "; ".join(f"{r.action} a switch to {r.profile}" for r in recovered)
        return result


def run_change(
    engine: DockerEngine,
    prepare_fn: Callable[[], Prepared],
    progress: Progress,
    *,
    confirm: Callable[[Prepared, bool], bool] | None = None,
    lock_timeout_s: float = 900.0,
    attempts: int = 3,
    cancel: threading.Event | None = None,
) -> SwitchResult:
    """Prepare, confirm (without the lock), execute; when the plan changed meanwhile, confirm
    the new one (`confirm(prepared, changed=True)`). `confirm=None` accepts every plan.

    An interrupted switch is recovered first, so the plan shown is the one from the restored
    state, not from its leftovers."""
    recovered = ""
    if pending(engine):
        with switch_lock(
            engine.engine_id, engine.namespace, timeout_s=lock_timeout_s, on_wait=progress.note
        ):
            done = recover(engine, progress)
        recovered = "; ".join(f"{r.action} a switch to {r.profile}" for r in done)
    prepared = prepare_fn()
    changed = False
    for _ in range(attempts):
        if confirm is not None and prepared.plan.changes and not confirm(prepared, changed):
            raise Declined("not confirmed; nothing was changed")
        try:
            result = execute(
                engine, prepared, prepare_fn, progress, lock_timeout_s=lock_timeout_s,
                cancel=cancel,
            )
        except PlanChangedError as exc:
            progress.note("the plan changed while waiting; here is the new one")
            prepared, changed = exc.fresh, True
            continue
        if recovered:
            result.recovered = "; ".join(filter(None, (recovered, result.recovered)))
        return result
    raise RefusedError("the plan kept changing under another switch; try again")


class Declined(AitherError):
    """The user said no; nothing was changed."""


def switch(
    engine: DockerEngine,
    catalog: ProfileCatalog,
    profile_name: str,
    inventory: InventoryReader,
    progress: Progress,
    *,
    only: Sequence[str] | None = None,
    lock_timeout_s: float = 900.0,
    confirm: Callable[[Prepared, bool], bool] | None = None,
    cancel: threading.Event | None = None,
) -> SwitchResult:
    """Move to `profile_name` (or bring up `only` those services). GPU readings are taken again
    under the lock; `inventory` is called for each reading."""
    profile = catalog.load(profile_name)

    def prepare_fn() -> Prepared:
        return prepare(engine, profile, inventory(), catalog=catalog, only=only)

    return run_change(
        engine, prepare_fn, progress, confirm=confirm, lock_timeout_s=lock_timeout_s,
        cancel=cancel,
    )


def down(
    engine: DockerEngine,
    services: Sequence[str],
    progress: Progress,
    *,
    everything: bool = False,
    lock_timeout_s: float = 900.0,
) -> list[str]:
    """Stop and remove the named services' containers (or every managed one). Returns names."""
    chosen = None if everything else list(services)
    result = run_change(
        engine,
        lambda: prepare_down(engine, chosen),
        progress,
        lock_timeout_s=lock_timeout_s,
    )
    return sorted({step.service for step in result.plan.of(Action.STOP)})


def restart(
    engine: DockerEngine, service: str, progress: Progress, *, lock_timeout_s: float = 900.0
) -> SwitchResult:
    return run_change(
        engine,
        lambda: prepare_restart(engine, service),
        progress,
        lock_timeout_s=lock_timeout_s,
    )


def _forget_failures(
    engine: DockerEngine, plan: Plan, outcomes: Sequence[ServiceOutcome]
) -> None:
    """A service the switch reports ready is no longer remembered as failed by the router."""
    from aitherctl.adapters.backend_probe import forget_backend
    from aitherctl.adapters.http_probe import probe_host

    ready = {outcome.service for outcome in outcomes if outcome.ready}
    for step in plan.steps:
        if step.service not in ready:
            continue
        if step.target is not None:
            port, bind = step.target.host_port, step.target.bind
        elif step.current is not None and step.current.port:
            port, bind = step.current.port, step.current.bind
        else:
            continue
        # The router's memory must never fail a switch.
        with contextlib.suppress(Exception):
            forget_backend(probe_host(bind, engine.endpoint, engine.address), port)


__all__ = [
    "Declined",
    "PlanChangedError",
    "Prepared",
    "Progress",
    "ServiceOutcome",
    "SwitchResult",
    "down",
    "ensure_images",
    "execute",
    "prepare",
    "prepare_down",
    "prepare_offline",
    "prepare_restart",
    "restart",
    "run_change",
    "switch",
]
