"""The local engine's client (docker/socket_api.py) against the Docker SDK, on the real
engine: a container created through each from the same spec is configured the same way, logs,
events, records and errors read back the same, and a local command never imports the SDK."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aitherctl.docker.engine import DockerEngine
from aitherctl.docker.listing import local_socket
from aitherctl.docker.socket_api import SocketClient
from aitherctl.engines.container import ContainerSpec, HttpCheck, Readiness
from aitherctl.errors import DockerError, DockerUnavailableError, NotFoundError
from aitherctl.profiles.profile import Engine, Volume
from tests.conftest import BASE_IMAGE, free_port

pytestmark = pytest.mark.docker


@pytest.fixture
def engines(clean_namespace: Any, namespace: str) -> Iterator[tuple[DockerEngine, DockerEngine]]:
    """(the engine as aitherctl connects to it, the same engine through the SDK)."""
    path = local_socket()
    if path is None or not isinstance(clean_namespace.client, SocketClient):
        pytest.skip(f"the engine is not a local unix socket here ({path!r})")
    import docker

    sdk = DockerEngine(docker.DockerClient(base_url=f"unix://{path}", timeout=60), namespace)
    yield clean_namespace, sdk
    sdk.close()


def spec(
    service: str,
    *,
    gpus: tuple[int, ...] = (),
    command: tuple[str, ...] = (),
    port: int | None = None,
) -> ContainerSpec:
    return ContainerSpec(
        service=service,
        engine=Engine.GENERIC,
        image=BASE_IMAGE,
        command=command or ("python3", "-m", "http.server", "8000"),
        env=(("MARK", "one two"), ("EMPTY", "")),
        container_port=8000,
        host_port=port or free_port(),
        bind="127.0.0.1",
        volumes=(Volume("/tmp", "/host-tmp", read_only=True), Volume("/var/tmp", "/scratch")),
        gpus=gpus,
        vram_bytes=None,
        ipc_host=bool(gpus),
        readiness=Readiness((HttpCheck(path="/"),), 30.0),
    )


def configuration(engine: DockerEngine, container_id: str) -> dict[str, Any]:
    attrs = engine.inspect(container_id)
    host = attrs["HostConfig"]
    config = attrs["Config"]
    return {
        "image": config["Image"],
        "cmd": config["Cmd"],
        "env": sorted(item for item in config["Env"] if not item.startswith("PATH=")),
        "labels": {k: v for k, v in config["Labels"].items() if "txn" not in k},
        "exposed": config.get("ExposedPorts"),
        "ports": host["PortBindings"],
        "binds": sorted(host["Binds"] or []),
        "devices": host.get("DeviceRequests"),
        "ipc": host["IpcMode"],
        "shm": host["ShmSize"],
        "init": host["Init"],
        "restart": host["RestartPolicy"],
    }


@pytest.mark.parametrize("gpus", [(), (0, 1)], ids=["cpu", "two-gpus"])
def test_a_container_is_created_as_the_sdk_creates_it(
    engines: tuple[DockerEngine, DockerEngine], base_image: str, gpus: tuple[int, ...]
) -> None:
    ours, sdk = engines
    port = free_port()  # created, never started: both may name the same host port
    made_by_us = ours.create(spec("a", gpus=gpus, port=port), "p", name=f"{ours.namespace}-ours")
    made_by_sdk = sdk.create(spec("a", gpus=gpus, port=port), "p", name=f"{ours.namespace}-sdk")
    mine, theirs = configuration(ours, made_by_us), configuration(sdk, made_by_sdk)
    assert mine == theirs
    assert mine["ports"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert mine["binds"] == ["/tmp:/host-tmp:ro", "/var/tmp:/scratch:rw"]
    assert ("MARK=one two" in mine["env"], mine["init"]) == (True, True)
    if gpus:
        assert mine["devices"][0]["DeviceIDs"] == ["0", "1"]
        assert mine["devices"][0]["Capabilities"] == [["gpu"]]


def test_logs_read_back_as_the_sdk_reads_them(
    engines: tuple[DockerEngine, DockerEngine], base_image: str
) -> None:
    ours, _ = engines
    script = (
        "import sys; print('out 1', flush=True); "
        "print('err 2', file=sys.stderr, flush=True); print('x' * 70000)"
    )
    container = ours.create(spec("talk", command=("python3", "-c", script)), "p")
    ours.start(container)

    # The engine's log driver copies each stream on its own, and may still be copying after the
    # container exited: wait until every line of each stream is in (bounded), then compare.
    def stream(out: bool) -> list[str]:
        data = ours.client.api.logs(container, stdout=out, stderr=not out, tail=100)
        return bytes(data).decode().splitlines()

    deadline = time.monotonic() + 30
    while (len(stream(True)), len(stream(False))) != (2, 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    _, sdk = engines
    assert ours.logs(container, tail=100) == sdk.logs(container, tail=100)
    # Each stream's lines whole (the 70,000-character one spans several reads, and several of the
    # log driver's 16 KiB partial messages). Between the streams the order is the engine's: the
    # other stream's line may even fall between a long line's partial messages, so the two
    # interleaved are not split into lines here.
    assert (stream(True), stream(False)) == (["out 1", "x" * 70000], ["err 2"])
    assert sorted(ours.logs(container, tail=100)) == sorted("out 1\nerr 2\n" + "x" * 70000 + "\n")
    assert "".join(ours.follow_logs(container, tail=2)) == sdk.logs(container, tail=2)


def test_records_and_restart_policy_read_back_through_both(
    engines: tuple[DockerEngine, DockerEngine], base_image: str
) -> None:
    ours, sdk = engines
    ours.write_record(f"{ours.namespace}-rec", {"ai.aitherctl.test": "yes"})
    assert ours.records() == sdk.records()
    assert ours.records()[f"{ours.namespace}-rec"]["ai.aitherctl.test"] == "yes"
    ours.remove_record(f"{ours.namespace}-rec")
    assert sdk.records() == {}
    container = ours.create(spec("a"), "p")
    assert ours.get(container).restart_policy in ("", "no")
    ours.set_restart_policy(container, "unless-stopped")
    assert sdk.get(container).restart_policy == "unless-stopped"
    ours.rename(container, f"{ours.namespace}-renamed")
    assert sdk.get(container).name == f"{ours.namespace}-renamed"


def test_errors_are_the_same_one_line_errors(
    engines: tuple[DockerEngine, DockerEngine], base_image: str
) -> None:
    ours, sdk = engines
    for engine in (ours, sdk):
        with pytest.raises(NotFoundError, match=r"^inspecting a container: No such container"):
            engine.inspect("aither-no-such-container")
        assert engine.image_exists("aither-test/no-such-image:1") is False
        engine.stop("aither-no-such-container")  # stopping what is gone is not an error
        engine.remove("aither-no-such-container")
    first = ours.create(spec("dup"), "p")
    assert first
    with pytest.raises(DockerError, match=r"^creating .*-dup: .*already in use"):
        ours.create(spec("dup"), "p")
    # A registry that cannot be reached (none can, here): a reason a user can act on.
    reason = ours.pull_refusal("registry.invalid/aither/none:1")
    assert reason == sdk.pull_refusal("registry.invalid/aither/none:1")
    assert reason is not None
    assert "registry.invalid" in reason
    with pytest.raises(DockerError, match=r"^pulling registry\.invalid/aither/none:1: "):
        ours.pull("registry.invalid/aither/none:1")


def test_a_missing_socket_is_a_one_line_error(tmp_path: Path, namespace: str) -> None:
    engine = DockerEngine(SocketClient(str(tmp_path / "no.sock")), namespace)
    with pytest.raises(DockerUnavailableError) as caught:
        engine.list_managed()
    assert caught.value.message.startswith("listing containers: lost the Docker engine at ")
    assert caught.value.message.endswith(": no such file or directory")


def test_events_are_read_as_the_stack_reader_reads_them(
    engines: tuple[DockerEngine, DockerEngine], base_image: str
) -> None:
    ours, sdk = engines
    since = round(time.time(), 3)
    container = ours.create(spec("a"), "p")
    ours.start(container)
    ours.stop(container, timeout=5)
    until = round(time.time(), 3) + 0.5
    time.sleep(0.6)
    filters = {"type": ["container"], "container": [container]}
    mine = list(ours.client.api.events(since=since, until=until, filters=filters, decode=True))
    theirs = list(sdk.client.api.events(since=since, until=until, filters=filters, decode=True))
    assert [e["Action"] for e in mine] == [e["Action"] for e in theirs]
    assert {"create", "start", "stop"} <= {e["Action"] for e in mine}


def test_a_local_command_never_imports_the_docker_sdk(clean_namespace: Any) -> None:
    """The SDK (with requests, urllib3 and paramiko) costs about 0.4 s to import: a local engine
    is driven without it."""
    code = (
        "import sys\n"
        "from aitherctl.docker.engine import DockerEngine\n"
        "engine = DockerEngine.connect()\n"
        "engine.list_managed(); engine.records(); engine.info()\n"
        "print(sorted(m for m in ('docker', 'requests', 'paramiko') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
