"""The contract-double images, built once per session on the test Docker engine, and the profile
entries that run them as services.

Three images stand in for engines that cannot run here (no CUDA, no Ollama, no ComfyUI); each
keeps its real image's start contract, so aitherctl's drivers start them unchanged:
- `aither-test/vllm-sleep-double:latest` (`vllm_sleep/`): vLLM's OpenAI server with sleep mode;
- `aither-test/ollama-double:latest` (`ollama_image/`): an Ollama server;
- `aither-test/comfyui-double:latest` (`comfyui_image_build/`): ComfyUI's image start script and
  a stub ComfyUI with `/prompt`, `/queue`, `/free`, `/system_stats`.
Each answers `GET /_double/state` (JSON: what it holds, counts, and `hazards`: what a scheduler
must never cause) and `POST /_double/reset`. The sources each follows are in their docstrings.

An image is rebuilt only when its build folder changed: the folder's content hash is stored in
the image's `aither.test.context` label and compared before building.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import sdk_of

HERE = Path(__file__).resolve().parent
BASE_IMAGE = "aither-test/base:bookworm"
CONTEXT_LABEL = "aither.test.context"

VLLM_SLEEP_IMAGE = "aither-test/vllm-sleep-double:latest"
OLLAMA_IMAGE = "aither-test/ollama-double:latest"
COMFYUI_IMAGE = "aither-test/comfyui-double:latest"
BUILD_FOLDERS = {
    VLLM_SLEEP_IMAGE: HERE / "vllm_sleep",
    OLLAMA_IMAGE: HERE / "ollama_image",
    COMFYUI_IMAGE: HERE / "comfyui_image_build",
}


def context_hash(folder: Path) -> str:
    """sha256 over the folder's files (relative path, mode bit for executables, content)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_image(client: Any, tag: str) -> str:
    """Builds `tag` from its folder unless an image with the same content hash is there.
    `client` is a docker SDK client (DockerEngine's `.client`); the base image must exist."""
    return build_if_changed(client, tag, BUILD_FOLDERS[tag])


def build_if_changed(
    client: Any, tag: str, folder: Path, buildargs: dict[str, str] | None = None
) -> str:
    """Builds `tag` from `folder` (with `buildargs`) unless an image labelled with the same
    folder hash and build arguments is there."""
    import docker.errors

    wanted = context_hash(folder)
    if buildargs:
        wanted += ":" + ",".join(f"{k}={v}" for k, v in sorted(buildargs.items()))
    try:
        labels = client.images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        labels = {}
    if labels.get(CONTEXT_LABEL) != wanted:
        client.images.build(
            path=str(folder),
            tag=tag,
            pull=False,
            rm=True,
            buildargs=buildargs or {},
            labels={CONTEXT_LABEL: wanted},
        )
    return tag


def image_fixture(tag: str, ensure: Callable[[Any, str], str] = ensure_image) -> Any:
    """A session fixture that builds `tag` (on the base image) with `ensure` and returns it."""

    @pytest.fixture(scope="session")
    def built(docker_engine: Any) -> str:
        from tests.conftest import _need_image

        _need_image(docker_engine, BASE_IMAGE)
        return ensure(sdk_of(docker_engine), tag)

    return built


vllm_sleep_image = image_fixture(VLLM_SLEEP_IMAGE)
ollama_double_image = image_fixture(OLLAMA_IMAGE)
comfyui_double_image = image_fixture(COMFYUI_IMAGE)


# -- profile entries ------------------------------------------------------------------------
def vllm_sleep_service(
    port: int,
    *,
    model: str = "double/smollm2",
    served_name: str | None = None,
    sleep_mode: bool = True,
    dev_mode: bool = True,
    token_delay_s: float = 0.02,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    **extra: object,
) -> dict[str, object]:
    """A profile service running the vLLM double: `engine: vllm`, its image, the model, and
    `--enable-sleep-mode` / `VLLM_SERVER_DEV_MODE=1`, the two switches real vLLM needs before
    `/sleep` frees anything (`sleep_mode=False` / `dev_mode=False` to test their absence).
    `DOUBLE_*` environment variables tune the double (see its docstring)."""
    # HF_HUB_OFFLINE=1: the double has its model, as a vLLM whose cache holds it (a switch, `up`
    # and serve's start then ask no Hub for `double/smollm2`).
    environment = {"DOUBLE_TOKEN_DELAY_S": str(token_delay_s), "HF_HUB_OFFLINE": "1"}
    if dev_mode:
        environment["VLLM_SERVER_DEV_MODE"] = "1"
    environment.update(env or {})
    service: dict[str, object] = {
        "engine": "vllm",
        "image": VLLM_SLEEP_IMAGE,
        "port": port,
        "model": model,
        "args": [*(["--enable-sleep-mode"] if sleep_mode else []), *args],
        "env": environment,
        **extra,
    }
    if served_name:
        service["served_name"] = served_name
    return service


def ollama_service(
    port: int,
    *,
    keep_alive: str | None = None,
    models: str | None = None,
    env: dict[str, str] | None = None,
    **extra: object,
) -> dict[str, object]:
    """A profile service running the Ollama double (`engine: ollama`; it listens on the port the
    driver puts in OLLAMA_HOST). `models` sets OLLAMA_DOUBLE_MODELS (`name=bytes,...`)."""
    environment = dict(env or {})
    if models is not None:
        environment["OLLAMA_DOUBLE_MODELS"] = models
    service: dict[str, object] = {
        "engine": "ollama",
        "image": OLLAMA_IMAGE,
        "port": port,
        "env": environment,
        **extra,
    }
    if keep_alive is not None:
        service["keep_alive"] = keep_alive
    return service


def comfyui_service(port: int, **extra: object) -> dict[str, object]:
    """A profile service running the ComfyUI double (`engine: comfyui`, CPU: `--cpu`)."""
    return {"engine": "comfyui", "image": COMFYUI_IMAGE, "port": port, **extra}


def double_state(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """`GET /_double/state` of the double published on `port`."""
    response = httpx.get(f"http://{host}:{port}/_double/state", trust_env=False, timeout=5)
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def hazards(state: dict[str, Any]) -> dict[str, int]:
    """The hazards a double recorded, those with a count above zero (`{}` when none)."""
    return {name: count for name, count in state.get("hazards", {}).items() if count}


__all__ = [
    "COMFYUI_IMAGE",
    "OLLAMA_IMAGE",
    "VLLM_SLEEP_IMAGE",
    "comfyui_double_image",
    "comfyui_service",
    "context_hash",
    "double_state",
    "ensure_image",
    "hazards",
    "ollama_double_image",
    "ollama_service",
    "vllm_sleep_image",
    "vllm_sleep_service",
]
