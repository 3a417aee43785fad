"""Every change to the running set, one way: prepare a plan, then execute it as a transaction.

`prepare_*` build the plan for a profile switch, `up`, `down` or the monitor's restart, and check
it (VRAM per GPU, ports, GPUs) without the lock and without changing anything, so a front-end can
show it and ask. `execute` then takes the engine's switch lock, first recovers what an earlier,
killed switch left behind, re-prepares the same change with fresh GPU readings, and applies it
only if it is still the plan that was shown (`PlanChangedError` otherwise: show it, ask again).
The CLI, `up`/`down` and the monitor all go through here; the sequence itself is
`aitherctl.switching.transaction`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from aitherctl.docker.engine import DockerEngine
from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines.container import ContainerSpec
from aitherctl.errors import (
    AitherError,
    DockerError,
    DockerUnavailableError,
    NotFoundError,
    RefusedError,
)
from aitherctl.gpu.model import GpuInventory
from aitherctl.gpu.vram import (
    GpuClaim,
    VramCheck,
    actual_use_by_service,
    check_vram,
    describe_vram,
)
from aitherctl.models.check import fit_services, machine_ram_for, refuse_too_small
from aitherctl.models.fit import ServiceFit
from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.profiles.checks import binds_overlap
from aitherctl.profiles.machine_ram import refuse_impossible_ram
from aitherctl.profiles.profile import LOCAL_HOST, Profile
from aitherctl.switching import journal
from aitherctl.switching.images import no_gpu_hint
from aitherctl.switching.lock import engine_lock, engine_lock_key
from aitherctl.switching.plan import Action, Plan, compute_plan, restart_plan, stop_plan
from aitherctl.switching.ports import port_is_free
from aitherctl.switching.records import write_active
from aitherctl.switching.specs import ProfileSpecs, build_specs
from aitherctl.switching.state import StackState, gpu_memory, observe
from aitherctl.switching.transaction import (
    ModelStep,
    Progress,
    ServiceOutcome,
    StartItem,
    Transaction,
    host_progress,
    pending,
    recover,
)
from aitherctl.units import MemoryAmount

if TYPE_CHECKING:
    from aitherctl.models.pull_model import PullEvent

InventoryReader = Callable[[], GpuInventory]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A change checked and ready to show, on one engine: its plan, the VRAM check, the state it
    was planned from, and each started service's model against its budget."""

    plan: Plan
    vram: VramCheck
    state: StackState
    profile: Profile | None = None
    specs: ProfileSpecs | None = None
    # A move to `profile` as a whole (not `up` of some services, `down` or a restart): once it
    # is done, `profile` is the active one, even when nothing had to change.
    whole_profile: bool = False
    # Each started service's model against its budget (aitherctl.models), before any download.
    fits: tuple[ServiceFit, ...] = ()


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
    fits = _fits(profile, specs, only)
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
    checked = _checked(
        engine,
        plan,
        state,
        inventory,
        profile.gpu_reserve,
        untouched=untouched,
        profile=profile,
        specs=specs,
        catalog=catalog,
    )
    return replace(checked, whole_profile=only is None, fits=fits)


def _fits(
    profile: Profile, specs: ProfileSpecs, only: Sequence[str] | None = None
) -> tuple[ServiceFit, ...]:
    """Each service's model against its budget (the smallest over its GPUs; a CPU service's
    `ram:`); RefusedError, with the service's file and line, for a budget that cannot hold the
    weights alone."""
    names = list(only) if only is not None else list(profile.services)
    services = [profile.services[name] for name in names if specs.get(name) is not None]
    budgets: dict[str, int | None] = {}
    for svc in services:
        spec = specs.get(svc.name)
        assert spec is not None
        values = [spec.budget_on(gpu) for gpu in spec.gpus]
        known = [value for value in values if value is not None]
        budgets[svc.name] = min(known) if known else None
    fits = fit_services(services, budgets, machine_ram_for(profile))
    refuse_too_small(profile, fits)
    return fits


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
    fits = _fits(profile, specs)
    plan = compute_plan(profile.name, [], specs.resident, specs.on_demand)
    claims = [GpuClaim.of(item) for item in plan.after]
    vram = check_vram(claims, inventory, profile.gpu_reserve)
    _refuse_unless_it_fits(plan.profile, vram)
    return Prepared(plan, vram, state, profile, specs, fits=fits)


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
    catalog: ProfileCatalog | None = None,
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
        # Looked for (every profile's images) only when GPU services have no GPU to run on.
        no_gpu_hint=(
            no_gpu_hint(engine, catalog)
            if not inventory.available and any(claim.gpus for claim in claims)
            else None
        ),
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
            if other_port == port and binds_overlap(bind, other_bind):
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
            if p == port and binds_overlap(bind, ip) and name not in ours
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


