"""The Docker Engine API over the engine's unix socket, without the Docker SDK.

`DockerEngine` drives a local engine through this client and any other engine (tcp, ssh, a Docker
context) through the SDK. Importing the SDK costs more than a whole switch's calls (docker,
requests, urllib3, paramiko: about 0.4 s), and each SDK call adds a few milliseconds of requests'
machinery; a unix socket connects in microseconds, so every call here is one request on its own
connection (`Connection: close`, loopback_http.py), which also makes the client safe to use
from many threads at once.

`SocketAPI` has the names, arguments and results of the SDK's `APIClient` methods that
`DockerEngine` and the stack reader call, so the engine code is one path for both clients. Its
errors: `EngineAPIError` (the engine answered 4xx/5xx; `EngineNotFound` for 404) and `OSError` (the
socket: refused, missing, timed out).

Engine API calls (unversioned paths: the engine answers in its own API version, as `docker` does):
`GET /_ping`, `GET /info`, `GET /version`, `GET /containers/json`, `GET /containers/{id}/json`,
`GET /containers/{id}/top`, `GET /containers/{id}/logs` (multiplexed stream, demultiplexed here),
`POST /containers/create`, `POST /containers/{id}/start|stop|rename|update`,
`DELETE /containers/{id}`, `GET /images/{name}/json`, `GET /distribution/{name}/json`,
`POST /images/create` (pull), `POST /volumes/create`, `GET /volumes`, `DELETE /volumes/{name}`,
`GET /events`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from aitherctl.loopback_http import LoopbackResponse, connect_unix, request

TIMEOUT_S = 60.0  # as the SDK client's
PULL_TIMEOUT_S = 600.0  # between two progress lines of a pull


class EngineAPIError(Exception):
    """The engine refused a request (HTTP 4xx/5xx); `explanation` is its message."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(f"{status}: {explanation}")
        self.status = status
        self.explanation = explanation


class EngineNotFound(EngineAPIError):
    """HTTP 404: no such container, image or volume."""


