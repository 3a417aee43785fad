"""The reconciler: move the machine from what runs now to a profile, safely.

1. Under a lock (one switch at a time per engine and namespace), read what runs from the labels.
2. Compute the plan (keep / recreate / stop / start) and check it before touching anything: the
   VRAM budget per GPU, host ports, images (pulled now if missing, while the old set still runs).
3. Stop first to free VRAM. A replaced container is renamed aside and stopped, not removed, so a
   rollback can start the very same container again.
4. Start: vLLM services sharing a GPU one after another (each measures free memory when it
   starts), everything else in parallel; wait for each readiness probe within its timeout.
5. All ready: remove the set-aside containers; Docker restarts the new ones if they crash.
   Anything failed (or Ctrl-C): remove what was started, restore the set-aside containers, and
   report which service failed, why, and the last lines of its log.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from aitherctl.adapters import journal
from aitherctl.adapters.docker_engine import DockerEngine
from aitherctl.adapters.http_probe import probe, probe_host
from aitherctl.adapters.ports import port_is_free
from aitherctl.core.container import ContainerSpec, HttpCheck, container_name
from aitherctl.core.gpu import GpuInventory
from aitherctl.core.loader import ProfileCatalog
from aitherctl.core.plan import Action, Plan, compute_plan
from aitherctl.core.profile import Engine, Profile
from aitherctl.core.specs import ProfileSpecs, build_specs
from aitherctl.core.stack import ManagedContainer
from aitherctl.core.vram import GpuClaim, VramCheck, check_vram, describe_vram
from aitherctl.errors import AitherError, NotFoundError, RefusedError, SwitchFailedError
from aitherctl.ops.lock import switch_lock
from aitherctl.ops.state import StackState, gpu_memory, observe

LOG_TAIL_LINES = 15
RESTORE_TIMEOUT_S = 300.0


class Progress(Protocol):
    """Receives progress; the CLI renders it, tests record it. Called from worker threads."""

    def note(self, message: str) -> None: ...

    def service(self, service: str, status: str, detail: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    profile: Profile
    plan: Plan
    vram: VramCheck
    state: StackState
    specs: ProfileSpecs


@dataclass(frozen=True, slots=True)
class ServiceOutcome:
    service: str
    ready: bool
    seconds: float
    detail: str
    log_tail: str = ""


@dataclass(slots=True)
class SwitchResult:
    profile: str
    plan: Plan
    outcomes: list[ServiceOutcome] = field(default_factory=list)
    seconds: float = 0.0


# ---- preparing ------------------------------------------------------------------------------


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
    needs_gpu = (
        [name for name, svc in profile.resident.items() if svc.uses_gpu]
        if only is None
        else [name for name in only if profile.service(name).uses_gpu]
    )
    if needs_gpu and not inventory.available:
        raise RefusedError(
            f"profile {profile.name!r} needs a GPU for {', '.join(needs_gpu)}, but {inventory.error}",
            detail="CPU services still run: try `aitherctl profile switch cpu`.",
        )
    # Without NVML only CPU services can be built (and only they were asked for).
    usable = {
        name: svc
        for name, svc in profile.services.items()
        if inventory.available or not svc.uses_gpu
    }
    specs = build_specs(replace(profile, services=usable), gpu_memory(inventory))
    state = observe(engine, catalog, inventory, with_pids=inventory.available)
    if only is None:
        plan = compute_plan(profile.name, state.containers, specs.resident, specs.on_demand)
        untouched: list[ManagedContainer] = []
    else:
        for name in only:
            profile.service(name)  # NotFoundError for an unknown service
        wanted = {name: spec for name in only if (spec := specs.get(name)) is not None}
        mine = [item for item in state.containers if item.service in wanted]
        plan = compute_plan(profile.name, mine, wanted)
        untouched = [item for item in state.running if item.service not in wanted]

    claims = [GpuClaim.of(spec) for spec in plan.after] + [GpuClaim.of(c) for c in untouched]
    managed_pids = [pid for item in state.containers for pid in item.pids]
    vram = check_vram(claims, inventory, profile.gpu_reserve, managed_pids)
    prepared = Prepared(profile, plan, vram, state, specs)
    if not vram.fits:
        failing = [gpu for gpu in vram.gpus if not gpu.fits]
        head = (
            vram.problems[0]
            if vram.problems
            else f"profile {profile.name!r} does not fit in VRAM on GPU "
            + ", ".join(
                f"{gpu.index} (missing {gpu.missing_bytes / 1024**3:.1f} GiB)" for gpu in failing
            )
        )
        raise RefusedError(head, detail="\n".join(describe_vram(vram, only_failing=True)))
    _check_ports(engine, plan)
    return prepared


def _check_ports(engine: DockerEngine, plan: Plan) -> None:
    freed = {(item.bind, item.port) for item in plan.to_stop if item.port}
    taken = engine.published_ports()
    local = engine.endpoint.startswith(("unix://", "npipe://")) or "socket" in engine.endpoint
    for spec in plan.to_start:
        key = (spec.bind, spec.host_port)
        if key in freed or ("0.0.0.0", spec.host_port) in freed:
            continue
        holder = taken.get(key) or taken.get(("0.0.0.0", spec.host_port))
        if holder is None and spec.bind == "0.0.0.0":
            holder = next((n for (ip, p), n in taken.items() if p == spec.host_port), None)
        if holder is not None:
            raise RefusedError(
                f"port {spec.host_port} for service {spec.service!r} is already published by "
                f"container {holder}; stop it or change the service's `port`"
            )
        if local and not port_is_free(spec.bind, spec.host_port):
            raise RefusedError(
                f"port {spec.host_port} for service {spec.service!r} is already in use on "
                f"{spec.bind}; stop what holds it (`ss -ltnp 'sport = :{spec.host_port}'`) "
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


# ---- applying -------------------------------------------------------------------------------


def switch(
    engine: DockerEngine,
    catalog: ProfileCatalog,
    profile_name: str,
    inventory: GpuInventory,
    progress: Progress,
    *,
    only: Sequence[str] | None = None,
    lock_timeout_s: float = 900.0,
) -> SwitchResult:
    profile = catalog.load(profile_name)
    with switch_lock(
        engine.endpoint, engine.namespace, timeout_s=lock_timeout_s, on_wait=progress.note
    ):
        prepared = prepare(engine, profile, inventory, catalog=catalog, only=only)
        ensure_images(engine, prepared.plan, progress)
        return apply_plan(engine, prepared, progress)


def apply_plan(engine: DockerEngine, prepared: Prepared, progress: Progress) -> SwitchResult:
    plan = prepared.plan
    started = time.monotonic()
    result = SwitchResult(plan.profile, plan)
    aside: list[tuple[ManagedContainer, str]] = []  # (container, its original name)
    created: list[str] = []
    try:
        _stop_phase(engine, plan, progress, aside)
        outcomes = _start_phase(engine, plan, progress, created)
        result.outcomes = outcomes
        failed = [outcome for outcome in outcomes if not outcome.ready]
        if failed:
            _rollback(engine, created, aside, progress)
            first = failed[0]
            journal.record(
                "rollback", plan.profile,
                f"switch to {plan.profile} failed ({first.service}: {first.detail}); rolled back",
            )
            detail = first.log_tail and f"last lines of {first.service}'s log:\n{first.log_tail}"
            restored = ", ".join(item.service for item, _ in aside) or "nothing to restore"
            raise SwitchFailedError(
                f"service {first.service!r} did not become ready: {first.detail}; "
                f"rolled back (restored: {restored})",
                detail=detail or None,
            )
    except KeyboardInterrupt:
        progress.note("interrupted: rolling back")
        _rollback(engine, created, aside, progress)
        raise
    for item, _ in aside:
        engine.remove(item.id)
    result.seconds = time.monotonic() - started
    counts = {action: len(plan.of(action)) for action in Action}
    journal.record(
        "switch", plan.profile,
        f"{plan.profile}: {counts[Action.START]} started, {counts[Action.RECREATE]} recreated, "
        f"{counts[Action.STOP]} stopped, {counts[Action.KEEP]} kept in {result.seconds:.1f}s",
    )
    return result


def _stop_phase(
    engine: DockerEngine,
    plan: Plan,
    progress: Progress,
    aside: list[tuple[ManagedContainer, str]],
) -> None:
    def stop_one(item: ManagedContainer, keep_aside: bool) -> None:
        progress.service(item.service, "stopping")
        if keep_aside and item.running:
            engine.rename(item.id, f"{item.name}-replaced-{item.id[:8]}")
            aside.append((item, item.name))
            engine.stop(item.id)
        else:
            engine.remove(item.id)
        progress.service(item.service, "stopped")

    jobs = []
    for step in plan.of(Action.STOP, Action.RECREATE):
        if step.current is None:
            continue
        # Running containers go aside (for rollback); exited ones and duplicates just go.
        keep = step.current.running and step.reason != "duplicate container"
        jobs.append((step.current, keep))
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        for future in [pool.submit(stop_one, item, keep) for item, keep in jobs]:
            future.result()


def _lanes(specs: Sequence[ContainerSpec]) -> list[list[ContainerSpec]]:
    """vLLM services that share a GPU start one after another; everything else in parallel."""
    lanes: list[list[ContainerSpec]] = []
    vllm_lanes: list[tuple[set[int], list[ContainerSpec]]] = []
    for spec in specs:
        if spec.engine is Engine.VLLM and spec.gpus:
            joined = [lane for lane in vllm_lanes if lane[0] & set(spec.gpus)]
            if joined:
                gpus, lane = joined[0]
                gpus.update(spec.gpus)
                lane.append(spec)
                continue
            vllm_lanes.append((set(spec.gpus), [spec]))
        else:
            lanes.append([spec])
    return [lane for _, lane in vllm_lanes] + lanes


def _start_phase(
    engine: DockerEngine, plan: Plan, progress: Progress, created: list[str]
) -> list[ServiceOutcome]:
    specs = plan.to_start
    if not specs:
        return []
    lock = threading.Lock()
    cancel = threading.Event()

    def run_lane(lane: list[ContainerSpec]) -> list[ServiceOutcome]:
        outcomes = []
        for spec in lane:
            if cancel.is_set():
                outcomes.append(
                    ServiceOutcome(spec.service, False, 0.0, "not started: another service failed")
                )
                continue
            outcome = _start_one(engine, plan.profile, spec, progress, created, lock, cancel)
            outcomes.append(outcome)
            if not outcome.ready:
                cancel.set()
        return outcomes

    lanes = _lanes(specs)
    with ThreadPoolExecutor(max_workers=min(8, len(lanes))) as pool:
        futures = [pool.submit(run_lane, lane) for lane in lanes]
        outcomes = []
        for future in futures:
            outcomes.extend(future.result())
    # Failures first, so the message names the service that failed rather than one cancelled.
    outcomes.sort(
        key=lambda o: (
            o.ready,
            o.detail.startswith("not started"),
            o.detail.startswith("cancelled"),
        )
    )
    return outcomes


def _start_one(
    engine: DockerEngine,
    profile: str,
    spec: ContainerSpec,
    progress: Progress,
    created: list[str],
    lock: threading.Lock,
    cancel: threading.Event,
) -> ServiceOutcome:
    import httpx

    began = time.monotonic()
    progress.service(spec.service, "starting")
    try:
        container_id = engine.create(spec, profile)
        with lock:
            created.append(container_id)
        engine.start(container_id)
    except AitherError as exc:
        return ServiceOutcome(spec.service, False, time.monotonic() - began, exc.message)
    host = probe_host(spec.bind, engine.endpoint)
    detail = "no answer yet"
    with httpx.Client() as client:
        deadline = began + spec.readiness.timeout_s
        while time.monotonic() < deadline:
            if cancel.is_set():
                return ServiceOutcome(
                    spec.service,
                    False,
                    time.monotonic() - began,
                    "cancelled: another service failed",
                )
            current = engine.get(container_id)
            if current.state in ("exited", "dead"):
                tail = _tail(engine, container_id)
                return ServiceOutcome(
                    spec.service,
                    False,
                    time.monotonic() - began,
                    f"container exited with code {current.exit_code}",
                    tail,
                )
            result = probe(client, host, spec.host_port, spec.readiness.checks)
            if result.ok:
                engine.keep_restarting(container_id)
                seconds = time.monotonic() - began
                progress.service(spec.service, "ready", f"{seconds:.1f}s")
                return ServiceOutcome(spec.service, True, seconds, "ready")
            if result.detail != detail:
                detail = result.detail
                progress.service(spec.service, "waiting", detail)
            time.sleep(0.25)
    return ServiceOutcome(
        spec.service,
        False,
        time.monotonic() - began,
        f"not ready after {spec.readiness.timeout_s:g}s (last probe: {detail})",
        _tail(engine, container_id),
    )


def _tail(engine: DockerEngine, container_id: str) -> str:
    try:
        return engine.logs(container_id, tail=LOG_TAIL_LINES).rstrip()
    except AitherError:
        return ""


def _rollback(
    engine: DockerEngine,
    created: list[str],
    aside: list[tuple[ManagedContainer, str]],
    progress: Progress,
) -> None:
    for container_id in created:
        engine.remove(container_id)
    if not aside:
        return
    import httpx

    for item, name in aside:
        progress.service(item.service, "restoring")
        with contextlib.suppress(AitherError):
            engine.rename(item.id, name)
        engine.start(item.id)
    with httpx.Client() as client:
        for item, _ in aside:
            deadline = time.monotonic() + RESTORE_TIMEOUT_S
            while time.monotonic() < deadline:
                if (
                    item.port is None
                    or probe(
                        client,
                        probe_host(item.bind, engine.endpoint),
                        item.port,
                        item.health_checks,
                    ).ok
                ):
                    progress.service(item.service, "restored")
                    break
                if engine.get(item.id).state in ("exited", "dead"):
                    progress.service(item.service, "failed", "exited while restoring")
                    break
                time.sleep(0.25)


# ---- down -----------------------------------------------------------------------------------


def down(
    engine: DockerEngine,
    services: Sequence[str],
    progress: Progress,
    *,
    everything: bool = False,
    lock_timeout_s: float = 900.0,
) -> list[str]:
    """Stop and remove the named services' containers (or every managed one). Returns names."""
    with switch_lock(
        engine.endpoint, engine.namespace, timeout_s=lock_timeout_s, on_wait=progress.note
    ):
        containers = engine.list_managed()
        if everything:
            chosen = containers
        else:
            known = {item.service for item in containers}
            unknown = [name for name in services if name not in known]
            if unknown:
                raise NotFoundError(
                    f"no container for service {', '.join(map(repr, unknown))} "
                    f"(running: {', '.join(sorted(known)) or 'none'})"
                )
            chosen = [item for item in containers if item.service in services]

        def stop(item: ManagedContainer) -> None:
            progress.service(item.service, "stopping")
            engine.stop(item.id)
            engine.remove(item.id)
            progress.service(item.service, "stopped")

        if chosen:
            with ThreadPoolExecutor(max_workers=min(8, len(chosen))) as pool:
                for future in [pool.submit(stop, item) for item in chosen]:
                    future.result()
            names = ", ".join(sorted({item.service for item in chosen}))
            journal.record("down", None, f"stopped {names}")
        return sorted({item.service for item in chosen})


def readiness_checks(item: ManagedContainer) -> tuple[HttpCheck, ...]:
    return item.health_checks


__all__ = [
    "Prepared",
    "Progress",
    "ServiceOutcome",
    "SwitchResult",
    "apply_plan",
    "container_name",
    "down",
    "ensure_images",
    "prepare",
    "switch",
]
