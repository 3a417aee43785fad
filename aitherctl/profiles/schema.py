"""The keys a profile file may use, and one file's fields as written (each with its file:line),
before `extends` is resolved and the profile is built."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aitherctl.errors import ConfigError
from aitherctl.yamlsrc import Located

PROFILE_KEYS = {
    "name",
    "description",
    "extends",
    "gpu",
    "ram",
    "services",
    "routing",
    "endpoints",
    "budget",
    "ledger",
    "hosts",
    "allow_unauthenticated_network",
    "nodes",
    "cloud",
}
GPU_KEYS = {"reserve"}
RAM_KEYS = {"reserve", "limit"}
SERVICE_KEYS = {
    "engine",
    "image",
    "model",
    "port",
    "bind",
    "container_port",
    "gpu",
    "vram",
    "pinned",
    "on_demand",
    "role",
    "served_name",
    "args",
    "env",
    "volumes",
    "health",
    "keep_alive",
    "max_loaded_models",
    "num_parallel",
    "ram",
    "idle_after",
    "max_concurrency",
    "max_queue",
    "priority",
    "host",
    "api_key_env",
    "source",
}
HOST_KEYS = {"docker", "address"}
HEALTH_KEYS = {"path", "timeout"}
OLLAMA_ONLY = ("keep_alive", "max_loaded_models", "num_parallel")
DEFAULT_RESERVE = "5%"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

# A service without `image` gets its engine driver's pinned default (aitherctl.engines).

EXTENSION_PREFIX = "x-"  # top-level keys for the user's own use, e.g. anchors: `x-vllm: &vllm`


@dataclass(slots=True)
class RawField:
    """One field as written in a profile file: its value, and the file and line it came from."""

    value: Any
    source: str
    line: int | None


@dataclass(frozen=True, slots=True)
class EnvItem:
    """One `env:` variable of a service as written: its name, its value unexpanded, and its line."""

    name: str
    value: str  # as written: `${VAR}` references are expanded when the profile is built
    line: int | None


@dataclass(slots=True)
class RawService:
    """A service's fields as written, each with where it was written (after `extends`)."""

    fields: dict[str, RawField]
    source: str
    line: int | None
    # Keys written with a mistake (already reported): the service is not built, but its other
    # fields are still checked, so one pass reports every mistake.
    bad: frozenset[str] = frozenset()


@dataclass(slots=True)
class RawProfile:
    """One file's profile, checked field by field, before `extends` and cross-field rules."""

    name: str
    located: Located
    description: str = ""
    extends: tuple[str, int | None] | None = None
    reserve: RawField | None = None
    services: dict[str, RawService | None] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    # Mistakes found in this file; `build_profile` reports them with its own, all at once.
    problems: list[ConfigError] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.located.source
