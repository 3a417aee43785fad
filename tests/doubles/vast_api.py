"""Contract double of Vast.ai's REST API, for machines that cannot reach the marketplace.

Built from the official `vastai` SDK 1.9.1's source (facts only): the routes, fields and auth it
uses (`vastai/api/client.py`, `offers.py`, `instances.py`, `billing.py`), and checked against
the SDK itself by tests/nodes/test_vast_sdk_contract.py (the SDK, pointed here by `VAST_URL`,
makes each of these calls):

- `Authorization: Bearer KEY`; a wrong key answers 401 `{"success": false, "error":
  "auth_error", "msg": ...}`.
- `POST /api/v0/bundles/`: the filter document (`{"gpu_name": {"eq": ...}, "num_gpus": {"eq": n},
  "gpu_ram": {"gte": MB}, "dph_total": {"lte": $}, "order": [["dph_total", "asc"]], "type":
  "on-demand", "allocated_storage": GB, "limit": n, "rented": {"eq": false}, ...}`) →
  `{"offers": [{"id", "ask_contract_id", "gpu_name", "num_gpus", "gpu_ram", "dph_base",
  "storage_cost", "dph_total", "score", ...}]}`; `dph_total` is the bundle's hourly price with
  the asked storage (`dph_base + storage_cost * allocated_storage / 720`, storage priced per
  GB-month). Every filter is `{field: {op: value}}` with the SDK's operators (`eq`, `neq`, `gt`,
  `gte`, `lt`, `lte`, `in`, `notin`: `vastai/api/query.py`'s `parse_query`); a query string's
  numbers arrive as TEXT (`"num_gpus=1"` → `{"eq": "1"}`; only fields with a multiplier, such
  as `gpu_ram` (times 1000), become numbers), so the double compares them as numbers, as the service
  must. A filter on a field the double's rows do not carry passes. `order` is a list of
  `[field, "asc" | "desc"]` (the SDK's default is `[["score", "desc"]]`); an unknown operator or
  a value that is not a number where one is needed → 400.
- `PUT /api/v0/asks/{id}/` (`{client_id, image, env, price, disk, label, runtype, args}`) →
  `{"success": true, "new_contract": ID}`; an offer already rented or unknown, a bid (`price`)
  under the offer's `min_bid`, or no credit → 400 `{"success": false, "error": ..., "msg":
  ...}` (the SDK's callers read `success`, `error` and `msg`; the wording is the double's).
- `GET /api/v0/instances/{id}/?owner=me` → `{"instances": ROW}` (`null` once destroyed); ROW:
  `id`, `label`, `actual_status` (`loading` while it boots, then `running`), `dph_total`,
  `start_date`, `public_ipaddr`, `ports` (`{"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort":
  "41234"}]}`, published for each `-p N:N` key of `env`), `extra_env` (pairs), `image_uuid`.
- `GET /api/v1/instances/?select_filters=...&order_by=...&limit=25[&after_token=T]` →
  `{"instances": [...], "next_token": T | null, "total_instances": n}`.
- `DELETE /api/v0/instances/{id}/` → `{"success": true}`; unknown → 404.
- `GET /api/v0/users/current` → `{"id", "email", "credit", "api_key", ...}` (the service
  echoes the key: the SDK's `show_user` pops `api_key` before handing the user back).
- Any route answers 429 with `Retry-After: retry_after_s` while `rate_limited` is above zero
  (one per request), and 503 while `down`. The SDK retries a 429 (and 502-504) itself, waiting
  `Retry-After`, up to its `retry` count (3), then raises `requests.HTTPError`; every other
  error status is raised at once through `raise_for_status`, and its CLI prints the body's `msg`.
- `calls` records each request as the service sees it (method, path, query, body and the
  Authorization header), for the tests that compare what the SDK and our adapter send.

When an instance is created the double starts, after `boot_delay_s`, a REAL container on this
machine's test Docker engine from the asked image and arguments (the llama.cpp test image with
SmolLM2 mounted at /models), publishing the engine's port on 127.0.0.1, so the node really
answers; destroy removes it. Charges accrue per second from `start_date` at `dph_total`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class VastOffer:
    id: int
    gpu_name: str
    dph_base: float  # $/h for the GPUs
    num_gpus: int = 1
    gpu_ram_mb: float = 24_000
    storage_cost: float = 0.10  # $ per GB-month
    min_bid: float = 0.05
    rented: bool = False
    score: float = 100.0  # Vast's ranking of the offer; the SDK's default order, descending

    def row(self, storage_gb: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "ask_contract_id": self.id,
            "gpu_name": self.gpu_name,
            "num_gpus": self.num_gpus,
            "gpu_ram": self.gpu_ram_mb,
            "dph_base": self.dph_base,
            "storage_cost": self.storage_cost,
            "dph_total": self.dph_total(storage_gb),
            "min_bid": self.min_bid,
            "score": self.score,
            "rentable": not self.rented,
            "rented": self.rented,
            "verified": True,
            "external": False,
        }

    def dph_total(self, storage_gb: float) -> float:
        return self.dph_base + self.storage_cost * storage_gb / 720.0


@dataclass
class VastInstance:
    id: int
    offer: VastOffer
    label: str | None
    image: str
    args: list[str]
    env: dict[str, str]
    disk: float
    dph_total: float
    start_date: float
    status: str = "loading"
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    container_id: str | None = None
    ended: float | None = None

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "actual_status": self.status,
            "intended_status": "running",
            "cur_state": "running" if self.status == "running" else "loading",
            "dph_total": self.dph_total,
            "start_date": self.start_date,
            "public_ipaddr": "127.0.0.1",
            "ports": self.ports,
            "extra_env": [[k, v] for k, v in self.env.items() if not k.startswith("-")],
            "image_uuid": self.image,
            "gpu_name": self.offer.gpu_name,
            "num_gpus": self.offer.num_gpus,
            "disk_space": self.disk,
        }


@dataclass(frozen=True)
class VastCall:
    """One request as the service received it."""

    method: str
    path: str  # without the query
    query: dict[str, Any]  # each value JSON-decoded where it is JSON (the SDK encodes them so)
    body: Any
    authorization: str | None


@dataclass
class VastState:
    api_key: str = "test-vast-key"
    credit: float = 25.0
    boot_delay_s: float = 0.5
    rate_limited: int = 0  # answer this many next requests with 429
    retry_after_s: str = "1"  # the 429's Retry-After header
    down: bool = False
    offers: dict[int, VastOffer] = field(default_factory=dict)
    instances: dict[int, VastInstance] = field(default_factory=dict)
    destroyed: list[VastInstance] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    calls: list[VastCall] = field(default_factory=list)
    # Where created instances really run: a Docker client of the test engine (None: no
    # container, the instance only changes state), the models folder and a namespace label.
    docker: Any = None
    models_dir: str | None = None
    namespace: str = "default"
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 7_000_001
    timers: list[threading.Timer] = field(default_factory=list)
    # Set when an instance has been created; while `hold_create` is set and not released, the
    # answer to the create call waits (a test kills the caller between the two).
    created: threading.Event = field(default_factory=threading.Event)
    hold_create: threading.Event | None = None

    def charges_usd(self, now: float | None = None) -> float:
        """What the account has been charged: every instance, per second at its `dph_total`."""
        now = time.time() if now is None else now
        total = 0.0
        for inst in [*self.instances.values(), *self.destroyed]:
            end = inst.ended if inst.ended is not None else now
            total += inst.dph_total * max(end - inst.start_date, 0.0) / 3600.0
        return total


class _BadQuery(ValueError):
    pass


def _as_field(value: Any, want: Any) -> Any:
    """`want` as the field's own type: the SDK sends a query string's numbers as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return want
    if isinstance(want, str):
        try:
            return float(want)
        except ValueError:
            raise _BadQuery(f"{want!r} is not a number") from None
    return want


