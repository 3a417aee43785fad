"""What is running now, read back from the containers' labels (no state file to go stale)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aitherctl.docker.listing import ContainerSource
from aitherctl.docker.stack import ManagedContainer, infer_active_profile
from aitherctl.errors import AitherError

if TYPE_CHECKING:
    from aitherctl.gpu.model import GpuInventory
    from aitherctl.profiles.catalog import ProfileCatalog


@dataclass(frozen=True, slots=True)
class StackState:
    """What runs now on one Docker engine, read from the containers' labels: every managed
    container, the profile they belong to, and the last profile that ran."""

    namespace: str
    endpoint: str
    containers: tuple[ManagedContainer, ...]
    active_profile: str | None
    # The profile of the newest container, running or not: after a reboot nothing runs (GPU
    # services do not restart by themselves) and `up --restore` brings this one back.
    last_profile: str | None = None

    @property
    def running(self) -> tuple[ManagedContainer, ...]:
        return tuple(item for item in self.containers if item.running and not item.aside)

    def container(self, service: str) -> ManagedContainer | None:
        matches = [item for item in self.containers if item.service == service and not item.aside]
        matches.sort(key=lambda item: (not item.running, item.created_at or ""))
        return matches[0] if matches else None


def gpu_memory(inventory: GpuInventory | None) -> dict[int, int]:
    if inventory is None:
        return {}
    return {gpu.index: gpu.memory_total_bytes for gpu in inventory.gpus}


def observe(
    engine: ContainerSource,
    catalog: ProfileCatalog | Callable[[], ProfileCatalog] | None = None,
    inventory: GpuInventory | None = None,
    *,
    with_pids: bool = False,
    inspect: bool = True,
) -> StackState:
    """What runs. `inspect=False` reads the engine's listing alone (one request): enough for
    the active profile and the running services, not for start times, exit codes or PIDs."""
    containers = tuple(engine.list_managed(with_pids=with_pids, inspect=inspect))
    active = _recorded_active(engine, containers)
    hashes = None
    if active is None and catalog is not None and any(item.running for item in containers):
        from aitherctl.switching.specs import build_specs

        if callable(catalog):
            catalog = catalog()
        hashes = {}
        totals = gpu_memory(inventory)
        labelled = {item.profile for item in containers}
        for name in catalog.names():
            # A broken or GPU-only profile cannot be compared; the labels still name it.
            with contextlib.suppress(AitherError):
                specs = build_specs(catalog.load(name), totals)
                hashes[name] = (
                    {svc: spec.spec_hash() for svc, spec in specs.resident.items()},
                    {svc: spec.spec_hash() for svc, spec in specs.on_demand.items()},
                )
        hashes = {k: v for k, v in hashes.items() if v[0] or k in labelled}
    if active is None:
        active = infer_active_profile(containers, hashes)
    present = [item for item in containers if not item.aside]
    last = (
        max(present, key=lambda item: item.created_at or "").profile
        if present
        else _recorded_last(engine)
    )
    return StackState(engine.namespace, engine.endpoint, containers, active, active or last)


def _recorded_last(engine: ContainerSource) -> str | None:
    """With no container left (`down --all`), the profile the last switch recorded."""
    from aitherctl.switching.records import last_from_records

    try:
        return last_from_records(engine.records())
    except AitherError:
        return None


def _recorded_active(
    engine: ContainerSource, containers: tuple[ManagedContainer, ...]
) -> str | None:
    """The profile the last switch recorded, while exactly its services still run: no profile
    needs to be parsed (`ps` and `run` ask this on every call)."""
    from aitherctl.switching.records import active_from_records

    if not any(item.running for item in containers):
        return None
    try:
        return active_from_records(engine.records(), containers)
    except AitherError:
        return None
