"""Whether the images a plan needs are on the engine, or can be pulled, asked before anything
changes: `profile plan` says so, a switch refuses early, and hints name only a profile whose
images are here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aitherctl.docker.engine import DockerEngine
from aitherctl.errors import AitherError
from aitherctl.gpu.vram import NO_GPU_HINT
from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.switching.plan import Plan
from aitherctl.switching.specs import build_specs


@dataclass(frozen=True, slots=True)
class ImageStatus:
    """One image a plan starts containers from."""

    image: str
    present: bool  # on the engine (`docker image inspect`)
    pull_refusal: str | None = None  # why it cannot be pulled; None when present or pullable

    @property
    def usable(self) -> bool:
        return self.present or self.pull_refusal is None

    def describe(self) -> str:
        """One line for a plan; empty for an image that is there."""
        if self.present:
            return ""
        if self.pull_refusal is None:
            return f"image {self.image} is not on this engine; the switch pulls it first"
        return (
            f"image {self.image} is not on this engine and cannot be pulled "
            f"({self.pull_refusal}): the switch would refuse"
        )


def image_statuses(engine: DockerEngine, images: Sequence[str]) -> tuple[ImageStatus, ...]:
    """Each image, present or not, and whether its registry has it (asked only when missing)."""
    statuses = []
    for image in sorted(set(images)):
        if engine.image_exists(image):
            statuses.append(ImageStatus(image, present=True))
        else:
            statuses.append(ImageStatus(image, False, engine.pull_refusal(image)))
    return tuple(statuses)


def plan_images(engine: DockerEngine, plan: Plan) -> tuple[ImageStatus, ...]:
    """The images of the containers `plan` creates."""
    return image_statuses(engine, [spec.image for spec in plan.to_start])


def cpu_profile_here(engine: DockerEngine, catalog: ProfileCatalog) -> str | None:
    """A profile that needs no GPU and whose images are all here (else all pullable), for the
    hint of a GPU profile refused on a machine without one; None when there is none."""
    pullable: str | None = None
    for entry in catalog.entries():
        try:
            profile = catalog.load(entry.name)
        except AitherError:
            continue
        if not profile.resident or any(svc.uses_gpu for svc in profile.resident.values()):
            continue
        specs = build_specs(profile, {})
        statuses = image_statuses(engine, [spec.image for spec in specs.resident.values()])
        if all(status.present for status in statuses):
            return profile.name
        if pullable is None and all(status.usable for status in statuses):
            pullable = profile.name
    return pullable


def no_gpu_hint(engine: DockerEngine | None, catalog: ProfileCatalog | None) -> str:
    """What to run instead when a profile needs a GPU that is not there."""
    if engine is None or catalog is None:
        return NO_GPU_HINT
    name = cpu_profile_here(engine, catalog)
    if name is not None:
        return f"CPU services still run: try `aitherctl profile switch {name}`."
    return (
        "No profile without a GPU has its image on this engine, and none can be pulled: "
        "`bash scripts/quickstart.sh` builds a llama.cpp image and a `cpu-local` profile that "
        "uses it."
    )


__all__ = ["ImageStatus", "cpu_profile_here", "image_statuses", "no_gpu_hint", "plan_images"]
