"""What a profile declares, after loading, `extends` resolution and validation.

These are the objects the planner, the reconciler, `ps` and the routing layer read. They are built
only by `aitherctl.profiles.loader`, which checks every field and reports file:line on a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aitherctl.units import MemoryAmount


class Engine(StrEnum):
    VLLM = "vllm"
    OLLAMA = "ollama"
    COMFYUI = "comfyui"
    LLAMACPP = "llamacpp"
    GENERIC = "generic"


@dataclass(frozen=True, slots=True)
class Volume:
    """A mount of a service's container: a host path or a named volume, where it appears in the
    container, and whether it is read-only."""

    host: str
    container: str
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.read_only else "")


LOCAL_HOST = "local"  # the host name of this machine's own engine (DOCKER_HOST or the context)


def is_loopback(host: str) -> bool:
    """This machine only: `localhost` (and `*.localhost`), 127.0.0.0/8, ::1. A LAN address
    (192.168.x, 10.x) or any other host name is another machine."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    if name in ("127.0.0.1", "::1"):
        return True  # the usual spellings, without importing ipaddress on every `run`
    import ipaddress

    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True, slots=True)
class Host:
    """Another Docker engine a profile's services may run on (`hosts:`).

    `docker`: how the engine is reached (`ssh://user@box[:port]`, `tcp://box:2376` with TLS,
    `unix://...`, or a Docker context name). `address`: where this machine reaches what that
    engine publishes (the URL's host unless set; required for a context name)."""

    name: str
    docker: str
    address: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """Readiness probe settings. `path=None` means the engine's own probe."""

    path: str | None = None
    timeout_s: float | None = None  # None: the engine's default


@dataclass(frozen=True, slots=True)
class Service:
    """One service of a profile: the engine and image, the model, where it listens, its GPUs and
    budgets, and how the scheduler treats it. `line` is where the file declares it."""

    name: str
    engine: Engine
    image: str
    port: int  # host port
    model: str | None = None
    bind: str = "127.0.0.1"
    container_port: int | None = None  # None: the engine's default
    gpus: tuple[int, ...] = ()  # () means CPU only
    vram: MemoryAmount | None = None  # per GPU in `gpus`
    pinned: bool = False
    on_demand: bool = False
    role: str | None = None
    served_name: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    volumes: tuple[Volume, ...] = ()
    health: Health = field(default_factory=Health)
    # Ollama only: OLLAMA_KEEP_ALIVE, OLLAMA_MAX_LOADED_MODELS, OLLAMA_NUM_PARALLEL.
    keep_alive: str | None = None
    max_loaded_models: int | None = None
    num_parallel: int | None = None
    # The scheduler (`aitherctl serve`): host RAM a CPU service holds (its pool is `ram`), how
    # long it may sit idle before it is slept or stopped, how many requests it works on at once
    # (None: its engine's own figure), how many may wait, and its eviction rank.
    ram: MemoryAmount | None = None
    idle_after_s: float | None = None
    max_concurrency: int | None = None
    max_queue: int | None = None
    priority: str = "normal"  # low, normal or high: low is evicted first
    # The Docker host it runs on: `local` (this machine's engine) or a name under `hosts:`.
    host: str = LOCAL_HOST
    # The variable holding the API key the server requires (passed to the engine, sent by
    # `run` and `serve`): needed for a service that answers on a network address.
    api_key_env: str | None = None
    # Where this machine reaches it (an address on its host); None: the local rule
    # (loopback for a wildcard bind, else the bind).
    reach: str | None = None
    # Where `pull` downloads a llama.cpp model file from: `ORG/NAME:FILE` on the Hugging Face
    # Hub (vLLM's `model` is the Hub id itself).
    source: str | None = None
    line: int | None = None  # where the service is declared, for messages

    @property
    def uses_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def model_name(self) -> str:
        """The name clients ask for: `served_name`, else the model id, else the service name."""
        if self.served_name:
            return self.served_name
        if self.model and not self.model.startswith("/"):
            return self.model
        return self.name

    @property
    def gpu_label(self) -> str:
        return ",".join(str(index) for index in self.gpus) if self.gpus else "cpu"


class NodeMode(StrEnum):
    """How a rented node lives: kept running (and replaced when it dies) or created on demand
    and destroyed after its idle time."""

    ALWAYS_ON = "always_on"
    ON_DEMAND = "on_demand"


