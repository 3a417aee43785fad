"""What aitherctl finds running: its containers, read back from their labels."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aitherctl.engines import container as c
from aitherctl.engines.container import HttpCheck


@dataclass(frozen=True, slots=True)
class ManagedContainer:
    """A container this tool manages, as Docker lists it and its labels describe it: service,
    profile, spec hash, state, engine, model, port, GPUs and budgets."""

    id: str
    name: str
    service: str
    profile: str
    spec_hash: str
    state: str  # Docker's: created, running, restarting, exited, dead, paused
    image: str
    engine: str
    model: str | None
    served_model: str | None
    port: int | None
    bind: str
    gpus: tuple[int, ...]
    vram_bytes: int | None
    role: str | None
    pinned: bool
    on_demand: bool
    health_checks: tuple[HttpCheck, ...]
    created_at: str | None = None
    started_at: str | None = None
    exit_code: int | None = None
    pids: tuple[int, ...] = ()  # host PIDs of its processes, when known
    txn: str | None = None  # the switch that created it
    gpu_vram: tuple[tuple[int, int], ...] = ()  # the budget on each GPU
    restart_policy: str | None = None  # Docker's restart policy, when read from `inspect`

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def aside(self) -> bool:
        """Renamed aside by a switch that has not finished: only that switch's commit, its
        rollback or `aitherctl recover` may touch it."""
        return c.ASIDE_MARK in self.name

    @property
    def original_name(self) -> str:
        return self.name.split(c.ASIDE_MARK, 1)[0]

    def budget_on(self, gpu: int) -> int | None:
        for index, value in self.gpu_vram:
            if index == gpu:
                return value
        return self.vram_bytes if gpu in self.gpus else None

    @classmethod
    def from_labels(
        cls,
        *,
        id: str,
        name: str,
        state: str,
        image: str,
        labels: Mapping[str, str],
        **extra: object,
    ) -> ManagedContainer:
        gpus_label = labels.get(c.LABEL_GPUS, "none")
        try:
            checks = tuple(
                HttpCheck(**item) for item in json.loads(labels.get(c.LABEL_HEALTH, "[]"))
            )
        except (ValueError, TypeError):
            checks = ()
        vram = labels.get(c.LABEL_VRAM)
        port = labels.get(c.LABEL_PORT)
        gpu_vram = []
        for part in labels.get(c.LABEL_GPU_VRAM, "").split(","):
            index, _, value = part.partition(":")
            if index.isdigit() and value.isdigit():
                gpu_vram.append((int(index), int(value)))
        return cls(
            id=id,
            name=name,
            service=labels.get(c.LABEL_SERVICE, name),
            profile=labels.get(c.LABEL_PROFILE, "?"),
            spec_hash=labels.get(c.LABEL_HASH, ""),
            state=state,
            image=image,
            engine=labels.get(c.LABEL_ENGINE, "generic"),
            model=labels.get(c.LABEL_MODEL),
            served_model=labels.get(c.LABEL_ENDPOINT_MODEL),
            port=int(port) if port and port.isdigit() else None,
            bind=labels.get(c.LABEL_BIND, "127.0.0.1"),
            gpus=tuple(int(g) for g in gpus_label.split(",") if g.isdigit()),
            vram_bytes=int(vram) if vram and vram.isdigit() else None,
            role=labels.get(c.LABEL_ROLE),
            pinned=labels.get(c.LABEL_PINNED) == "true",
            on_demand=labels.get(c.LABEL_ON_DEMAND) == "true",
            health_checks=checks,
            txn=labels.get(c.LABEL_TXN),
            gpu_vram=tuple(gpu_vram),
            **extra,  # type: ignore[arg-type]
        )


def infer_active_profile(
    containers: Sequence[ManagedContainer],
    profile_hashes: Mapping[str, tuple[Mapping[str, str], Mapping[str, str]]] | None = None,
) -> str | None:
    """The profile the running containers belong to, read from their labels.

    A switch keeps containers whose spec did not change, so a kept container still carries the
    label of the profile that created it. The newest container's profile label is therefore the
    first guess; when `profile_hashes` (profile → (resident service → hash, on-demand service →
    hash)) is given, a profile whose services match the running set exactly wins.
    """
    running = [item for item in containers if item.running and not item.aside]
    if not running:
        return None
    if profile_hashes:
        actual = {item.service: item.spec_hash for item in running}
        matches = []
        for name, (resident, on_demand) in profile_hashes.items():
            if any(actual.get(svc) != digest for svc, digest in resident.items()):
                continue
            if all(
                resident.get(svc) == digest or on_demand.get(svc) == digest
                for svc, digest in actual.items()
            ):
                matches.append(name)
        if len(matches) == 1:
            return matches[0]
        labelled = {item.profile for item in running}
        preferred = [name for name in matches if name in labelled]
        if preferred:
            newest = max(running, key=lambda item: item.created_at or "")
            return newest.profile if newest.profile in preferred else preferred[0]
    newest = max(running, key=lambda item: item.created_at or "")
    return newest.profile
