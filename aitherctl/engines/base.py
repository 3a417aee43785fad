"""What an engine driver is: the pure description of one inference engine.

A driver says what to run (image, command, environment, volumes), how to tell the server is ready,
where it publishes its load and how to read it, and how to ask it to give back GPU memory. It does
no I/O: the Docker adapter, `switching/readiness.py`, `monitor/scrape.py` and
`monitor/unload.py` perform what it describes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aitherctl.engines.container import ContainerSpec, HttpCheck
from aitherctl.profiles.profile import Service, Volume

# The readings' model and parsers (with datetime): imported by the parsers when they run.
if TYPE_CHECKING:
    from aitherctl.engines.metrics import EngineMetrics


@dataclass(frozen=True, slots=True)
class GpuShare:
    """One GPU a service runs on, as its driver needs to know it.

    `total_bytes`: the GPU's memory (NVML `nvmlDeviceGetMemoryInfo().total`).
    `budget_bytes`: the service's budget there, resolved against that GPU's own total.
    `neighbours_bytes`: the budgets, on this GPU, of the profile's other resident services.
    """

    index: int
    total_bytes: int
    budget_bytes: int
    neighbours_bytes: int = 0


@dataclass(frozen=True, slots=True)
class EngineContainer:
    """The engine-specific part of a container. `command` is what follows the image's entrypoint;
    an empty one keeps the image's own CMD (Docker gets `command=None`)."""

    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ipc_host: bool = False
    volumes: tuple[Volume, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsEndpoint:
    """One page an engine serves about its own load. `parse` takes the body as text
    (`prometheus`) or decoded JSON (`json`) and raises `MetricsFormatError` on a wrong shape.
    A `fallback` page is asked only when no earlier page of the engine answered."""

    path: str
    format: Literal["prometheus", "json"]
    parse: Callable[[Any], EngineMetrics]
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request an adapter sends to the engine on aitherctl's behalf (e.g. to free memory)."""

    method: Literal["GET", "POST"]
    path: str
    json_body: Any = field(default=None, hash=False)  # a JSON object is not hashable


@dataclass(frozen=True, slots=True)
class SleepMode:
    """How a running server frees its GPU memory and gets it back without a restart (vLLM's
    sleep mode): `sleep` and `wake` are sent as they are; `status_path` answers
    `{"is_sleeping": bool}`."""

    sleep: HttpRequest
    wake: HttpRequest
    status_path: str


class EngineDriver(Protocol):
    """Everything aitherctl knows about one engine. One module per engine implements it; the
    registry in `aitherctl.engines.registry` looks drivers up by the profile's `engine:` value."""

    @property
    def engine(self) -> str:
        """The `engine:` value profiles use (`vllm`)."""
        ...

    @property
    def default_port(self) -> int | None:
        """The port the server listens on inside its container; None: the service's own port."""
        ...

    @property
    def default_timeout_s(self) -> float:
        """How long a start may take before readiness gives up (a profile's `health.timeout`
        overrides it)."""
        ...

    @property
    def health_path(self) -> str | None:
        """The one GET that tells whether a running server can take requests (the router asks
        it before sending); None when the engine has none."""
        ...

    @property
    def client_path(self) -> str:
        """What clients append to `http://host:port` to reach the server's API: `/v1` for an
        OpenAI-compatible server, "" for one whose own clients take the root (Ollama, ComfyUI).
        `switch` and `up` print the service's URL with it."""
        ...

    @property
    def metrics(self) -> tuple[MetricsEndpoint, ...]:
        """The pages the monitor scrapes, in order; one reading merges every page that answered."""
        ...

    @property
    def queue_metric(self) -> str | None:
        """The Prometheus gauge counting requests waiting for a slot (the router's queue check)."""
        ...

    @property
    def release_needs_models(self) -> bool:
        """True when `release_memory` needs the names of the loaded models (Ollama): the adapter
        reads them from `metrics` when the caller does not know them."""
        ...

    def default_image(self, uses_gpu: bool) -> str | None:
        """The image a service gets when its profile names none, pinned to a version."""
        ...

    def container(self, service: Service, port: int, gpus: Sequence[GpuShare]) -> EngineContainer:
        """The command, environment, IPC mode and default volumes of `service`'s container.
        `port` is the port to listen on inside the container; `gpus` are its GPUs in order."""
        ...

    def readiness(self, service: Service) -> tuple[HttpCheck, ...]:
        """The GETs that must all succeed before the service counts as started."""
        ...

    def allocates_gpu_at_start(self, spec: ContainerSpec) -> bool:
        """True when the server sizes or takes its GPU memory as it starts, so two such services
        starting at once on one GPU would race for the same free memory (the switch starts them
        one after another)."""
        ...

    def default_concurrency(self, service: Service) -> int | None:
        """How many requests the server works on at once with this service's settings; None when
        the engine decides at run time."""
        ...

    def release_memory(self, loaded_models: Sequence[str]) -> tuple[HttpRequest, ...] | None:
        """Requests that make a running server give its GPU memory back without stopping; None
        when the engine cannot (stop the container instead)."""
        ...

    def sleep_mode(self, service: Service) -> SleepMode | None:
        """How the scheduler sleeps and wakes this service, when its settings enable that; None:
        it is stopped (or its memory released) instead."""
        ...


def has_flag(args: Sequence[str], *names: str) -> bool:
    """True when `args` sets any of `names`, as `--flag value` or `--flag=value`."""
    return any(arg in names or arg.split("=", 1)[0] in names for arg in args)


def flag_value(args: Sequence[str], *names: str) -> str | None:
    """The value of the last of `names` in `args` (`--flag value` or `--flag=value`)."""
    found: str | None = None
    for position, arg in enumerate(args):
        head, sep, tail = arg.partition("=")
        if sep and head in names:
            found = tail
        elif arg in names and position + 1 < len(args):
            found = args[position + 1]
    return found


def no_volumes(service: Service) -> tuple[Volume, ...]:
    del service
    return ()


def unless_mounted(service: Service, defaults: Sequence[Volume]) -> tuple[Volume, ...]:
    """`defaults` less those whose container path the profile already mounts."""
    taken = {volume.container.rstrip("/") for volume in service.volumes}
    return tuple(volume for volume in defaults if volume.container.rstrip("/") not in taken)
