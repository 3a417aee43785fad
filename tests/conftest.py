"""Shared fixtures.

Integration tests run against a real Docker engine and real servers built by
`scripts/test-env.sh` (no registry needed). On a machine without them those tests skip; with
`AITHER_REQUIRE_INTEGRATION=1` (set by .ci/run) a missing engine or image fails the run instead,
so CI can never pass by skipping.

Every test session works in its own namespace (`AITHER_NAMESPACE`), so parallel sessions on one
engine never touch each other's containers, and removes its containers at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE = os.environ.get("AITHER_REQUIRE_INTEGRATION") == "1"
LLAMA_IMAGE = "aither-test/llamacpp:latest"
BASE_IMAGE = "aither-test/base:bookworm"
VLLM_IMAGE = "aither-test/vllm-cpu:latest"
MODELS_DIR = os.environ.get("AITHER_TEST_MODELS", "/var/cache/aitherctl-test/models")
MODEL_FILE = os.environ.get("AITHER_TEST_MODEL_FILE", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"integration prerequisite missing: {reason}")
    pytest.skip(reason)


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one this session already handed out (the kernel may give
    the same ephemeral port to two quick calls once the first socket is closed)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


@pytest.fixture(scope="session")
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:8]


# The built-in `cpu` profile mounts the user's own model folder, where scripts/quickstart.sh
# puts SmolLM2: on a machine that ran the quickstart, `models` lists that file too. It is the
# machine's, not a test's.
USERS_MODELS = os.path.expanduser("~/.local/share/aitherctl/models")


def not_the_users(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A `models --json` listing without what lies in the user's own model folder."""
    return [m for m in models if not str(m.get("path") or "").startswith(USERS_MODELS + "/")]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, namespace: str) -> None:
    """No test reads the developer's own profiles, state, locks or ledger."""
    monkeypatch.setenv("AITHER_NAMESPACE", namespace)
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AITHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AITHER_PROFILE_DIR", str(tmp_path / "profiles"))
    monkeypatch.setenv("AITHER_MACHINE_DIR", str(tmp_path / "machine"))
    monkeypatch.delenv("AITHER_GPU_PROFILE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def write_profile(profile_dir: Path) -> Callable[..., Path]:
    """write(name, "yaml text") or write(name, services={...}, **top_level_keys)."""

    def write(name: str, text: str | None = None, **document: object) -> Path:
        import yaml

        path = profile_dir / f"{name}.yaml"
        if text is None:
            text = yaml.safe_dump(document, sort_keys=False)
        else:
            text = textwrap.dedent(text).lstrip()
        path.write_text(text)
        return path

    return write


@pytest.fixture(scope="session")
def docker_engine(namespace: str) -> Iterator[object]:
    """A DockerEngine on the real engine, in this session's namespace; cleans up at the end."""
    from aitherctl.docker.engine import DockerEngine
    from aitherctl.errors import DockerUnavailableError

    try:
        engine = DockerEngine.connect(namespace)
    except DockerUnavailableError as exc:
        _unavailable(f"no Docker engine: {exc.message}")
        return
    yield engine
    _empty(engine)
    engine.close()


def sdk_of(engine: Any) -> Any:
    """The Docker SDK's client for `engine`, for a test's own set-up (kill, exec, build an image,
    read stats): aitherctl drives a local unix socket with its own small client
    (docker/socket_api.py), which has only the calls aitherctl makes."""
    from aitherctl.docker.socket_api import SocketClient

    if not isinstance(engine.client, SocketClient):
        return engine.client
    path = engine.client.api.socket_path
    if path not in _SDK_CLIENTS:
        import docker

        _SDK_CLIENTS[path] = docker.DockerClient(base_url=f"unix://{path}", timeout=60)
    return _SDK_CLIENTS[path]


_SDK_CLIENTS: dict[str, Any] = {}


def _empty(engine: object) -> None:
    """Remove the namespace's containers and switch records."""
    for item in engine.list_managed():  # type: ignore[attr-defined]
        engine.remove(item.id)  # type: ignore[attr-defined]
    for name in engine.records():  # type: ignore[attr-defined]
        engine.remove_record(name)  # type: ignore[attr-defined]


@pytest.fixture
def clean_namespace(docker_engine: object) -> Iterator[object]:
    """The engine, with this namespace emptied before and after the test."""
    _empty(docker_engine)
    yield docker_engine
    _empty(docker_engine)


def _need_image(engine: object, image: str) -> None:
    if not engine.image_exists(image):  # type: ignore[attr-defined]
        _unavailable(f"image {image} missing: run `bash scripts/test-env.sh`")


@pytest.fixture
def llama_image(docker_engine: object) -> str:
    _need_image(docker_engine, LLAMA_IMAGE)
    if not Path(MODELS_DIR, MODEL_FILE).is_file():
        _unavailable(f"model {MODEL_FILE} missing in {MODELS_DIR}: run `bash scripts/test-env.sh`")
    return LLAMA_IMAGE


@pytest.fixture
def base_image(docker_engine: object) -> str:
    _need_image(docker_engine, BASE_IMAGE)
    return BASE_IMAGE


def llama_service(port: int, *, pinned: bool = False, **extra: object) -> dict[str, object]:
    """A real llama.cpp service with SmolLM2 on the CPU."""
    return {
        "engine": "llamacpp",
        "image": LLAMA_IMAGE,
        "model": f"/models/{MODEL_FILE}",
        "served_name": "smollm2",
        "port": port,
        "gpu": "none",
        "pinned": pinned,
        "args": ["--ctx-size", "1024", "--threads", "1"],
        "volumes": {MODELS_DIR: "/models:ro"},
        "health": {"timeout": 120},
        **extra,
    }


def web_service(
    port: int, *, text: str = "", health: str = "/", timeout: int = 30, pinned: bool = False
) -> dict[str, object]:
    """A tiny real HTTP server (python3 -m http.server) in the base image."""
    service: dict[str, object] = {
        "engine": "generic",
        "image": BASE_IMAGE,
        "port": port,
        "gpu": "none",
        "pinned": pinned,
        "args": ["python3", "-m", "http.server", str(port)],
        "health": {"path": health, "timeout": timeout},
    }
    if text:
        service["env"] = {"MARK": text}
    return service


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real `aitherctl` in a separate process (as a user or a script would)."""
    return subprocess.run(
        [sys.executable, "-m", "aitherctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def vast_state():  # type: ignore[no-untyped-def]
    """The Vast.ai contract double's state (tests/doubles/vast_api.py): three offers, no boot
    delay."""
    from tests.doubles.vast_api import VastState, standard_offers

    return VastState(offers=standard_offers(), boot_delay_s=0.0)


@pytest.fixture
def vast_url(vast_state, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The double served on loopback, with VAST_URL and VAST_API_KEY pointing the CLI at it."""
    from tests.doubles.vast_api import serve_vast

    with serve_vast(vast_state) as url:
        monkeypatch.setenv("VAST_URL", url)
        monkeypatch.setenv("VAST_API_KEY", vast_state.api_key)
        yield url
