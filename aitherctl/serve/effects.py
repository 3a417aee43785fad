"""What the scheduler does to the world, behind one small interface (pure: typing only).

The scheduler decides; an `Effects` performs. `aitherctl.serve.control.ServiceControl` is the
real one (Docker transactions in their own thread pool, the engines' sleep and release requests
over HTTP, NVML); tests drive the scheduler through its interleavings with a fake that records
each call and returns when the test says so (tests/serve/unit/fake_effects.py), while each
real effect keeps its own test against a real engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aitherctl.profiles.profile import Node, Profile, Service

MEMORY_FREE_TIMEOUT_S = 60.0  # after an eviction, how long the GPU may take to show it free


class Cancel(Protocol):
    """Set when the load it belongs to is abandoned (`threading.Event`)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU as the switch's VRAM check counts it (aitherctl.gpu.vram): what aitherctl does
    not control (memory outside aitherctl plus the driver's reservation) and what each running
    service really holds there (NVML per-process memory of its container's PIDs)."""

    index: int
    total_bytes: int
    free_bytes: int
    outside_bytes: int = 0
    real_use_bytes: Mapping[str, int] = field(default_factory=dict)


class Effects(Protocol):
    """Each call performs one effect and returns when it is done; errors are `AitherError`s."""

    async def start(self, service: Service, cancel: Cancel) -> None:
        """`aitherctl up SERVICE` of exactly this spec: transaction, lock, readiness wait."""

    async def stop(self, service: Service) -> None:
        """`aitherctl down SERVICE`."""

    async def sleep(self, service: Service, base_url: str) -> None:
        """vLLM sleep mode: the container runs, its GPU memory is freed."""

    async def wake(self, service: Service, base_url: str) -> None:
        """vLLM `POST /wake_up`."""

    async def release(self, service: Service, base_url: str) -> None:
        """Ollama `keep_alive: 0` / ComfyUI `/free`, returning once the engine shows its memory
        released. Raises `ExternallyBusy` when it works on requests sent around the gateway."""

    async def observe(self) -> set[str]:
        """The services of the profile whose container runs now (on every host)."""

    async def read_gpus(self) -> dict[int, GpuReading] | None:
        """This machine's GPUs now; None without NVML."""

    def adopt(self, profile: Profile) -> None:
        """Serve `profile` from now on: later loads start its specs (the file may have been
        edited, or the active profile changed under `serve --follow`)."""

    async def close(self) -> None:
        """Close connections and thread pools."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A rented node whose engine answers: this machine's record of its instance, the engine's
    root URL and the key it requires (never logged: `repr` leaves it out)."""

    record_id: str
    url: str
    api_key: str | None = field(default=None, repr=False)
    price_per_hour_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Spend:
    """Today's spend (local day): everything in the ledger (API requests and nodes) plus each
    node's seconds not accrued yet, and each node's own share of it, by node name."""

    today_usd: float
    by_node_usd: Mapping[str, float] = field(default_factory=dict)


class NodeEffects(Protocol):
    """What the scheduler does to rented nodes (`aitherctl.serve.node_control.NodeControl` is
    the real one: the provider's calls in worker threads, this machine's records, the ledger).
    Errors are `AitherError`s."""

    async def create_node(self, node: Node, cancel: Cancel) -> NodeAddress:
        """Create an instance of `node` (the record written first, the daily cap checked) and
        return once its engine answers; a failed or cancelled boot destroys what was made."""

    async def destroy_node(self, node: Node, record_id: str) -> None:
        """Destroy the instance (with its storage); its last seconds go into the ledger."""

    async def observe_nodes(self) -> dict[str, NodeAddress]:
        """The profile's nodes whose instance runs now (records reconciled with the
        provider's own list), by node name."""

    async def spend_today(self) -> Spend:
        """Today's spend (API requests and nodes, each node's cost accrued up to now)."""

    def adopt(self, profile: Profile) -> None:
        """Create the nodes of `profile` from now on (a followed switch, or an edit)."""

    async def close(self) -> None:
        """Let go of the provider's connections (a create in flight destroys what it made)."""
