"""Which engine the light reader may read over a unix socket, in the `docker` CLI's order:
DOCKER_HOST, then DOCKER_CONTEXT, then `currentContext` in the CLI's config.json (docs:
"docker context" and "Use the Docker command line: configuration files"). Anything else (tcp,
ssh, a named context) is left to the Docker SDK (None)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aitherctl.docker.listing import DEFAULT_SOCKET, local_socket


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("unix:///tmp/aither-dockerd/docker.sock", "/tmp/aither-dockerd/docker.sock"),
        ("unix:///var/run/docker.sock", "/var/run/docker.sock"),
        ("tcp://127.0.0.1:2376", None),
        ("ssh://me@build-box", None),
        ("npipe:////./pipe/docker_engine", None),
        ("unix://relative.sock", None),
    ],
)
def test_docker_host_wins(tmp_path: Path, host: str, expected: str | None) -> None:
    environ = {"DOCKER_HOST": host, "DOCKER_CONTEXT": "remote"}
    assert local_socket(environ, home=tmp_path) == expected


def test_docker_context_default_is_the_local_socket_and_any_other_is_the_sdks(
    tmp_path: Path,
) -> None:
    assert local_socket({"DOCKER_CONTEXT": "default"}, home=tmp_path) == DEFAULT_SOCKET
    assert local_socket({"DOCKER_CONTEXT": "remote"}, home=tmp_path) is None


def test_current_context_from_the_cli_config(tmp_path: Path) -> None:
    config = tmp_path / ".docker" / "config.json"
    assert local_socket({}, home=tmp_path) == DEFAULT_SOCKET  # no config at all
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {}}))
    assert local_socket({}, home=tmp_path) == DEFAULT_SOCKET
    config.write_text(json.dumps({"currentContext": "default"}))
    assert local_socket({}, home=tmp_path) == DEFAULT_SOCKET
    config.write_text(json.dumps({"currentContext": "rootless"}))
    assert local_socket({}, home=tmp_path) is None
    config.write_text("{not json")
    assert local_socket({}, home=tmp_path) is None  # let the SDK report it


def test_docker_config_folder_overrides_home(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"currentContext": "remote"}))
    assert local_socket({"DOCKER_CONFIG": str(folder)}, home=tmp_path) is None


def test_a_missing_context_names_itself_and_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Docker config names a context that does not exist: the error says which one and how
    to go back (it used to say "Docker context None does not exist")."""
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.errors import DockerUnavailableError

    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gone-box"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    with pytest.raises(DockerUnavailableError) as caught:
        DockerEngine.connect()
    message = caught.value.message
    assert "'gone-box' (from the Docker config) does not exist" in message
    assert "docker context use default" in message
    assert "None" not in message
