"""A profile's services as containers, given the GPUs' memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aitherctl.engines import build_container
from aitherctl.engines.container import ContainerSpec
from aitherctl.profiles.profile import Profile


@dataclass(frozen=True, slots=True)
class ProfileSpecs:
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