def _filter_ok(value: Any, condition: dict[str, Any]) -> bool:
    for op, asked in condition.items():
        if op in ("in", "notin"):
            if not isinstance(asked, list):
                raise _BadQuery(f"{op} needs a list")
            found = value in [_as_field(value, w) for w in asked]
            if found != (op == "in"):
                return False
            continue
        want = _as_field(value, asked)
        if op in ("eq", "neq"):
            if (value == want) != (op == "eq"):
                return False
            continue
        if op not in ("gt", "gte", "lt", "lte"):
            raise _BadQuery(f"unknown operator {op!r}")
        if value is None or want is None:
            return False
        try:
            ok = {
                "gt": value > want,
                "gte": value >= want,
                "lt": value < want,
                "lte": value <= want,
            }[op]
        except TypeError:
            raise _BadQuery(f"{want!r} cannot be compared with {value!r}") from None
        if not ok:
            return False
    return True


def _search(offers: list[dict[str, Any]], q: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that pass every filter of `q`, in `q["order"]`, at most `q["limit"]`."""
    rows = [
        row
        for row in offers
        if all(
            _filter_ok(row[name], condition)
            for name, condition in q.items()
            if isinstance(condition, dict) and name in row
        )
    ]
    order = q.get("order") or [["score", "desc"]]
    for name, direction in reversed(order):  # stable sorts, the last key first
        present = [row for row in rows if row.get(name) is not None]
        missing = [row for row in rows if row.get(name) is None]
        present.sort(key=lambda row: row[name], reverse=direction == "desc")
        rows = present + missing
    return rows[: int(q.get("limit") or 64)]


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _boot(state: VastState, inst: VastInstance) -> None:
    """The machine pulled the image and starts the container: a real one on the test engine."""
    with state.lock:
        if inst.id not in state.instances:
            return  # destroyed while booting
    ports = [key.split()[1].split(":")[-1] for key in inst.env if key.startswith("-p ")]
    mapped: dict[str, list[dict[str, str]]] = {}
    if state.docker is not None:
        container = state.docker.containers.run(
            inst.image,
            command=inst.args,
            detach=True,
            name=f"aither-{state.namespace}-vast-{inst.id}",
            labels={"ai.aitherctl.namespace": state.namespace, "vast.double": str(inst.id)},
            ports={f"{port}/tcp": ("127.0.0.1", None) for port in ports},
            volumes={state.models_dir: {"bind": "/models", "mode": "ro"}}
            if state.models_dir
            else None,
            environment={k: v for k, v in inst.env.items() if not k.startswith("-")},
        )
        container.reload()
        published = container.attrs["NetworkSettings"]["Ports"] or {}
        for port in ports:
            bindings = published.get(f"{port}/tcp") or []
            if bindings:
                mapped[f"{port}/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": bindings[0]["HostPort"]}]
        inst.container_id = container.id
    with state.lock:
        if inst.id not in state.instances:  # destroyed meanwhile: take the container away
            _remove(state, inst)
            return
        inst.ports = mapped
        inst.status = "running"


def _remove(state: VastState, inst: VastInstance) -> None:
    if state.docker is not None and inst.container_id is not None:
        with contextlib.suppress(Exception):  # already gone
            state.docker.containers.get(inst.container_id).remove(force=True)


def _handler(state: VastState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else None

        def handle_any(self, method: str) -> None:
            body = self.body()
            parts = urlsplit(self.path)
            path = parts.path
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            state.requests.append((method, self.path, body))
            state.calls.append(
                VastCall(
                    method,
                    path,
                    {k: _json_or_text(v) for k, v in query.items()},
                    body,
                    self.headers.get("Authorization"),
                )
            )
            if state.down:
                self.answer(503, {"success": False, "error": "unavailable", "msg": "maintenance"})
                return
            if state.rate_limited > 0:
                state.rate_limited -= 1
                self.answer(
                    429,
                    {"success": False, "error": "rate_limited", "msg": "slow down"},
                    {"Retry-After": state.retry_after_s},
                )
                return
            if self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self.answer(401, {"success": False, "error": "auth_error", "msg": "bad key"})
                return
            segments = [s for s in path.split("/") if s]
            with state.lock:
                try:
                    status, answer = self.route(method, segments, query, body)
                except _BadQuery as exc:
                    status, answer = (
                        400,
                        {"success": False, "error": "invalid_args", "msg": str(exc)},
                    )
            if isinstance(answer, dict) and answer.get("new_contract") is not None:
                state.created.set()
                if state.hold_create is not None:
                    state.hold_create.wait(timeout=120)
            self.answer(status, answer)

        def route(
            self, method: str, seg: list[str], query: dict[str, str], body: Any
        ) -> tuple[int, Any]:
            if method == "POST" and seg == ["api", "v0", "bundles"]:
                q = body or {}
                storage = float(q.get("allocated_storage", 5.0))
                rows = _search([offer.row(storage) for offer in state.offers.values()], q)
                return 200, {"offers": rows}
            if method == "PUT" and len(seg) == 4 and seg[:3] == ["api", "v0", "asks"]:
                return self.create(int(seg[3]), body or {})
            if seg[:3] == ["api", "v0", "instances"] and len(seg) == 4:
                inst = state.instances.get(int(seg[3]))
                if method == "GET":
                    return 200, {"instances": inst.row() if inst else None}
                if method == "DELETE":
                    if inst is None:
                        return 404, {"success": False, "error": "no_such_instance", "msg": ""}
                    del state.instances[inst.id]
                    inst.ended = time.time()
                    state.destroyed.append(inst)
                    inst.offer.rented = False
                    _remove(state, inst)
                    return 200, {"success": True}
            if method == "GET" and seg == ["api", "v1", "instances"]:
                limit = int(query.get("limit", "25"))
                after = int(query.get("after_token", "0") or 0)
                rows = [i.row() for i in sorted(state.instances.values(), key=lambda i: i.id)]
                rows = [row for row in rows if row["id"] > after]
                page = rows[:limit]
                more = len(rows) > limit
                return 200, {
                    "instances": page,
                    "next_token": str(page[-1]["id"]) if more else None,
                    "total_instances": len(state.instances),
                }
            if method == "GET" and seg == ["api", "v0", "users", "current"]:
                return 200, {
                    "id": 1,
                    "email": "double@example.invalid",
                    "credit": state.credit,
                    "api_key": state.api_key,
                }
            return 404, {"success": False, "error": "not_found", "msg": self.path}

        def create(self, offer_id: int, body: dict[str, Any]) -> tuple[int, Any]:
            offer = state.offers.get(offer_id)
            if offer is None or offer.rented:
                return 400, {
                    "success": False,
                    "error": "no_such_ask",
                    "msg": f"offer {offer_id} is no longer available",
                }
            price = body.get("price")
            if price is not None and price < offer.min_bid:
                return 400, {
                    "success": False,
                    "error": "insufficient_bid",
                    "msg": f"bid {price} is below the minimum {offer.min_bid}",
                }
            if state.credit <= 0:
                return 400, {"success": False, "error": "insufficient_credit", "msg": "no credit"}
            disk = float(body.get("disk", 10))
            inst = VastInstance(
                id=state.next_id,
                offer=offer,
                label=body.get("label"),
                image=str(body.get("image")),
                args=list(body.get("args") or []),
                env=dict(body.get("env") or {}),
                disk=disk,
                dph_total=offer.dph_total(disk),
                start_date=time.time(),
            )
            state.next_id += 1
            offer.rented = True
            state.instances[inst.id] = inst
            timer = threading.Timer(state.boot_delay_s, _boot, (state, inst))
            timer.daemon = True
            state.timers.append(timer)
            timer.start()
            return 200, {"success": True, "new_contract": inst.id}

        def do_GET(self) -> None:
            self.handle_any("GET")

        def do_POST(self) -> None:
            self.handle_any("POST")

        def do_PUT(self) -> None:
            self.handle_any("PUT")

        def do_DELETE(self) -> None:
            self.handle_any("DELETE")

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller killed while its request was answered (the kill -9 tests): a broken pipe,
        # not a failure of the double; socketserver would print it on stderr.
        del request, client_address


@contextmanager
def serve_vast(state: VastState) -> Iterator[str]:
    """Run the double on a free loopback port; yields its base URL (for `VAST_URL`). At the
    end every container it started is removed."""
    server = _QuietServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        for timer in state.timers:
            timer.cancel()
            if timer.is_alive():
                timer.join()
        for inst in [*state.instances.values(), *state.destroyed]:
            _remove(state, inst)


def standard_offers() -> dict[int, VastOffer]:
    """Three asks, as the articles price them: a 3090 at about $0.15/h, a 4090 at $0.20/h; Vast's
    score ranks them otherwise than their price (the SDK's default order is the score)."""
    return {
        101: VastOffer(101, "RTX 3090", dph_base=0.15, gpu_ram_mb=24_576, score=180.0),
        102: VastOffer(102, "RTX 3090", dph_base=0.22, gpu_ram_mb=24_576, score=210.0),
        201: VastOffer(201, "RTX 4090", dph_base=0.20, gpu_ram_mb=24_564, score=320.0),
    }