SWITCH_PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """Whether a switch downloads the missing models of the services it starts (`aitherctl
    pull`'s operation) before anything stops, or refuses (`--no-pull`). `emit` receives the
    download's events (default: a note per file)."""

    pull: bool = True
    emit: Callable[[PullEvent], None] | None = None


def _hub_offline(env: Mapping[str, str] = os.environ) -> bool:
    # huggingface_hub's variable: nothing asks the Hub, the engines are left to find their models.
    return env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def ensure_models(
    engine: DockerEngine,
    part: Prepared,
    progress: Progress,
    policy: ModelPolicy | None,
    host: str = LOCAL_HOST,
) -> None:
    """Download the missing models of the services `part` starts (on `host`, whose engine is
    `engine`: another host's are downloaded here and copied there), before anything stops, so
    a failed download changes nothing. Only models `pull` can fetch are looked at (a vLLM Hub
    id, a llama.cpp `source:`); with HF_HUB_OFFLINE=1 here none is, and in a service's `env:`
    not that service's."""
    from aitherctl.models.pull_model import PullKind, PullPhase, PullTarget, progress_line
    from aitherctl.models.targets import pull_targets, settle_remote

    if policy is None or part.profile is None or _hub_offline():
        return
    names = sorted({spec.service for spec in part.plan.to_start})
    if not names:
        return
    # A service whose own environment says HF_HUB_OFFLINE=1 does not download (its engine will
    # not either): it is left to find its model, as with the variable set here.
    online = [n for n in names if not _hub_offline(dict(part.profile.services[n].env))]
    if not online:
        return
    found = pull_targets(part.profile, online, engine.volume_folder)
    # An Ollama server pulls its own models, and it is not running yet: not here.
    wanted = [t for t in found if isinstance(t, PullTarget) and t.kind is not PullKind.OLLAMA]
    hosts = {}
    if host != LOCAL_HOST and wanted:
        from aitherctl.docker.model_folders import HostFolders

        # Any image of the services it starts is on that host now (`ensure_images`).
        image = sorted({spec.image for spec in part.plan.to_start})[0]
        hosts[host] = HostFolders(engine.client, image, host)
        try:
            wanted = settle_remote(wanted, hosts)
        except AitherError as exc:
            raise RefusedError(
                f"host {host!r}: cannot tell whether the model is there: {exc.message}; "
                "nothing was changed",
                host=host,
                changed=False,
            ) from None
    missing = [t for t in wanted if not t.present]
    if not missing:
        return
    if not policy.pull:
        which = ", ".join(f"{t.service!r} ({t.repo})" for t in missing)
        raise RefusedError(
            f"the model of service {which} is not downloaded: run `aitherctl pull "
            f"{part.profile.name}` first, or leave out --no-pull",
            changed=False,
        )

    last_progress = [time.monotonic()]

    def note(event: PullEvent) -> None:
        # A line per file as it starts and ends, and its progress every 10 s in between.
        if event.phase is PullPhase.PROGRESS:
            if time.monotonic() - last_progress[0] < SWITCH_PROGRESS_EVERY_S:
                return
            last_progress[0] = time.monotonic()
        progress.note(progress_line(event))

    from aitherctl.models.downloads import end_download, report_download
    from aitherctl.models.hub import HubClient
    from aitherctl.models.pull import pull

    shown = policy.emit or note

    targets = {t.service: t for t in missing}

    def emit(event: PullEvent) -> None:
        target = targets.get(event.service)
        engine, model = (target.engine, target.repo) if target else (None, None)
        report_download(host, event, engine, model)  # what the monitor shows
        shown(event)

    hub = HubClient.open()
    try:
        progress.note("downloading " + ", ".join(f"{t.repo} ({t.service})" for t in missing))
        pull(missing, hub, emit, hosts=hosts)
    except AitherError as exc:
        where = f"host {host!r}: " if host != LOCAL_HOST else ""
        raise RefusedError(
            f"{where}downloading the model failed: {exc.message}; nothing was changed",
            detail=exc.detail,
            host=None if host == LOCAL_HOST else host,
            changed=False,
        ) from None
    finally:
        hub.close()
        for target in missing:
            end_download(host, target.service)


