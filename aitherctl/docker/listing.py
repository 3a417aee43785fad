"""What aitherctl runs, read from the Docker Engine API over the engine's unix socket with a small
socket client (loopback_http.py), without the Docker SDK (importing it, with requests,
urllib3 and ssl, costs more than the reading; so would httpx, or http.client with its ssl and
email imports, for these few GETs).

For the commands that only need a listing (`ps`, how `run` learns which services run). Reaches the
same engine as `DockerEngine`: `DOCKER_HOST=unix://...`, else the local socket; an engine reached
over tcp or ssh, or through a Docker context, is read through the SDK instead
(`open_socket_reader` returns None).

Engine API calls (the same ones `docker ps -a`, `docker inspect` and `docker top` make):
- `GET /containers/json?all=1&filters={"label":[...]}` → the namespace's containers;
- `GET /containers/{id}/json` → `State.Status`, `State.StartedAt`, `State.ExitCode`,
  `Config.Image`, `Config.Labels`, `Created`, all inspected in one concurrent batch (the listing
  has no start time, which uptime needs);
- `GET /containers/{id}/top?ps_args=-eo pid` → host PIDs (only when a GPU service runs).
Unversioned paths: the engine answers with its own API version, as for `docker` itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines import container as c
from aitherctl.errors import DockerError, DockerUnavailableError

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT_S = 60.0  # as DockerEngine's SDK client
MAX_CONCURRENT_INSPECTS = 8


class ContainerSource(Protocol):
    """Reads aitherctl's containers in one namespace (`DockerEngine` is one; `SocketReader` the
    light one)."""

    namespace: str
    endpoint: str

    def list_managed(
        self, *, with_pids: bool = False, inspect: bool = True
    ) -> list[ManagedContainer]: ...

    def pids(self, container_id: str) -> tuple[int, ...]: ...

    def records(self) -> dict[str, dict[str, str]]: ...

    def close(self) -> None: ...


def describe_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The engine as messages name it (the same words as `DockerEngine`)."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST")
    if host:
        return host
    name = env.get("DOCKER_CONTEXT")
    if name and name != "default":
        return f"context {name}"
    return "the local Docker socket"


def local_socket(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """The unix socket the `docker` CLI would use, or None when it would use something else
    (tcp, ssh, a Docker context other than `default`): those go through the SDK.

    The order is the CLI's: `DOCKER_HOST`, then `DOCKER_CONTEXT`, then `currentContext` in
    `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), then the default socket."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST")
    if host:
        path = host.removeprefix("unix://")
        return path if host.startswith("unix://") and path.startswith("/") else None
    name = env.get("DOCKER_CONTEXT")
    if name:
        return DEFAULT_SOCKET if name == "default" else None
    folder = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else None
    if folder is None:
        folder = (home or Path.home()) / ".docker"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DEFAULT_SOCKET
    except (OSError, ValueError):
        return None  # unreadable: let the SDK decide (and report) as it always has
    current = config.get("currentContext") if isinstance(config, dict) else None
    return DEFAULT_SOCKET if current in (None, "", "default") else None


def managed_from_inspect(attrs: Mapping[str, Any], pids: tuple[int, ...] = ()) -> ManagedContainer:
    """A container as `docker inspect` reports it, read back through its labels."""
    state = attrs.get("State") or {}
    status = state.get("Status", "unknown")
    config = attrs.get("Config") or {}
    return ManagedContainer.from_labels(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        state=status,
        image=config.get("Image", ""),
        labels=config.get("Labels") or {},
        created_at=attrs.get("Created"),
        started_at=state.get("StartedAt") if status == "running" else None,
        exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        pids=pids,
        restart_policy=((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name"),
    )


def managed_from_list(item: Mapping[str, Any]) -> ManagedContainer:
    """A container as the engine's listing (`GET /containers/json`) reports it: its labels,
    name and state, without what only `inspect` has (start time, exit code, restart policy);
    the creation time to the second."""
    import time

    names = item.get("Names") or [""]
    created = item.get("Created")
    return ManagedContainer.from_labels(
        id=item["Id"],
        name=str(names[0]).lstrip("/"),
        state=item.get("State", "unknown"),
        image=item.get("Image", ""),
        labels=item.get("Labels") or {},
        created_at=(
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
            if isinstance(created, int)
            else None
        ),
    )


def pids_from_top(top: Mapping[str, Any]) -> tuple[int, ...]:
    """Host PIDs from `GET /containers/{id}/top` (`Titles`, `Processes`), as `docker top`."""
    titles = [str(title).upper() for title in top.get("Titles") or []]
    if "PID" not in titles:
        return ()
    column = titles.index("PID")
    return tuple(
        int(row[column]) for row in top.get("Processes") or [] if str(row[column]).isdigit()
    )


class SocketReader:
    """aitherctl's containers in one namespace, read over the engine's unix socket."""

    def __init__(self, socket_path: str, namespace: str, endpoint: str) -> None:
        self.socket_path = socket_path
        self.namespace = namespace
        self.endpoint = endpoint

    @classmethod
    def open(cls, socket_path: str, namespace: str, endpoint: str) -> SocketReader:
        return cls(socket_path, namespace, endpoint)

    def _request(self, path: str) -> tuple[int, bytes]:
        """One GET on its own connection (a unix socket connects in microseconds, and separate
        connections let the inspections run in parallel threads), with the small socket client
        (`http.client` would import ssl and email: more than the reading costs)."""
        from aitherctl.loopback_http import connect_unix, get

        return get(connect_unix(self.socket_path, TIMEOUT_S), "docker", path)

    def _get(self, what: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        """One Engine API call; its errors become aitherctl's, worded as `DockerEngine` words
        them. Returns None for 404 (a container removed meanwhile)."""
        from urllib.parse import urlencode

        if params:
            path = f"{path}?{urlencode(params)}"
        try:
            status, body = self._request(path)
        except (OSError, ValueError) as exc:
            raise DockerUnavailableError(
                f"cannot reach the Docker engine at {self.endpoint}: {connection_reason(exc)} "
                "(is dockerd running? set DOCKER_HOST or `docker context use`)"
            ) from None
        if status == 404:
            return None
        if status >= 400:
            raise DockerError(f"{what}: {_message(status, body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise DockerError(
                f"{what}: the engine answered with something else than JSON"
            ) from None

    def list_managed(
        self, *, with_pids: bool = False, inspect: bool = True
    ) -> list[ManagedContainer]:
        """The namespace's containers; `inspect=False`: from the listing alone (labels, name,
        state), one request instead of one more per container."""
        filters = {"label": [f"{c.LABEL_MANAGED}=true", f"{c.LABEL_NAMESPACE}={self.namespace}"]}
        found = self._get(
            "listing containers", "/containers/json", {"all": "1", "filters": json.dumps(filters)}
        )
        if not inspect:
            return [managed_from_list(item) for item in found or []]
        ids = [str(item["Id"]) for item in found or []]
        inspected = self._inspect_all(ids)
        result = []
        for attrs in inspected:
            if attrs is None:
                continue  # removed between the listing and the inspection
            pids: tuple[int, ...] = ()
            if with_pids and (attrs.get("State") or {}).get("Status") == "running":
                pids = self.pids(attrs["Id"])
            result.append(managed_from_inspect(attrs, pids))
        return result

    def _inspect_all(self, ids: list[str]) -> list[Any]:
        def inspect(container_id: str) -> Any:
            return self._get("inspecting a container", f"/containers/{container_id}/json")

        if len(ids) <= 1:
            return [inspect(item) for item in ids]
        return _in_threads(inspect, ids, MAX_CONCURRENT_INSPECTS)

    def pids(self, container_id: str) -> tuple[int, ...]:
        """Host PIDs of every process in the container, children included (`docker top`)."""
        for params in ({"ps_args": "-eo pid"}, None):
            try:
                top = self._get(
                    "listing a container's processes", f"/containers/{container_id}/top", params
                )
            except (DockerError, DockerUnavailableError):
                continue
            if top is not None:
                return pids_from_top(top)
        return ()

    def records(self) -> dict[str, dict[str, str]]:
        """This namespace's switch records (labelled volumes): name → labels."""
        filters = {"label": [f"{c.LABEL_RECORD}=true", f"{c.LABEL_NAMESPACE}={self.namespace}"]}
        found = self._get("reading switch records", "/volumes", {"filters": json.dumps(filters)})
        return {
            str(item["Name"]): dict(item.get("Labels") or {})
            for item in (found or {}).get("Volumes") or []
        }

    def close(self) -> None:
        """Nothing stays open between requests."""


def open_socket_reader(namespace: str | None = None) -> SocketReader | None:
    """The light reader when the engine is a local unix socket; None when it is reached some
    other way (tcp, ssh, a Docker context), which only `DockerEngine` (the SDK) handles."""
    path = local_socket()
    if path is None:
        return None
    namespace = namespace or os.environ.get("AITHER_NAMESPACE") or "default"
    return SocketReader.open(path, namespace, describe_endpoint())


def _message(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return f"HTTP {status}"


def connection_reason(exc: BaseException) -> str:
    """The cause of a failed connection in a few words (\"connection refused\", ...)."""
    text = str(exc)
    for marker in (
        "Connection refused",
        "No such file or directory",
        "Permission denied",
        "timed out",
        "Name or service not known",
    ):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _in_threads(call: Callable[[str], Any], items: list[str], workers: int) -> list[Any]:
    """`[call(item) for item in items]`, `workers` at a time; the first item's error (in order)
    is raised once all have ended."""
    from aitherctl.threads import in_threads

    return in_threads([partial(call, item) for item in items], workers=workers)
