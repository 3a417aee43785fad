"""`GET /info` asked ahead (`ask_info_ahead` in docker/engine.py), on the real engine: a switch
asks for the engine's ID while its code is still loading, and the lock's key is the same as when
the engine is asked then.
"""

from __future__ import annotations

import subprocess

import pytest

from aitherctl.docker.engine import DockerEngine, ask_info_ahead, take_info
from aitherctl.docker.listing import local_socket
from aitherctl.docker.socket_api import SocketAPI

pytestmark = pytest.mark.docker


@pytest.fixture
def socket_path(docker_engine: DockerEngine) -> str:
    path = local_socket()
    if path is None:
        pytest.skip("the engine is not a local unix socket here")
    return path


def test_the_answer_asked_ahead_is_the_engines_and_is_taken_once(socket_path: str) -> None:
    ask_info_ahead()
    ask_info_ahead()  # asked once, however often a command says so
    info = take_info(socket_path)
    assert info is not None
    assert info["ID"] == SocketAPI(socket_path).info()["ID"]
    assert take_info(socket_path) is None


def test_the_engine_id_is_the_same_asked_ahead_or_not(socket_path: str, namespace: str) -> None:
    plain = DockerEngine.connect(namespace)
    ask_info_ahead()
    early = DockerEngine.connect(namespace)
    try:
        assert early.engine_id == plain.engine_id
        assert take_info(socket_path) is None  # the engine took the early answer
        docker_id = subprocess.run(
            ["docker", "info", "--format", "{{.ID}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert early.engine_id == docker_id
    finally:
        plain.close()
        early.close()


def test_an_engine_that_cannot_answer_leaves_the_error_to_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    missing = f"{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{missing}")
    ask_info_ahead()  # fails in its thread, silently
    assert take_info(missing) is None