@dataclass(frozen=True, slots=True)
class WakeOn:
    """When `serve` creates an on-demand node: a request's effort at least `effort`, or at
    least `queue_depth` requests waiting locally. None: that trigger is off."""

    effort: int | None = None
    queue_depth: int | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """A GPU rented from a marketplace (`nodes:`): the offer it wants and what it runs there.

    `gpu`: the GPU model as the provider names it (`RTX 3090`); `vram`: at least this much GPU
    memory; `max_price_per_hour_usd`: the ceiling for the offer's whole hourly price (GPU time
    and storage); `port`: the engine's port inside the node's container; `idle_after_s`: how
    long an on-demand node may sit idle before it is destroyed (a stopped instance still pays
    for its storage)."""

    name: str
    provider: str
    gpu: str
    max_price_per_hour_usd: float
    engine: Engine
    image: str
    port: int
    vram: MemoryAmount | None = None
    num_gpus: int = 1
    disk_gb: float = 16.0
    model: str | None = None
    served_name: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    mode: NodeMode = NodeMode.ON_DEMAND
    wake_on: WakeOn = field(default_factory=WakeOn)
    idle_after_s: float | None = None
    role: str | None = None
    source: str = ""  # the file it was declared in, for messages
    line: int | None = None

    @property
    def model_name(self) -> str:
        """The name clients ask for: `served_name`, else the model id, else the node's name."""
        if self.served_name:
            return self.served_name
        if self.model and not self.model.startswith("/"):
            return self.model
        return self.name


@dataclass(frozen=True, slots=True)
class CloudBudget:
    """The machine's money for rented nodes (`cloud:`): at most `daily_cap_usd` a day (nodes
    and API spend together), a warning at `warn_share` of it, and with `hard_stop` no node is
    created and every running node is destroyed at the cap."""

    daily_cap_usd: float
    warn_share: float = 0.8
    hard_stop: bool = True
    line: int | None = None

    @property
    def warn_at_usd(self) -> float:
        return self.daily_cap_usd * self.warn_share


@dataclass(frozen=True, slots=True)
class Profile:
    """A loaded profile: its services, the memory it keeps free, the other Docker hosts and
    rented nodes it uses, and its routing, endpoint, budget and ledger settings."""

    name: str
    description: str
    services: dict[str, Service]
    gpu_reserve: MemoryAmount
    source: str
    # The host-RAM pool of CPU services: kept free for the host (`ram.reserve`) and at most
    # (`ram.limit`); None: not set.
    ram_reserve: MemoryAmount | None = None
    ram_limit: MemoryAmount | None = None  # the file it was loaded from
    extends: str | None = None
    hosts: dict[str, Host] = field(default_factory=dict)  # the other Docker hosts it uses
    # Reserved for the routing layer: kept as loaded (after `extends` merging).
    routing: dict[str, Any] = field(default_factory=dict)
    endpoints: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    ledger: dict[str, Any] = field(default_factory=dict)
    # `allow_unauthenticated_network: true`: services may answer beyond loopback without a key.
    allow_unauthenticated_network: bool = False
    # Rented GPUs (`nodes:`) and the money they may spend (`cloud:`; None: no node may be made).
    nodes: dict[str, Node] = field(default_factory=dict)
    cloud: CloudBudget | None = None

    @property
    def open_services(self) -> list[str]:
        """Services bound beyond loopback without an API key (only with
        `allow_unauthenticated_network`): anyone on that network can use them."""
        return sorted(
            name
            for name, svc in self.services.items()
            if not svc.api_key_env and not is_loopback(svc.reach or svc.bind)
        )

    @property
    def host_names(self) -> list[str]:
        """Every host with a service of this profile, `local` first when it has one."""
        used = {svc.host for svc in self.services.values()}
        return sorted(used, key=lambda name: (name != LOCAL_HOST, name))

    def on_host(self, host: str) -> Profile:
        """The same profile with only the services that run on `host`."""
        from dataclasses import replace

        return replace(
            self,
            services={n: s for n, s in self.services.items() if s.host == host},
        )

    @property
    def resident(self) -> dict[str, Service]:
        """Services a switch starts: everything but the on-demand ones."""
        return {name: svc for name, svc in self.services.items() if not svc.on_demand}

    def service(self, name: str) -> Service:
        from aitherctl.errors import NotFoundError

        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise NotFoundError(
                f"profile {self.name!r} has no service {name!r} (it has: {known})"
            ) from None
