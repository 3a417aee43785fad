"""Vast.ai behind `Provider`: six REST routes, with httpx (the routes, fields and auth are those
the official `vastai` SDK 1.9.1 uses: `vastai/api/offers.py`, `instances.py`, `billing.py`,
`client.py`); tests/nodes/test_vast_sdk_contract.py runs the SDK and this adapter against the
same contract double and compares what each sends).

- base URL: `$VAST_URL` (the SDK's own override), else https://console.vast.ai; API v0 routes
  under `/api/v0`, the instance list under `/api/v1`; `Authorization: Bearer KEY`
  (`$VAST_API_KEY`, as the SDK's CLI reads it).
- offers: `POST /api/v0/bundles/` with the filter document (`gpu_name`, `num_gpus`, `gpu_ram`
  in GiB times 1000 as the SDK asks it, `dph_total`, `order`, `type: on-demand`,
  `allocated_storage` in GB) → `{"offers": [...]}` (`id`, `gpu_name`, `num_gpus`, `gpu_ram`
  MiB, `dph_total` $/h, `storage_cost` $/GB/month).
- create: `PUT /api/v0/asks/{offer}/` with `{client_id: me, image, env, price, disk, label,
  runtype: args, args}` → `{"success": true, "new_contract": ID}`; `env` `{"-p 8000:8000": "1"}`
  publishes the engine's port (the SDK's `parse_env` of `-p 8000:8000`).
- one instance: `GET /api/v0/instances/{id}/?owner=me` → `{"instances": {...} | null}`; fields
  `actual_status` (loading, running, exited, ...), `dph_total`, `start_date`, `label`,
  `public_ipaddr`, `ports` (`{"8000/tcp": [{"HostIp": ..., "HostPort": "41234"}]}`).
- every instance: `GET /api/v1/instances/?select_filters={}&order_by=[...]&limit=25`, pages
  followed through `next_token` → `after_token`.
- destroy: `DELETE /api/v0/instances/{id}/` with `{}`.
- account: `GET /api/v0/users/current` → `credit`.

Why httpx and not the SDK: these six calls are all aitherctl needs; the SDK brings `requests`
and its CLI, retries 429s itself with blocking sleeps (the caller must see a rate limit to back
off in `serve`), and raises `requests` errors or bare `Exception`s that would have to be caught
at every call anyway. httpx is already a dependency.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from aitherctl.nodes.provider import (
    Account,
    CreateRequest,
    Instance,
    InstanceStatus,
    Offer,
    OfferQuery,
    ProviderError,
    ProviderFailure,
)
from aitherctl.units import GIB

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "https://console.vast.ai"
# Vast's `gpu_ram` counts binary megabytes, as nvidia-smi does: a 3090 lists 24576, a 4090 24564
# (the SDK's benchmark table), so it is READ as MiB. It is ASKED as the SDK asks it: the SDK
# multiplies a query's GB by 1000 (`gpu_ram>=24` → 24000), so `vram: 24GiB` is sent as 24000.
# Sent as MiB (24576) it excluded every 4090, 12 MiB short of 24 GiB.
_MB = 1024 * 1024
_ASKED_PER_GIB = 1000
_STATUSES = {
    "loading": InstanceStatus.LOADING,
    "created": InstanceStatus.LOADING,
    "scheduling": InstanceStatus.LOADING,
    "running": InstanceStatus.RUNNING,
    "exited": InstanceStatus.STOPPED,
    "stopped": InstanceStatus.STOPPED,
    "offline": InstanceStatus.STOPPED,
}


class VastProvider:
    """Vast.ai through its REST API. `client` is an httpx.Client (tests give it the contract
    double's address); `api_key` is sent as a Bearer token and never logged."""

    name = "vast"

    def __init__(self, client: httpx.Client, base_url: str, api_key: str | None) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._api_key = api_key

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> VastProvider:
        import os

        import httpx

        env = dict(os.environ) if env is None else env
        return cls(
            httpx.Client(timeout=httpx.Timeout(20.0, connect=5.0)),
            env.get("VAST_URL") or DEFAULT_URL,
            env.get("VAST_API_KEY"),
        )

    # ---- the protocol ---------------------------------------------------------------------

    def search_offers(self, query: OfferQuery) -> list[Offer]:
        q: dict[str, Any] = {
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "gpu_name": {"eq": query.gpu_name},
            "num_gpus": {"eq": query.num_gpus},
            "order": [["dph_total", "asc"]],
            "type": "on-demand",
            "allocated_storage": query.disk_gb,
            "limit": 64,
        }
        if query.min_gpu_ram_bytes is not None:
            q["gpu_ram"] = {"gte": query.min_gpu_ram_bytes / GIB * _ASKED_PER_GIB}
        if query.max_price_per_hour_usd is not None:
            q["dph_total"] = {"lte": query.max_price_per_hour_usd}
        body = self._call("POST", "/api/v0/bundles/", json_body=q)
        offers = [_offer(row) for row in body.get("offers") or []]
        return sorted(offers, key=lambda offer: offer.price_per_hour_usd)

    def create(self, request: CreateRequest) -> str:
        env = dict(request.env)
        env[f"-p {request.port}:{request.port}"] = "1"
        body = self._call(
            "PUT",
            f"/api/v0/asks/{request.offer_id}/",
            json_body={
                "client_id": "me",
                "image": request.image,
                "env": env,
                "price": request.price_per_hour_usd,
                "disk": request.disk_gb,
                "label": request.label,
                "runtype": "args",
                "args": list(request.args),
            },
        )
        if not body.get("success") or body.get("new_contract") is None:
            raise ProviderError(
                f"vast refused to create an instance on offer {request.offer_id}: {_message(body)}",
                ProviderFailure.REFUSED,
            )
        return str(body["new_contract"])

    def status(self, instance_id: str) -> Instance | None:
        try:
            body = self._call("GET", f"/api/v0/instances/{instance_id}/", query={"owner": "me"})
        except ProviderError as exc:
            if exc.kind is ProviderFailure.NOT_FOUND:
                return None
            raise
        row = body.get("instances")
        return _instance(row) if isinstance(row, dict) else None

    def destroy(self, instance_id: str) -> None:
        try:
            self._call("DELETE", f"/api/v0/instances/{instance_id}/", json_body={})
        except ProviderError as exc:
            if exc.kind is not ProviderFailure.NOT_FOUND:
                raise

    def list_instances(self) -> list[Instance]:
        params: dict[str, Any] = {
            "select_filters": {},
            "order_by": [{"col": "id", "dir": "asc"}],
            "limit": 25,
        }
        found: list[Instance] = []
        for _page in range(400):  # at most 10,000 instances: a loop that cannot run away
            body = self._call("GET", "/api/v1/instances/", query=params)
            found += [_instance(row) for row in body.get("instances") or []]
            token = body.get("next_token")
            if not token:
                return found
            params["after_token"] = token
        return found

    def account(self) -> Account:
        body = self._call("GET", "/api/v0/users/current")
        credit = body.get("credit")
        return Account(float(credit) if isinstance(credit, (int, float)) else None)

    # ---- HTTP -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        query: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        import httpx

        url = self._base + path
        if query:
            # As the SDK does: each value JSON-encoded unless it is text, then quote_plus'd.
            url += "?" + "&".join(
                f"{key}={quote_plus(value if isinstance(value, str) else json.dumps(value))}"
                for key, value in query.items()
            )
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        what = f"vast {method} {path}"
        try:
            response = self._client.request(method, url, json=json_body, headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"{what}: no answer from {self._base} ({type(exc).__name__})",
                ProviderFailure.UNREACHABLE,
            ) from None
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {"value": body}
        status = response.status_code
        if status < 400:
            return body
        message = _message(body) or response.reason_phrase
        if status == 429:
            retry = response.headers.get("Retry-After")
            try:
                retry_after = float(retry) if retry is not None else None
            except ValueError:
                retry_after = None
            raise ProviderError(
                f"{what}: rate limited ({message})",
                ProviderFailure.RATE_LIMITED,
                retry_after_s=retry_after,
            )
        if status in (401, 403):
            raise ProviderError(
                f"{what}: the API key was refused ({message}); set VAST_API_KEY",
                ProviderFailure.AUTH,
            )
        if status == 404:
            raise ProviderError(f"{what}: not found ({message})", ProviderFailure.NOT_FOUND)
        if status >= 500:
            raise ProviderError(f"{what}: HTTP {status} ({message})", ProviderFailure.UNREACHABLE)
        raise ProviderError(f"{what}: refused ({message})", ProviderFailure.REFUSED)


def _message(body: dict[str, Any]) -> str:
    parts = [str(body[key]) for key in ("error", "msg") if body.get(key)]
    return ": ".join(parts) if parts else "no reason given"


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _offer(row: dict[str, Any]) -> Offer:
    ram = _float(row.get("gpu_ram"))
    return Offer(
        id=str(row.get("id")),
        gpu_name=str(row.get("gpu_name", "")),
        num_gpus=int(row.get("num_gpus") or 1),
        gpu_ram_bytes=int(ram * _MB) if ram is not None else None,
        price_per_hour_usd=_float(row.get("dph_total")) or 0.0,
        storage_cost_per_gb_month_usd=_float(row.get("storage_cost")),
    )


def _instance(row: dict[str, Any]) -> Instance:
    ports: dict[int, int] = {}
    for key, bindings in (row.get("ports") or {}).items():
        number = str(key).split("/", 1)[0]
        if number.isdigit() and isinstance(bindings, list) and bindings:
            host_port = str(bindings[0].get("HostPort", ""))
            if host_port.isdigit():
                ports[int(number)] = int(host_port)
    status = str(row.get("actual_status") or row.get("cur_state") or "")
    label = row.get("label")
    return Instance(
        id=str(row.get("id")),
        label=label.strip() if isinstance(label, str) else None,
        status=_STATUSES.get(status, InstanceStatus.OTHER),
        price_per_hour_usd=_float(row.get("dph_total")),
        started_at=_float(row.get("start_date")),
        address=(row.get("public_ipaddr") or "").strip() or None,
        ports=ports,
    )