def model_step(policy: ModelPolicy | None) -> ModelStep:
    """The transaction's step after a service's readiness probe answers: an Ollama service with
    a `model` is ready only once its server lists it (`GET /api/tags`); a missing one is pulled
    through the server (`POST /api/pull`, outside the readiness timeout, each layer's start and
    end shown and its progress every 10 s), or, under `--no-pull`, the service fails. Other
    engines load their model before their probe answers: nothing to do."""
    pull_allowed = policy is None or policy.pull

    def step(
        item: StartItem,
        host: str,
        base_url: str,
        report: Callable[[str, str], None],
        cancelled: Callable[[], bool],
    ) -> str | None:
        if item.engine != "ollama" or not item.model:
            return None
        import httpx

        from aitherctl.models.downloads import end_download, report_download
        from aitherctl.models.ollama_pull import ensure_ollama_model
        from aitherctl.models.pull_model import PullPhase, download_detail

        last_progress = [time.monotonic()]

        def emit(event: PullEvent) -> None:
            report_download(host, event, item.engine, item.model)  # what the monitor shows
            if policy is not None and policy.emit is not None:
                policy.emit(event)
            if event.phase is PullPhase.PROGRESS:
                if time.monotonic() - last_progress[0] < SWITCH_PROGRESS_EVERY_S:
                    return
                last_progress[0] = time.monotonic()
            report("downloading", download_detail(event))

        with httpx.Client() as client:
            try:
                ensure_ollama_model(
                    client, base_url, item.service, item.model,
                    pull=pull_allowed, emit=emit, clock=time.monotonic, cancelled=cancelled,
                )  # fmt: skip
            except AitherError as exc:
                # The transaction's message names the service already.
                return exc.message.removeprefix(f"service {item.service!r}: ")
            finally:
                end_download(host, item.service)
        return None

    return step


