"""A profile's services as containers, given the GPUs' memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aitherctl.engines.container import ContainerSpec
from aitherctl.engines.registry import build_container
from aitherctl.profiles.profile import Profile


@dataclass(frozen=True, slots=True)
class ProfileSpecs:
    """A profile's services as containers to run, by name: those a switch starts (`resident`) and
    those started only when needed (`on_demand`)."""

    resident: dict[str, ContainerSpec]
    on_demand: dict[str, ContainerSpec]

    def get(self, service: str) -> ContainerSpec | None:
        return self.resident.get(service) or self.on_demand.get(service)


def build_specs(profile: Profile, gpu_memory: Mapping[int, int]) -> ProfileSpecs:
    resident: dict[str, ContainerSpec] = {}
    on_demand: dict[str, ContainerSpec] = {}
    for name, service in profile.services.items():
        neighbours = [svc for svc in profile.resident.values() if svc.name != name]
        spec = build_container(service, gpu_memory, neighbours)
        (on_demand if service.on_demand else resident)[name] = spec
    return ProfileSpecs(resident, on_demand)


def gpu_services(profile: Profile) -> list[str]:
    return [name for name, svc in profile.services.items() if svc.uses_gpu]


def restart_policy(gpus: Sequence[int]) -> str:
    """The restart policy a switch gives a container, and an export writes. GPU services: `no`.
    After a reboot or a daemon restart Docker would start every `unless-stopped` (and,
    moby#47846, `on-failure`) container at once, the race the one-after-another start avoids;
    `aitherctl up --restore` brings them back in order instead. CPU services allocate no GPU
    memory and may come back by themselves."""
    return "no" if gpus else "unless-stopped"
