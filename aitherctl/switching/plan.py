"""What a switch will do: keep, recreate, stop or start each service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines.container import ContainerSpec


class Action(StrEnum):
    KEEP = "keep"
    RECREATE = "recreate"  # replace the container (the old one is set aside until commit)
    STOP = "stop"  # remove the container (set aside until commit)
    START = "start"  # create a new container
    RESUME = "resume"  # start the existing stopped container again (its spec is unchanged)
    RESTART = "restart"  # stop and start the same running container (the monitor's `r`)


@dataclass(frozen=True, slots=True)
class Step:
    """What a switch does to one service (keep, recreate, stop, start, resume or restart) and
    why, with the container it has now and the spec it will run."""

    action: Action
    service: str
    reason: str
    current: ManagedContainer | None = None
    target: ContainerSpec | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a switch to `profile` will do: one step per service."""

    profile: str
    steps: tuple[Step, ...]

    def of(self, *actions: Action) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.action in actions)

    @property
    def changes(self) -> bool:
        return any(step.action is not Action.KEEP for step in self.steps)

    @property
    def to_stop(self) -> tuple[ManagedContainer, ...]:
        """Containers that go away (stopped, or replaced by a new one)."""
        return tuple(
            step.current
            for step in self.of(Action.STOP, Action.RECREATE)
            if step.current is not None
        )

    @property
    def to_start(self) -> tuple[ContainerSpec, ...]:
        """New containers to create."""
        return tuple(
            step.target
            for step in self.of(Action.START, Action.RECREATE)
            if step.target is not None
        )

    @property
    def after(self) -> tuple[ContainerSpec | ManagedContainer, ...]:
        """What runs once the plan is applied (for the VRAM and port checks)."""
        running: list[ContainerSpec | ManagedContainer] = []
        for step in self.steps:
            if step.action is Action.STOP:
                continue
            if step.target is not None:
                running.append(step.target)
            elif step.current is not None:
                running.append(step.current)
        return tuple(running)

    def signature(self) -> tuple[tuple[str, str, str, str], ...]:
        """What the plan does, to tell whether a plan re-computed under the lock is the one the
        user confirmed (container ids and target spec hashes, not the wording)."""
        return tuple(
            (
                step.action.value,
                step.service,
                step.current.id if step.current else "",
                step.target.spec_hash() if step.target else "",
            )
            for step in self.steps
        )


def _differences(current: ManagedContainer, target: ContainerSpec) -> str:
    changed = []
    if current.image != target.image:
        changed.append(f"image {current.image} → {target.image}")
    if (current.model or None) != (target.model or None):
        changed.append(f"model {current.model} → {target.model}")
    if current.port != target.host_port:
        changed.append(f"port {current.port} → {target.host_port}")
    if current.gpus != target.gpus:
        changed.append("gpu")
    if current.vram_bytes != target.vram_bytes:
        changed.append("vram budget")
    return "spec changed: " + (", ".join(changed) if changed else "arguments or environment")


def compute_plan(
    profile: str,
    current: Sequence[ManagedContainer],
    resident: Mapping[str, ContainerSpec],
    on_demand: Mapping[str, ContainerSpec] | None = None,
) -> Plan:
    """Move from the `current` containers to the target's `resident` services.

    On-demand services are never started by a switch; one already running with the same spec is
    kept (and counted), otherwise it is stopped.
    """
    on_demand = on_demand or {}
    steps: list[Step] = []
    by_service: dict[str, list[ManagedContainer]] = {}
    for item in current:
        # A set-aside container belongs to a switch that has not finished; `recover` decides
        # its fate from that switch's record. A plan never stops or deletes it.
        if item.aside:
            continue
        by_service.setdefault(item.service, []).append(item)

    for service, found in sorted(by_service.items()):
        # A service should have one container; extras go away (set aside until the commit).
        ordered = sorted(found, key=lambda item: (not item.running, item.created_at or ""))
        primary, extras = ordered[0], ordered[1:]
        for extra in extras:
            steps.append(Step(Action.STOP, service, "duplicate container", current=extra))
        target = resident.get(service)
        if target is not None:
            if primary.running and primary.spec_hash == target.spec_hash():
                reason = "pinned, unchanged" if target.pinned else "unchanged"
                steps.append(Step(Action.KEEP, service, reason, primary, target))
            elif not primary.running and primary.spec_hash == target.spec_hash():
                steps.append(
                    Step(Action.RESUME, service, f"unchanged, {primary.state}", primary, target)
                )
            elif not primary.running:
                steps.append(
                    Step(
                        Action.RECREATE, service, f"not running ({primary.state})", primary, target
                    )
                )
            else:
                steps.append(
                    Step(Action.RECREATE, service, _differences(primary, target), primary, target)
                )
            continue
        demand = on_demand.get(service)
        if demand is not None and primary.running and primary.spec_hash == demand.spec_hash():
            steps.append(Step(Action.KEEP, service, "on demand, running", primary, demand))
        elif demand is not None:
            steps.append(Step(Action.STOP, service, "on demand in the target", primary))
        elif primary.running:
            steps.append(Step(Action.STOP, service, f"not in profile {profile}", primary))
        else:
            steps.append(Step(Action.STOP, service, f"remove {primary.state} container", primary))

    for service, target in sorted(resident.items()):
        if service not in by_service:
            steps.append(Step(Action.START, service, "new", target=target))
    steps.sort(key=lambda step: (ORDER[step.action], step.service))
    return Plan(profile, tuple(steps))


ORDER = {
    Action.STOP: 0,
    Action.RECREATE: 1,
    Action.RESTART: 2,
    Action.RESUME: 3,
    Action.START: 4,
    Action.KEEP: 5,
}


def stop_plan(
    profile: str, current: Sequence[ManagedContainer], services: Sequence[str] | None
) -> Plan:
    """`down`: remove the named services' containers (every managed one when `services` is None)."""
    steps = [
        Step(Action.STOP, item.service, "asked to stop", current=item)
        for item in current
        if not item.aside and (services is None or item.service in services)
    ]
    steps.sort(key=lambda step: step.service)
    return Plan(profile, tuple(steps))


def restart_plan(profile: str, current: Sequence[ManagedContainer], service: str) -> Plan:
    """The monitor's restart: the service's running container, stopped and started again."""
    steps = [
        Step(Action.RESTART, item.service, "asked to restart", current=item)
        for item in current
        if not item.aside and item.service == service
    ]
    return Plan(profile, tuple(steps))
