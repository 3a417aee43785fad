"""What a switch will do: keep, recreate, stop or start each service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aitherctl.core.container import ContainerSpec
from aitherctl.core.stack import ManagedContainer


class Action(StrEnum):
    KEEP = "keep"
    RECREATE = "recreate"
    STOP = "stop"
    START = "start"


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    service: str
    reason: str
    current: ManagedContainer | None = None
    target: ContainerSpec | None = None


@dataclass(frozen=True, slots=True)
class Plan:
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
        return tuple(
            step.target
            for step in self.of(Action.START, Action.RECREATE)
            if step.target is not None
        )

    @property
    def after(self) -> tuple[ContainerSpec, ...]:
        """The containers running once the plan is applied (for the VRAM and port checks)."""
        return tuple(
            step.target
            for step in self.steps
            if step.action in (Action.KEEP, Action.START, Action.RECREATE) and step.target
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
        by_service.setdefault(item.service, []).append(item)

    for service, items in sorted(by_service.items()):
        # A service should have one container; extras (a crashed switch's leftovers) go away.
        items = sorted(items, key=lambda item: (not item.running, item.created_at or ""))
        primary, extras = items[0], items[1:]
        for extra in extras:
            steps.append(Step(Action.STOP, service, "duplicate container", current=extra))
        target = resident.get(service)
        if target is not None:
            if primary.running and primary.spec_hash == target.spec_hash():
                reason = "pinned, unchanged" if target.pinned else "unchanged"
                steps.append(Step(Action.KEEP, service, reason, primary, target))
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
    order = {Action.STOP: 0, Action.RECREATE: 1, Action.START: 2, Action.KEEP: 3}
    steps.sort(key=lambda step: (order[step.action], step.service))
    return Plan(profile, tuple(steps))