# ---- executing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One change over one or several engines: a prepared part per engine, local first (the
    profile's name for each host, `local` for this machine's engine)."""

    profile: str
    parts: dict[str, Prepared]

    @property
    def plan(self) -> Plan:
        """Every part's steps in one plan (`hosts` gives each step's host)."""
        return Plan(self.profile, tuple(s for p in self.parts.values() for s in p.plan.steps))

    @property
    def hosts(self) -> list[str]:
        return [name for name, part in self.parts.items() for _ in part.plan.steps]

    @property
    def changes(self) -> bool:
        return any(part.plan.changes for part in self.parts.values())

    def signature(self) -> tuple[tuple[str, object], ...]:
        return tuple((name, part.plan.signature()) for name, part in self.parts.items())


@dataclass(slots=True)
class SwitchResult:
    """What a switch did: its change, each started service's outcome, how long it took, and what
    `recover` did first, if anything."""

    profile: str
    change: Change
    outcomes: list[ServiceOutcome] = field(default_factory=list)
    seconds: float = 0.0
    recovered: str | None = None  # what `recover` did first, if anything
    # Nothing had to change, but the profile became the active one (its containers were
    # those of another profile with the same services).
    activated: bool = False

    @property
    def plan(self) -> Plan:
        return self.change.plan


class PlanChangedError(RefusedError):
    """Between the confirmation and the lock, the machine changed: the plan is not the one the
    user saw. Nothing was changed; `fresh` is the new plan to show."""

    def __init__(self, fresh: Change) -> None:
        super().__init__(
            "the plan changed since it was shown (another switch ran, or a container changed); "
            "nothing was changed: review the new plan and confirm again",
            changed=False,
        )
        self.fresh = fresh


@contextlib.contextmanager
def all_locks(
    engines: Mapping[str, DockerEngine],
    progress: Progress,
    timeout_s: float,
    cancel: threading.Event | None = None,
) -> Iterator[None]:
    """Every engine's switch lock, taken in the order of their keys (so two switches over the
    same engines cannot deadlock), one lock per key."""
    with contextlib.ExitStack() as stack:
        by_key = {engine_lock_key(engine): engine for engine in engines.values()}
        for key in sorted(by_key):
            stack.enter_context(
                engine_lock(by_key[key], timeout_s=timeout_s, on_wait=progress.note, cancel=cancel)
            )
        yield None


def _recover_pending(engines: Mapping[str, DockerEngine], progress: Progress) -> list[str]:
    """Under the locks: finish or undo what killed switches left on each engine."""
    done = []
    for name, engine in engines.items():
        if pending(engine):
            for item in recover(engine, host_progress(progress, name)):
                where = "" if name == LOCAL_HOST else f" on host {name}"
                done.append(f"{item.action} a switch to {item.profile}{where}")
    return done


@contextlib.contextmanager
def _nothing_changed() -> Iterator[None]:
    """Around the steps before the transaction: a Docker error there (an engine lost while its
    records are read or its images checked) changed nothing, and the message says so."""
    try:
        yield
    except (DockerUnavailableError, DockerError) as exc:
        if exc.changed is None:
            exc.message = f"{exc.message}; nothing was changed"
            exc.args = (exc.message,)
            exc.changed = False
        raise


def execute(
    engines: Mapping[str, DockerEngine],
    prepared: Change | None,
    reprepare: Callable[[], Change],
    progress: Progress,
    *,
    lock_timeout_s: float = 900.0,
    cancel: threading.Event | None = None,
    models: ModelPolicy | None = None,
    show: Callable[[Change], bool] | None = None,
) -> SwitchResult:
    """Apply `prepared` under every engine's lock, if re-preparing under the locks (fresh GPU
    readings, fresh container lists, after recovering interrupted switches) gives the same
    plan; `PlanChangedError` otherwise. `prepared` None: the plan is made under the locks only
    and applied as it is, after `show` (which may still decline it) when it changes anything.
    With `models`, missing models are downloaded after the images and before anything stops
    (this machine's services)."""
    started = time.monotonic()
    with all_locks(engines, progress, lock_timeout_s, cancel):
        with _nothing_changed():
            recovered = _recover_pending(engines, progress)
            fresh = reprepare()
            if prepared is not None and fresh.signature() != prepared.signature():
                raise PlanChangedError(fresh)
            if prepared is None and show is not None and fresh.changes and not show(fresh):
                raise Declined("not confirmed; nothing was changed", changed=False)
            result = SwitchResult(fresh.profile, fresh, recovered="; ".join(recovered) or None)
            if not fresh.changes:
                result.activated = _activate(engines, fresh)
                return result
            for name, part in fresh.parts.items():
                try:
                    ensure_images(engines[name], part.plan, host_progress(progress, name))
                except AitherError as exc:
                    if name == LOCAL_HOST:
                        raise
                    raise RefusedError(
                        f"host {name!r}: {exc.message}",
                        detail=exc.detail,
                        host=name,
                        changed=False,
                    ) from None
            for name, part in fresh.parts.items():
                ensure_models(engines[name], part, host_progress(progress, name), models, name)
        transaction = Transaction(
            fresh.profile,
            {name: (engines[name], part.plan) for name, part in fresh.parts.items()},
            progress,
            cancel,
            model_step=model_step(models),
        )
        result.outcomes = transaction.apply()
        for name, part in fresh.parts.items():
            _forget_failures(
                engines[name], part.plan, [o for o in result.outcomes if o.host == name]
            )
    result.seconds = time.monotonic() - started
    _journal_switch(fresh, result.seconds)
    return result


def _activate(engines: Mapping[str, DockerEngine], change: Change) -> bool:
    """A move to a profile whose services already run, identical, in another profile's
    containers: nothing restarts, and the profile becomes the active one (the record `ps`,
    `run` and the monitor read). Returns whether it was not active before."""
    activated = False
    for name, part in change.parts.items():
        if not part.whole_profile or part.state.active_profile == change.profile:
            continue
        if not part.plan.steps:
            continue  # nothing of this profile runs on that engine
        write_active(engines[name], change.profile, part.state.containers)
        activated = True
    if activated:
        journal.record(
            "switch", change.profile, f"{change.profile}: active (its services already ran)"
        )
    return activated


def _journal_switch(change: Change, seconds: float) -> None:
    plan = change.plan
    counts = {action: len(plan.of(action)) for action in Action}
    hosts = f" on {len(change.parts)} hosts" if len(change.parts) > 1 else ""
    resumed = f"{counts[Action.RESUME]} resumed, " if counts[Action.RESUME] else ""
    journal.record(
        "switch",
        change.profile,
        f"{change.profile}{hosts}: {counts[Action.START]} started, "
        f"{counts[Action.RECREATE]} recreated, {resumed}"
        f"{counts[Action.STOP]} stopped, {counts[Action.KEEP]} kept in {seconds:.1f}s",
    )


def run_switch(
    engines: Mapping[str, DockerEngine],
    prepare_fn: Callable[[], Change],
    progress: Progress,
    *,
    confirm: Callable[[Change, bool], bool] | None = None,
    lock_timeout_s: float = 900.0,
    attempts: int = 3,
    cancel: threading.Event | None = None,
    models: ModelPolicy | None = None,
    asks: bool = True,
) -> SwitchResult:
    """The one switch sequence, for one engine or many: recover what killed switches left (under
    the locks), prepare, confirm (without the locks), execute; when the plan changed meanwhile,
    confirm the new one (`confirm(change, changed=True)`). `confirm=None` accepts every plan.
    When nobody is asked (`confirm=None`, or `asks=False`: `confirm` only shows the plan, as
    with `--yes`), the plan is made once, under the locks, and `confirm` sees it there.

    An interrupted switch is recovered first, so the plan shown is the one from the restored
    state, not from its leftovers."""
    if confirm is None or not asks:
        show = None if confirm is None else (lambda change: confirm(change, False))
        return execute(
            engines,
            None,
            prepare_fn,
            progress,
            lock_timeout_s=lock_timeout_s,
            cancel=cancel,
            models=models,
            show=show,
        )
    recovered: list[str] = []
    if any(pending(engine) for engine in engines.values()):
        with all_locks(engines, progress, lock_timeout_s, cancel):
            recovered = _recover_pending(engines, progress)
    prepared = prepare_fn()
    changed = False
    for _ in range(attempts):
        if confirm is not None and prepared.changes and not confirm(prepared, changed):
            raise Declined("not confirmed; nothing was changed", changed=False)
        try:
            result = execute(
                engines,
                prepared,
                prepare_fn,
                progress,
                lock_timeout_s=lock_timeout_s,
                cancel=cancel,
                models=models,
            )
        except PlanChangedError as exc:
            progress.note("the plan changed while waiting; here is the new one")
            prepared, changed = exc.fresh, True
            continue
        if recovered:
            result.recovered = "; ".join(filter(None, ("; ".join(recovered), result.recovered)))
        return result
    raise RefusedError("the plan kept changing under another switch; try again", changed=False)


def run_change(
    engine: DockerEngine,
    prepare_fn: Callable[[], Prepared],
    progress: Progress,
    *,
    confirm: Callable[[Prepared, bool], bool] | None = None,
    lock_timeout_s: float = 900.0,
    attempts: int = 3,
    cancel: threading.Event | None = None,
    models: ModelPolicy | None = None,
    asks: bool = True,
) -> SwitchResult:
    """`run_switch` on one engine (this machine's, or one host's: `engine.host` names it)."""
    name = engine.host

    def prepare_one() -> Change:
        part = prepare_fn()
        return Change(part.plan.profile, {name: part})

    def confirm_one(change: Change, changed: bool) -> bool:
        assert confirm is not None
        return confirm(change.parts[name], changed)

    return run_switch(
        {name: engine},
        prepare_one,
        progress,
        confirm=None if confirm is None else confirm_one,
        lock_timeout_s=lock_timeout_s,
        attempts=attempts,
        cancel=cancel,
        models=models,
        asks=asks,
    )


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
    models: ModelPolicy | None = None,
    asks: bool = True,
) -> SwitchResult:
    """Move to `profile_name` (or bring up `only` those services). GPU readings are taken again
    under the lock; `inventory` is called for each reading. `models`: download missing models
    first (None: leave them to the engines). `asks=False`: `confirm` only shows the plan (it
    is then made once, under the lock)."""
    profile = catalog.load(profile_name)

    def prepare_fn() -> Prepared:
        return prepare(engine, profile, inventory(), catalog=catalog, only=only)

    return run_change(
        engine,
        prepare_fn,
        progress,
        confirm=confirm,
        lock_timeout_s=lock_timeout_s,
        cancel=cancel,
        models=models,
        asks=asks,
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


def _forget_failures(engine: DockerEngine, plan: Plan, outcomes: Sequence[ServiceOutcome]) -> None:
    """A service the switch reports ready is no longer remembered as failed by the router."""
    from aitherctl.paths import BACKEND_FAILURES_FILE, state_dir_text

    if not os.path.exists(os.path.join(state_dir_text(), BACKEND_FAILURES_FILE)):
        return  # nothing remembered (the router was never refused): nothing to import or read
    from aitherctl.routing.probes import forget_backend
    from aitherctl.switching.readiness import probe_host

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
    "Change",
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
    "run_switch",
    "switch",
]
