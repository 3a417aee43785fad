"""The light socket reader (`ps`, `run`) against the Docker SDK adapter on the real engine: the
same containers, read back the same way, and the same one-line errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from aitherctl.docker.listing import SocketReader, local_socket, open_socket_reader
from aitherctl.errors import DockerUnavailableError
from tests.conftest import free_port, run_cli, web_service


def reader(namespace: str) -> SocketReader:
    found = open_socket_reader(namespace)
    if found is None:
        pytest.skip(f"the engine is not a local unix socket here ({local_socket()!r})")
    return found


@pytest.mark.docker
def test_socket_reader_sees_what_the_sdk_sees(
    clean_namespace,
    namespace: str,
    write_profile,
    base_image: str,  # type: ignore[no-untyped-def]
) -> None:
    write_profile("two", services={"a": web_service(free_port()), "b": web_service(free_port())})
    assert run_cli("profile", "switch", "two", "--yes").returncode == 0
    stopped = next(c for c in clean_namespace.list_managed() if c.service == "b")
    clean_namespace.stop(stopped.id)  # an exited container: its exit code, no start time
    light = reader(namespace)
    import docker

    from aitherctl.docker.engine import DockerEngine

    # The SDK itself (DockerEngine drives a local socket without it): the reference reading.
    through_sdk = DockerEngine(
        docker.DockerClient(base_url=f"unix://{light.socket_path}", timeout=60), namespace
    )
    try:
        sdk = sorted(through_sdk.list_managed(with_pids=True), key=lambda c: c.id)
        ours = sorted(light.list_managed(with_pids=True), key=lambda c: c.id)
        assert ours == sdk
        states = {c.service: (c.state, c.started_at is not None, c.exit_code) for c in ours}
        assert states["a"] == ("running", True, None)
        assert states["b"][:2] == ("exited", False)
        assert states["b"][2] is not None

        # From the listing alone (what `run` reads): the same containers, labels and states,
        # without what only `inspect` has; the same through the SDK.
        def listed(item):  # type: ignore[no-untyped-def]
            return replace(
                item,
                started_at=None,
                exit_code=None,
                pids=(),
                restart_policy=None,
                created_at=item.created_at[:19] if item.created_at else None,
            )

        for source in (light, through_sdk):
            light_rows = sorted(source.list_managed(inspect=False), key=lambda c: c.id)
            assert [
                replace(row, created_at=row.created_at[:19] if row.created_at else None)
                for row in light_rows
            ] == [listed(item) for item in sdk]
        running = next(c for c in ours if c.service == "a")
        assert running.pids
        assert light.pids(running.id) == through_sdk.pids(running.id)
        assert (light.namespace, light.endpoint) == (namespace, clean_namespace.endpoint)
    finally:
        light.close()
        through_sdk.close()


def test_a_missing_socket_is_the_same_one_line_error(tmp_path: Path) -> None:
    light = SocketReader.open(str(tmp_path / "no.sock"), "x", f"unix://{tmp_path}/no.sock")
    with pytest.raises(DockerUnavailableError) as caught:
        light.list_managed()
    assert caught.value.message == (
        f"cannot reach the Docker engine at unix://{tmp_path}/no.sock: no such file or "
        "directory (is dockerd running? set DOCKER_HOST or `docker context use`)"
    )
