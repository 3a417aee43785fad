"""A service as the container to run: image, arguments, ports, GPUs, and how to tell it is ready.

Engines (`engines/registry.py`) build these from a `Service`; the Docker adapter turns them into
API calls. The spec hash covers everything that, if changed, needs a new container, so a switch
keeps a container whose hash is unchanged and recreates one whose hash differs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from aitherctl.profiles.profile import Engine, Volume

LABEL_PREFIX = "ai.aitherctl."
LABEL_MANAGED = LABEL_PREFIX + "managed"
LABEL_NAMESPACE = LABEL_PREFIX + "namespace"
LABEL_PROFILE = LABEL_PREFIX + "profile"
LABEL_SERVICE = LABEL_PREFIX + "service"
LABEL_HASH = LABEL_PREFIX + "spec-hash"
LABEL_ENGINE = LABEL_PREFIX + "engine"
LABEL_MODEL = LABEL_PREFIX + "model"
LABEL_PORT = LABEL_PREFIX + "port"
LABEL_BIND = LABEL_PREFIX + "bind"
LABEL_GPUS = LABEL_PREFIX + "gpus"
LABEL_VRAM = LABEL_PREFIX + "vram-bytes"
LABEL_ROLE = LABEL_PREFIX + "role"
LABEL_PINNED = LABEL_PREFIX + "pinned"
LABEL_ON_DEMAND = LABEL_PREFIX + "on-demand"
LABEL_HEALTH = LABEL_PREFIX + "health"
LABEL_ENDPOINT_MODEL = LABEL_PREFIX + "served-model"
LABEL_GPU_VRAM = LABEL_PREFIX + "gpu-vram"  # "0:8589934592,1:17179869184"
LABEL_TXN = LABEL_PREFIX + "txn"  # the switch that created the container
LABEL_RECORD = LABEL_PREFIX + "record"  # on a switch's intent record (a labelled volume)
ASIDE_MARK = "-aside-"  # a replaced container is renamed NAME-aside-TXN until the switch commits


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """One HTTP GET that must answer `status`; with `model`, a /v1/models-style JSON list of
    `data[].id` must contain it."""

    path: str
    status: int = 200
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Readiness:
    """How to tell a started container is ready: checks that must all pass within `timeout_s`."""

    checks: tuple[HttpCheck, ...]
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A service as the container to run: image, command, environment, port, volumes, GPUs and
    budgets, and readiness checks. `spec_hash` says when a container must be recreated."""

    service: str
    engine: Engine
    image: str
    command: tuple[str, ...]  # arguments after the image's entrypoint
    env: tuple[tuple[str, str], ...]
    container_port: int
    host_port: int
    bind: str
    volumes: tuple[Volume, ...]
    gpus: tuple[int, ...]
    vram_bytes: int | None  # the budget per GPU, resolved against the GPU's memory
    ipc_host: bool
    readiness: Readiness
    model: str | None = None
    served_model: str | None = None
    role: str | None = None
    pinned: bool = False
    on_demand: bool = False
    # The budget on each GPU, resolved against that GPU's own total ((index, bytes), ...): a 35%
    # budget is 8.4 GB on a 24 GB card and 16.8 GB on a 48 GB one. Empty for CPU services.
    gpu_vram: tuple[tuple[int, int], ...] = ()
    # The API key the server checks: (the variable the engine reads in the container, the
    # variable of this machine that holds it). Only the names are part of the spec: the value
    # is read when the container is created and never written to a label.
    key_env: tuple[str, str] | None = None

    def spec_hash(self) -> str:
        """What the container *is*: changing any of these needs a new container.

        The readiness timeout, role and pinned/on-demand flags are left out: they change how
        aitherctl treats the container, not the container itself.
        """
        identity = asdict(self)
        for key in ("readiness", "role", "pinned", "on_demand"):
            identity.pop(key)
        if identity["key_env"] is None:
            del identity["key_env"]  # so containers from before the field keep their hash
        identity["readiness_checks"] = [asdict(check) for check in self.readiness.checks]
        text = json.dumps(identity, sort_keys=True, default=str)
        import hashlib  # here, not at import: `ps` and `run` only read hashes from labels

        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def budget_on(self, gpu: int) -> int | None:
        """The budget on GPU `gpu`, resolved against that GPU's own total."""
        for index, value in self.gpu_vram:
            if index == gpu:
                return value
        return self.vram_bytes if gpu in self.gpus else None

    def labels(self, namespace: str, profile: str, txn: str | None = None) -> dict[str, str]:
        labels = {
            LABEL_MANAGED: "true",
            LABEL_NAMESPACE: namespace,
            LABEL_PROFILE: profile,
            LABEL_SERVICE: self.service,
            LABEL_HASH: self.spec_hash(),
            LABEL_ENGINE: self.engine.value,
            LABEL_PORT: str(self.host_port),
            LABEL_BIND: self.bind,
            LABEL_GPUS: ",".join(map(str, self.gpus)) if self.gpus else "none",
            LABEL_PINNED: str(self.pinned).lower(),
            LABEL_ON_DEMAND: str(self.on_demand).lower(),
            LABEL_HEALTH: json.dumps(
                [asdict(check) for check in self.readiness.checks], separators=(",", ":")
            ),
        }
        if self.model:
            labels[LABEL_MODEL] = self.model
        if self.served_model:
            labels[LABEL_ENDPOINT_MODEL] = self.served_model
        if self.vram_bytes is not None:
            labels[LABEL_VRAM] = str(self.vram_bytes)
        if self.role:
            labels[LABEL_ROLE] = self.role
        if self.gpu_vram:
            labels[LABEL_GPU_VRAM] = ",".join(f"{gpu}:{value}" for gpu, value in self.gpu_vram)
        if txn:
            labels[LABEL_TXN] = txn
        return labels


def container_name(namespace: str, service: str) -> str:
    return f"aither-{service}" if namespace == "default" else f"aither-{namespace}-{service}"
