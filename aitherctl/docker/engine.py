"""The Docker engine, through the Docker SDK for Python.

Reaches the engine the way the `docker` CLI does: `DOCKER_HOST` (unix, tcp or ssh), else the
context named by `DOCKER_CONTEXT` or by `currentContext` in ~/.docker/config.json, else the local
socket. Nothing here assumes the engine is on this machine except `pids()`, whose PIDs are only
meaningful (for matching NVML's host PIDs) when it is.
Every docker/requests exception becomes `DockerUnavailableError` (cannot connect) or
`DockerError` (the engine refused), with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aitherctl.docker.listing import (
    connection_reason as _reason,
)
from aitherctl.docker.listing import (
    local_socket,
    managed_from_inspect,
    managed_from_list,
    pids_from_top,
)
from aitherctl.docker.socket_api import EngineAPIError, EngineNotFound, SocketAPI, SocketClient
from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines import container as c
from aitherctl.engines.container import ContainerSpec, container_name
from aitherctl.errors import DockerError, DockerUnavailableError, NotFoundError

if TYPE_CHECKING:
    import docker
    import docker.tls

T = TypeVar("T")
STOP_TIMEOUT_S = 20


def describe_endpoint() -> str:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host
    name = os.environ.get("DOCKER_CONTEXT")
    if name and name != "default":
        return f"context {name}"
    return "the local Docker socket"


def _client() -> Any:
    """The engine's client: the small socket client (docker/socket_api.py) for a local
    unix socket, which is how almost every workstation reaches its engine; the SDK otherwise."""
    path = local_socket()
    if path is not None:
        return SocketClient(path)
    import docker

    host = os.environ.get("DOCKER_HOST")
    if host:
        if host.startswith("ssh://"):
            return client_for(host)
        return docker.from_env(timeout=60)
    from docker.context.config import get_current_context_name

    name = os.environ.get("DOCKER_CONTEXT") or get_current_context_name()
    return _context_client(name)


def _context_client(name: str) -> docker.DockerClient:
    import docker
    from docker.context import ContextAPI

    context = ContextAPI.get_context(name)
    if context is None:
        where = "DOCKER_CONTEXT" if os.environ.get("DOCKER_CONTEXT") else "the Docker config"
        raise DockerUnavailableError(
            f"Docker context {name!r} (from {where}) does not exist: `docker context ls` lists "
            "them; `docker context use default` goes back to the local engine"
        )
    if context.Name == "default" or not context.Host:
        return docker.from_env(timeout=60)
    if context.Host.startswith("ssh://"):
        return client_for(context.Host)
    return docker.DockerClient(base_url=context.Host, tls=context.TLSConfig or False, timeout=60)


def client_for(endpoint: str) -> docker.DockerClient:
    """A client for one engine: `ssh://user@box[:port]` through the system `ssh` (so
    ~/.ssh/config, keys and agents apply, as with the docker CLI; kept-alive connections over one
    multiplexed SSH connection per host, ssh's own output captured: `docker/ssh_transport.py`),
    `tcp://` with TLS when certificates are in DOCKER_CERT_PATH or ~/.docker (ca.pem, cert.pem,
    key.pem), `unix://`, or the name of a Docker context."""
    import docker
    import requests.exceptions

    if endpoint.startswith("ssh://"):
        from aitherctl.docker.ssh_transport import docker_client

        try:
            return docker_client(endpoint, timeout=60)
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            ValueError,
        ) as exc:
            raise DockerUnavailableError(f"cannot use {endpoint}: {_reason(exc)}") from None
    if endpoint.startswith("tcp://"):
        return docker.DockerClient(base_url=endpoint, tls=_tls_config(endpoint), timeout=60)
    if "://" in endpoint:
        return docker.DockerClient(base_url=endpoint, timeout=60)
    return _context_client(endpoint)


def _tls_config(endpoint: str) -> docker.tls.TLSConfig | bool:
    """The docker CLI's convention: certificates in DOCKER_CERT_PATH (else ~/.docker); TLS
    when they are there or DOCKER_TLS_VERIFY is set (port 2376 is the TLS port)."""
    from pathlib import Path

    import docker.tls

    folder = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    ca, cert, key = (folder / name for name in ("ca.pem", "cert.pem", "key.pem"))
    wanted = bool(os.environ.get("DOCKER_TLS_VERIFY")) or endpoint.endswith(":2376")
    if not cert.is_file() or not key.is_file():
        if wanted:
            raise DockerUnavailableError(
                f"{endpoint} needs TLS client certificates: put ca.pem, cert.pem and key.pem in "
                f"{folder} (or set DOCKER_CERT_PATH)"
            )
        return False
    return docker.tls.TLSConfig(
        client_cert=(str(cert), str(key)),
        ca_cert=str(ca) if ca.is_file() else None,
        verify=str(ca) if ca.is_file() else False,
    )


class DockerEngine:
    """aitherctl's containers in one namespace on one Docker engine."""

    def __init__(
        self,
        client: Any,
        namespace: str = "default",
        *,
        host: str = "local",
        endpoint: str | None = None,
        address: str | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.endpoint = endpoint or describe_endpoint()
        # The profile's name for this engine (`local`: DOCKER_HOST or the context), and where
        # this machine reaches what it publishes (None: worked out from the endpoint).
        self.host = host
        self.address = address
        self._engine_id: str | None = None

    @property
    def engine_id(self) -> str:
        """The engine's own ID (`docker info` → `ID`): the same however its endpoint is spelled.
        Falls back to the endpoint on engines that report none."""
        if self._engine_id is None:
            info = None
            if isinstance(self.client, SocketClient):  # asked ahead by a switch (below)
                info = take_info(self.client.api.socket_path)
            if info is None:
                info = self.info()
            self._engine_id = str(info.get("ID") or info.get("Name") or self.endpoint)
        return self._engine_id

    @classmethod
    def connect(cls, namespace: str | None = None) -> DockerEngine:
        namespace = namespace or os.environ.get("AITHER_NAMESPACE") or "default"
        try:
            client = _client()
            client.ping()
        except DockerUnavailableError:
            raise
        except Exception as exc:
            raise DockerUnavailableError(
                f"cannot reach the Docker engine at {describe_endpoint()}: {_reason(exc)} "
                "(is dockerd running? set DOCKER_HOST or `docker context use`)"
            ) from None
        return cls(client, namespace)

    @classmethod
    def connect_host(
        cls, host: str, endpoint: str, address: str | None, namespace: str | None = None
    ) -> DockerEngine:
        """The engine of one of a profile's hosts; DockerUnavailableError names the host."""
        namespace = namespace or os.environ.get("AITHER_NAMESPACE") or "default"
        try:
            client = client_for(endpoint)
            client.ping()
        except DockerUnavailableError as exc:
            raise DockerUnavailableError(f"host {host!r}: {exc.message}") from None
        except Exception as exc:
            raise DockerUnavailableError(
                f"host {host!r}: cannot reach its Docker engine at {endpoint}: {_reason(exc)}",
                host=host,
                changed=False,
            ) from None
        return cls(client, namespace, host=host, endpoint=endpoint, address=address)

    def call(self, what: str, action: Callable[[], T]) -> T:
        """Run one SDK call; its errors become aitherctl's (`what` names it in the message)."""
        try:
            return action()
        except Exception as exc:
            kind = _kind(exc)
            if kind is None:
                raise
            if kind == "not found":
                raise NotFoundError(f"{what}: {_explanation(exc)}") from None
            if kind == "refused":
                raise DockerError(f"{what}: {_explanation(exc)}") from None
            remote = self.host != "local"
            where = f"host {self.host!r}: " if remote else ""
            raise DockerUnavailableError(
                f"{where}{what}: lost the Docker engine at {self.endpoint}: {_reason(exc)}",
                host=self.host if remote else None,
            ) from None

    # ---- reading ----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return self.call("docker info", self.client.info)

    def version(self) -> dict[str, Any]:
        return self.call("docker version", self.client.version)

    def list_managed(
        self, *, with_pids: bool = False, inspect: bool = True
    ) -> list[ManagedContainer]:
        """The namespace's containers; `inspect=False`: from the listing alone (labels, name,
        state: `listing.managed_from_list`)."""
        filters = {"label": [f"{c.LABEL_MANAGED}=true", f"{c.LABEL_NAMESPACE}={self.namespace}"]}
        found = self.call(
            "listing containers", lambda: self.client.api.containers(all=True, filters=filters)
        )
        if not inspect:
            return [managed_from_list(item) for item in found]
        result = []
        for item in found:
            try:
                attrs = self.inspect(item["Id"])
            except NotFoundError:
                continue  # removed since the listing (another switch's rollback or commit)
            result.append(self._to_managed(attrs, with_pids=with_pids))
        return result

    def _to_managed(self, attrs: dict[str, Any], *, with_pids: bool) -> ManagedContainer:
        running = (attrs.get("State") or {}).get("Status") == "running"
        pids = self.pids(attrs["Id"]) if with_pids and running else ()
        return managed_from_inspect(attrs, pids)

    def inspect(self, container_id: str) -> dict[str, Any]:
        return self.call(
            "inspecting a container", lambda: self.client.api.inspect_container(container_id)
        )

    def get(self, container_id: str) -> ManagedContainer:
        attrs = self.call(
            "inspecting a container", lambda: self.client.api.inspect_container(container_id)
        )
        return self._to_managed(attrs, with_pids=False)

    def pids(self, container_id: str) -> tuple[int, ...]:
        """Host PIDs of every process in the container, children included (`docker top`)."""
        try:
            top = self.client.api.top(container_id, ps_args="-eo pid")
        except Exception:
            try:
                top = self.client.api.top(container_id)
            except Exception:
                return ()
        return pids_from_top(top)

    def published_ports(self) -> dict[tuple[str, int], str]:
        """(host IP, host port) → container name, for every running container on the engine."""
        found = self.call("listing containers", self.client.api.containers)
        ports: dict[tuple[str, int], str] = {}
        for item in found:
            name = (item.get("Names") or ["?"])[0].lstrip("/")
            for port in item.get("Ports") or []:
                if port.get("PublicPort"):
                    ports[(port.get("IP") or "0.0.0.0", int(port["PublicPort"]))] = name
        return ports

    def image_exists(self, image: str) -> bool:
        try:
            self.call(f"checking image {image}", lambda: self.client.api.inspect_image(image))
        except NotFoundError:
            return False
        return True

    def pull_refusal(self, image: str) -> str | None:
        """Why `image` could not be pulled, or None when its registry has it, asked without
        pulling: `GET /distribution/NAME/json`, as `docker buildx imagetools inspect NAME` asks
        (the registry's manifest; a machine without a registry fails at once on the name
        lookup)."""
        try:
            self.client.api.inspect_distribution(image)
        except Exception as exc:
            kind = _kind(exc)
            if kind in ("not found", "refused"):
                return _pull_reason(_explanation(exc))
            if kind == "lost":
                raise DockerUnavailableError(f"lost the Docker engine: {_reason(exc)}") from None
            raise
        return None

    def pull(self, image: str) -> None:
        repository, _, tag = (
            image.rpartition(":") if ":" in image.rsplit("/", maxsplit=1)[-1] else (image, "", "")
        )
        self.call(f"pulling {image}", lambda: self.client.api.pull(repository, tag=tag or "latest"))

    def logs(self, container_id: str, tail: int = 100) -> str:
        data = self.call(
            "reading logs",
            lambda: self.client.api.logs(container_id, stdout=True, stderr=True, tail=tail),
        )
        return str(data.decode("utf-8", "replace"))

    def follow_logs(self, container_id: str, tail: int = 100) -> Iterator[str]:
        stream = self.call(
            "reading logs",
            lambda: self.client.api.logs(
                container_id, stdout=True, stderr=True, stream=True, follow=True, tail=tail
            ),
        )
        for chunk in stream:
            yield chunk.decode("utf-8", "replace")

    def runtimes(self) -> list[str]:
        return sorted((self.info().get("Runtimes") or {}).keys())

    # ---- changing ---------------------------------------------------------------------------

    def create(
        self,
        spec: ContainerSpec,
        profile: str,
        *,
        name: str | None = None,
        txn: str | None = None,
    ) -> str:
        name = name or container_name(self.namespace, spec.service)
        binds: dict[str, Mapping[str, str]] = {
            volume.host: {"bind": volume.container, "mode": "ro" if volume.read_only else "rw"}
            for volume in spec.volumes
        }
        host_config = self.client.api.create_host_config(
            port_bindings={spec.container_port: (spec.bind, spec.host_port)},
            binds=binds or None,
            device_requests=[  # the SDK's DeviceRequest keywords; both clients take them
                {"device_ids": [str(index) for index in spec.gpus], "capabilities": [["gpu"]]}
            ]
            if spec.gpus
            else None,
            ipc_mode="host" if spec.ipc_host else None,
            shm_size=None if spec.ipc_host else "1g",
            # An init process forwards SIGTERM, so a server stops in a second, not after the
            # stop timeout (a server that runs as PID 1 has no default signal handlers).
            init=True,
        )
        created = self.call(
            f"creating {name}",
            lambda: self.client.api.create_container(
                image=spec.image,
                command=list(spec.command) or None,
                name=name,
                environment=_environment(spec),
                labels=spec.labels(self.namespace, profile, txn),
                ports=[spec.container_port],
                host_config=host_config,
                detach=True,
            ),
        )
        return str(created["Id"])

    def start(self, container_id: str) -> None:
        self.call("starting a container", lambda: self.client.api.start(container_id))

    def set_restart_policy(self, container_id: str, policy: str) -> None:
        """Docker's restart policy: `no`, `on-failure`, `always` or `unless-stopped`."""
        self.call(
            "setting the restart policy",
            lambda: self.client.api.update_container(
                container_id,
                restart_policy={"Name": policy},
            ),
        )

    def stop(self, container_id: str, timeout: int = STOP_TIMEOUT_S) -> None:
        with contextlib.suppress(NotFoundError):
            self.call(
                "stopping a container", lambda: self.client.api.stop(container_id, timeout=timeout)
            )

    def remove(self, container_id: str) -> None:
        """Remove the container and its anonymous volumes (named volumes stay)."""
        with contextlib.suppress(NotFoundError):
            self.call(
                "removing a container",
                lambda: self.client.api.remove_container(container_id, force=True, v=True),
            )

    # ---- records: small labelled volumes that hold a switch's intent on the engine ------------

    def write_record(self, name: str, labels: Mapping[str, str]) -> None:
        """Create the empty volume `name` carrying `labels`. It lives with the engine, so every
        user of the engine sees it, and it survives a reboot like the containers do."""
        full = {
            c.LABEL_MANAGED: "true",
            c.LABEL_NAMESPACE: self.namespace,
            c.LABEL_RECORD: "true",
            **labels,
        }
        self.call(
            "writing the switch record",
            lambda: self.client.api.create_volume(name=name, labels=full),
        )

    def records(self) -> dict[str, dict[str, str]]:
        """This namespace's records: volume name → labels."""
        filters = {
            "label": [
                f"{c.LABEL_RECORD}=true",
                f"{c.LABEL_NAMESPACE}={self.namespace}",
            ]
        }
        found = self.call(
            "reading switch records", lambda: self.client.api.volumes(filters=filters)
        )
        return {
            str(item["Name"]): dict(item.get("Labels") or {})
            for item in (found or {}).get("Volumes") or []
        }

    def remove_record(self, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            self.call(
                "removing the switch record",
                lambda: self.client.api.remove_volume(name, force=True),
            )

    # ---- named volumes that hold models ----------------------------------------------------

    def volume_folder(self, name: str, *, create: bool = True) -> str:
        """The folder on the engine's machine that holds the named volume `name`
        (`docker volume inspect` → `Mountpoint`). `create`: made empty when missing, as the
        first `docker run -v name:/path` would make it; else `NotFoundError`."""
        if create:
            info = self.call(
                f"creating volume {name}", lambda: self.client.api.create_volume(name=name)
            )
        else:
            info = self.call(f"volume {name}", lambda: self.client.api.inspect_volume(name))
        return str(info["Mountpoint"])

    def rename(self, container_id: str, name: str) -> None:
        self.call("renaming a container", lambda: self.client.api.rename(container_id, name))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _environment(spec: ContainerSpec) -> dict[str, str]:
    """The container's variables, with the API key read from this machine's environment."""
    env = dict(spec.env)
    if spec.key_env is not None:
        inside, here = spec.key_env
        value = os.environ.get(here)
        if not value:
            raise DockerError(f"service {spec.service!r} needs its API key in ${here}: set it")
        env[inside] = value
    return env


def _pull_reason(text: str) -> str:
    """The engine's answer, shortened to what a user acts on: `Get "https://ghcr.io/v2/": dial
    tcp: lookup ghcr.io on 10.0.0.53:53: no such host` → `ghcr.io cannot be reached: no such
    host`."""
    import re

    found = re.search(r'Get "https?://([^/"]+)/v2/[^"]*": (?:.*: )?([^:]+)$', text)
    if found:
        return f"{found[1]} cannot be reached: {found[2].strip()}"
    return text


def _kind(exc: BaseException) -> str | None:
    """What a client's exception means: `not found` (HTTP 404), `refused` (the engine answered
    with an error), `lost` (no answer: the connection failed), or None (not the client's: a
    bug, raised as it is). The SDK's exceptions are only looked at when the SDK is in use."""
    if isinstance(exc, EngineNotFound):
        return "not found"
    if isinstance(exc, EngineAPIError):
        return "refused"
    if "docker" in sys.modules:
        import docker.errors
        import requests.exceptions

        if isinstance(exc, docker.errors.NotFound):
            return "not found"
        if isinstance(exc, docker.errors.APIError):
            return "refused"
        if isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException):
            return "lost"
    if isinstance(exc, OSError | ValueError):  # the socket client: refused, reset, timed out
        return "lost"
    return None


def _explanation(exc: Any) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    text = str(explanation or exc)
    if "could not select device driver" in text and "gpu" in text:
        return text + " (install the NVIDIA Container Toolkit: nvidia-ctk runtime configure)"
    if "port is already allocated" in text or "address already in use" in text:
        return text + " (another program holds that port: change the service's `port`)"
    return text


# ---- `GET /info` asked for before it is needed ---------------------------------------------------
# A switch takes its lock on the engine's own ID (`docker info` → `ID`), and dockerd builds its
# whole `/info` answer (storage, plugins, runtimes, counts) to give it: 10-16 ms on a small machine.
# `ask_info_ahead()` sends that request from a thread as soon as a command knows it will switch, so
# the engine answers while the command is still importing the rest of its code; `engine_id` then
# takes the answer instead of asking again. Only for the local unix socket, whose client opens one
# connection per request and so is safe to use from another thread. A request that fails is
# forgotten: the engine's own request then reports the failure as it always has.

_asked: dict[str, tuple[threading.Thread, list[dict[str, Any]]]] = {}
_asked_lock = threading.Lock()


def ask_info_ahead() -> None:
    """Ask the local engine (the socket the `docker` CLI would use) for `/info` in a thread; no-op
    when it has been asked already or the engine is not reached over a local socket."""
    path = local_socket()
    if path is None:
        return
    with _asked_lock:
        if path in _asked:
            return
        answer: list[dict[str, Any]] = []

        def read() -> None:
            try:
                answer.append(SocketAPI(path).info())
            except Exception:  # the engine's own request reports it (above)
                return

        thread = threading.Thread(target=read, name="docker-info", daemon=True)
        _asked[path] = (thread, answer)
    thread.start()


def take_info(socket_path: str) -> dict[str, Any] | None:
    """The answer `ask_info_ahead()` asked the engine at `socket_path` for, once it has come (None
    when it was not asked or failed). Each answer is taken once."""
    with _asked_lock:
        asked = _asked.pop(socket_path, None)
    if asked is None:
        return None
    thread, answer = asked
    while thread.is_alive():  # in slices: a signal the OS gives that thread still stops this one
        thread.join(0.05)
    return answer[0] if answer else None
