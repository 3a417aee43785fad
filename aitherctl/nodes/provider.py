"""What aitherctl asks of a GPU marketplace (`Provider`), and the plain values that cross it.

One adapter per marketplace (`vast.py` for Vast.ai); a multi-cloud engine (SkyPilot, RunPod's
SDK) would be another adapter behind the same protocol. Adapters never let their HTTP library's
errors out: each failure becomes a `ProviderError` whose `kind` says what the caller may do.
Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from aitherctl.errors import AitherError


class ProviderFailure(StrEnum):
    UNREACHABLE = "unreachable"  # no answer (network, DNS, timeout, 5xx): try again later
    RATE_LIMITED = "rate_limited"  # 429: wait `retry_after_s`
    REFUSED = "refused"  # the provider said no (an insufficient bid, an offer taken, no credit)
    AUTH = "auth"  # the API key is missing or wrong
    NOT_FOUND = "not_found"  # no such instance (already destroyed)


class ProviderError(AitherError):
    def __init__(
        self, message: str, kind: ProviderFailure, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class OfferQuery:
    """What a node asks for: a GPU model, at least this much memory per GPU, this many GPUs,
    at most this much an hour (GPU and storage for `disk_gb`)."""

    gpu_name: str
    num_gpus: int = 1
    min_gpu_ram_bytes: int | None = None
    max_price_per_hour_usd: float | None = None
    disk_gb: float = 16.0


@dataclass(frozen=True, slots=True)
class Offer:
    """One machine's ask. `price_per_hour_usd` is the whole hourly price for `disk_gb` of
    storage (Vast: `dph_total`, the bundle's price with `allocated_storage` applied)."""

    id: str
    gpu_name: str
    num_gpus: int
    gpu_ram_bytes: int | None
    price_per_hour_usd: float
    storage_cost_per_gb_month_usd: float | None = None


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """An instance to make on `offer_id`: the container to run and the port its engine answers
    on (published by the provider to some port of the machine's public address)."""

    offer_id: str
    image: str
    args: tuple[str, ...]
    port: int
    label: str
    env: tuple[tuple[str, str], ...] = ()
    disk_gb: float = 16.0
    price_per_hour_usd: float | None = None  # a bid (interruptible); None: on demand


class InstanceStatus(StrEnum):
    """The provider's word for an instance, reduced to what aitherctl acts on."""

    LOADING = "loading"  # created, the image pulled or the container starting
    RUNNING = "running"  # the container runs (its engine may still be loading)
    STOPPED = "stopped"  # exited or stopped: still billed for storage
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance as the provider lists it: its label, status and hourly price, when it
    started, and its public address and published ports."""

    id: str
    label: str | None
    status: InstanceStatus
    price_per_hour_usd: float | None
    started_at: float | None  # Unix time
    address: str | None = None  # the machine's public address
    ports: dict[int, int] = field(default_factory=dict)  # container port -> public port

    def url(self, port: int) -> str | None:
        """`http://ADDRESS:PUBLIC_PORT` for the container's `port`, once published."""
        public = self.ports.get(port)
        if self.address is None or public is None:
            return None
        return f"http://{self.address}:{public}"


@dataclass(frozen=True, slots=True)
class Account:
    """The marketplace account's money: the credit left to spend (None when not reported)."""

    credit_usd: float | None  # what is left to spend (Vast: `credit`)


class Provider(Protocol):
    """A GPU marketplace. Every method raises `ProviderError` on failure."""

    @property
    def name(self) -> str: ...

    def search_offers(self, query: OfferQuery) -> list[Offer]:
        """Offers that match, cheapest first."""
        ...

    def create(self, request: CreateRequest) -> str:
        """Rent the offer and start the container; the new instance's id."""
        ...

    def status(self, instance_id: str) -> Instance | None:
        """The instance, or None when the provider no longer has it."""
        ...

    def destroy(self, instance_id: str) -> None:
        """Destroy it (storage included); an instance already gone is not an error."""
        ...

    def list_instances(self) -> list[Instance]:
        """Every instance of this account (the caller filters by label)."""
        ...

    def account(self) -> Account: ...