class SocketAPI:
    """The subset of docker-py's `APIClient` that aitherctl uses, over a unix socket."""

    def __init__(self, socket_path: str, timeout_s: float = TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    # ---- transport ----------------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        *,
        timeout_s: float | None = None,
    ) -> LoopbackResponse:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            path = f"{path}?{urlencode(query)}"
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        sock = connect_unix(self.socket_path, self.timeout_s)
        answer = request(
            sock,
            method,
            "docker",
            path,
            body=data,
            headers=headers,
            read_timeout_s=timeout_s if timeout_s is not None else self.timeout_s,
        )
        if answer.status >= 400:
            try:
                text = answer.read()
            finally:
                answer.close()
            raise _error(answer.status, text)
        return answer

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        *,
        timeout_s: float | None = None,
    ) -> bytes:
        answer = self._open(method, path, params, body, timeout_s=timeout_s)
        try:
            return answer.read()
        finally:
            answer.close()

    def _json(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        text = self._call(method, path, params)
        return json.loads(text) if text.strip() else None

    # ---- reading ------------------------------------------------------------------------------

    def ping(self) -> bool:
        return self._call("GET", "/_ping").strip() == b"OK"

    def info(self) -> dict[str, Any]:
        return dict(self._json("GET", "/info"))

    def version(self) -> dict[str, Any]:
        return dict(self._json("GET", "/version"))

    def containers(
        self, all: bool = False, filters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        params = {"all": "1" if all else None, "filters": _filters(filters)}
        return list(self._json("GET", "/containers/json", params) or [])

    def inspect_container(self, container: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/containers/{_path(container)}/json"))

    def top(self, container: str, ps_args: str | None = None) -> dict[str, Any]:
        return dict(self._json("GET", f"/containers/{_path(container)}/top", {"ps_args": ps_args}))

    def inspect_image(self, image: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/images/{_path(image)}/json"))

    def inspect_distribution(self, image: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/distribution/{_path(image)}/json"))

    def logs(
        self,
        container: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        stream: bool = False,
        follow: bool = False,
        tail: int | str = "all",
    ) -> bytes | Iterator[bytes]:
        """The container's output, stdout and stderr interleaved as written (a container
        without a terminal sends them multiplexed: 8-byte frame headers, removed here)."""
        params = {
            "stdout": "1" if stdout else "0",
            "stderr": "1" if stderr else "0",
            "follow": "1" if follow else "0",
            "tail": str(tail),
        }
        path = f"/containers/{_path(container)}/logs"
        if not stream:
            return b"".join(self._frames(self._open("GET", path, params)))
        answer = self._open("GET", path, params, timeout_s=None if follow else self.timeout_s)
        if follow:
            answer._sock.settimeout(None)  # a followed log waits as long as the container runs
        return self._frames(answer)

    def _frames(self, answer: LoopbackResponse) -> Iterator[bytes]:
        raw = (answer.header("Content-Type") or "").startswith("application/vnd.docker.raw")
        pending = b""
        try:
            for chunk in answer._chunks():
                if raw:
                    yield chunk
                    continue
                pending += chunk
                while len(pending) >= 8:
                    size = struct.unpack(">I", pending[4:8])[0]
                    if len(pending) < 8 + size:
                        break
                    yield pending[8 : 8 + size]
                    pending = pending[8 + size :]
        finally:
            answer.close()

    def events(
        self,
        since: float | None = None,
        until: float | None = None,
        filters: Mapping[str, Any] | None = None,
        decode: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """The engine's events as dicts (the SDK's `decode=True`, the only way this is called)."""
        assert decode, "only decoded events are supported"
        params = {"since": since, "until": until, "filters": _filters(filters)}
        answer = self._open("GET", "/events", params)
        try:
            for line in answer.lines():
                if line.strip():
                    yield json.loads(line)
        finally:
            answer.close()

    def volumes(self, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(self._json("GET", "/volumes", {"filters": _filters(filters)}) or {})

    # ---- changing -----------------------------------------------------------------------------

    def create_host_config(
        self,
        *,
        port_bindings: Mapping[Any, tuple[str, int]] | None = None,
        binds: Mapping[str, Mapping[str, str]] | None = None,
        device_requests: Sequence[Mapping[str, Any]] | None = None,
        ipc_mode: str | None = None,
        shm_size: str | int | None = None,
        init: bool | None = None,
    ) -> dict[str, Any]:
        """The `HostConfig` of a create request, from the SDK's keyword names."""
        config: dict[str, Any] = {}
        if port_bindings:
            config["PortBindings"] = {
                _port_key(port): [{"HostIp": host_ip, "HostPort": str(host_port)}]
                for port, (host_ip, host_port) in port_bindings.items()
            }
        if binds:
            config["Binds"] = [
                f"{host}:{item['bind']}:{item.get('mode', 'rw')}" for host, item in binds.items()
            ]
        if device_requests:
            config["DeviceRequests"] = [
                {
                    "Driver": request.get("driver", ""),
                    "Count": request.get("count", 0),
                    "DeviceIDs": list(request.get("device_ids") or []),
                    "Capabilities": [list(c) for c in request.get("capabilities") or []],
                    "Options": dict(request.get("options") or {}),
                }
                for request in device_requests
            ]
        if ipc_mode:
            config["IpcMode"] = ipc_mode
        if shm_size is not None:
            config["ShmSize"] = _bytes(shm_size)
        if init is not None:
            config["Init"] = init
        return config

    def create_container(
        self,
        *,
        image: str,
        command: Sequence[str] | None = None,
        name: str | None = None,
        environment: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        ports: Sequence[Any] | None = None,
        host_config: Mapping[str, Any] | None = None,
        detach: bool = True,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Image": image,
            "Cmd": list(command) if command else None,
            "Env": [f"{key}={value}" for key, value in (environment or {}).items()],
            "Labels": dict(labels or {}),
            "ExposedPorts": {_port_key(port): {} for port in ports or ()},
            "HostConfig": dict(host_config or {}),
            "AttachStdin": False,
            "AttachStdout": not detach,
            "AttachStderr": not detach,
            "Tty": False,
            "OpenStdin": False,
        }
        answer = self._call("POST", "/containers/create", {"name": name}, body)
        return dict(json.loads(answer))

    def start(self, container: str) -> None:
        self._call("POST", f"/containers/{_path(container)}/start")

    def stop(self, container: str, timeout: int = 10) -> None:
        # The engine answers once the container has stopped: up to `timeout` s for the signal,
        # then the kill.
        self._call(
            "POST",
            f"/containers/{_path(container)}/stop",
            {"t": timeout},
            timeout_s=timeout + self.timeout_s,
        )

    def update_container(
        self, container: str, restart_policy: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"RestartPolicy": dict(restart_policy)} if restart_policy else {}
        return dict(self._json_post(f"/containers/{_path(container)}/update", body) or {})

    def _json_post(self, path: str, body: Any) -> Any:
        text = self._call("POST", path, None, body)
        return json.loads(text) if text.strip() else None

    def remove_container(self, container: str, force: bool = False, v: bool = False) -> None:
        params = {"force": "1" if force else "0", "v": "1" if v else "0"}
        self._call("DELETE", f"/containers/{_path(container)}", params)

    def rename(self, container: str, name: str) -> None:
        self._call("POST", f"/containers/{_path(container)}/rename", {"name": name})

    def pull(self, repository: str, tag: str | None = None) -> str:
        """Pull an image; the engine's progress lines, joined. An error the engine reports in
        the stream (after answering 200) raises like one it answers with."""
        answer = self._open(
            "POST",
            "/images/create",
            {"fromImage": repository, "tag": tag or "latest"},
            timeout_s=PULL_TIMEOUT_S,
        )
        lines = []
        try:
            for line in answer.lines():
                lines.append(line.decode("utf-8", "replace"))
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("error"):
                    raise EngineAPIError(500, str(event["error"]))
        finally:
            answer.close()
        return "\n".join(lines)

    def create_volume(self, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        body = {"Name": name, "Driver": "local", "Labels": dict(labels or {})}
        return dict(self._json_post("/volumes/create", body) or {})

    def remove_volume(self, name: str, force: bool = False) -> None:
        self._call("DELETE", f"/volumes/{_path(name)}", {"force": "1" if force else "0"})


class SocketClient:
    """What `DockerEngine` holds for a local engine: `.api` and the client-level calls the SDK's
    `DockerClient` has (`ping`, `info`, `version`, `close`)."""

    def __init__(self, socket_path: str, timeout_s: float = TIMEOUT_S) -> None:
        self.api = SocketAPI(socket_path, timeout_s)

    def ping(self) -> bool:
        return self.api.ping()

    def info(self) -> dict[str, Any]:
        return self.api.info()

    def version(self) -> dict[str, Any]:
        return self.api.version()

    def close(self) -> None:
        """Nothing stays open between requests."""


def _error(status: int, body: bytes) -> EngineAPIError:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("message"):
        explanation = str(data["message"])
    else:
        explanation = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    return (EngineNotFound if status == 404 else EngineAPIError)(status, explanation)


def _filters(filters: Mapping[str, Any] | None) -> str | None:
    """Filters as the Engine API takes them: a JSON map of lists (`{"label": ["a=b"]}`)."""
    if not filters:
        return None
    return json.dumps(
        {
            key: [value] if isinstance(value, str | bool | int) else list(value)
            for key, value in filters.items()
        }
    )


def _path(part: str) -> str:
    """A container, image or volume name inside a URL path (an image's `/` and `:` kept)."""
    return quote(part, safe="/:@")


def _port_key(port: Any) -> str:
    text = str(port)
    return text if "/" in text else f"{text}/tcp"


def _bytes(size: str | int) -> int:
    """`1g`, `512m`, `64k` or a number of bytes (docker's units, powers of 1024)."""
    if isinstance(size, int):
        return size
    text = size.strip().lower().removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
