"""A ComfyUI service on the real Docker engine, in a contract double of its default image.

The double (tests/doubles/comfyui_image_build/, built here from the local base image) keeps the
start contract of yanwk/comfyui-boot:cu130-slim-v2 (tests/doubles/comfyui_image.py names the
files and commit): CMD runs a script that copies the bundled ComfyUI into /root/ComfyUI when it is
missing and starts it with `--listen --port 8188 ... ${CLI_ARGS}`; a stub ComfyUI answers
/system_stats with the arguments it got. What this checks that the unit tests cannot: the Docker
adapter keeps the image's CMD (no command), passes CLI_ARGS, and the user's data survives a
recreate in named volumes while nothing anonymous is left behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aitherctl.engines.comfyui import USER_DATA
from aitherctl.engines.registry import build_container
from aitherctl.profiles.profile import Engine, Service
from aitherctl.switching.readiness import probe_plain
from tests.conftest import BASE_IMAGE, _need_image, free_port, sdk_of

pytestmark = pytest.mark.docker

DOUBLE = Path(__file__).resolve().parents[2] / "doubles" / "comfyui_image_build"
IMAGE = "aither-test/comfyui-double:latest"


@pytest.fixture
def comfy_image(clean_namespace: Any) -> Iterator[Any]:
    """The engine, with the double image built and the ComfyUI volumes this test created removed
    afterwards (volumes that were there before are left alone)."""
    engine = clean_namespace
    _need_image(engine, BASE_IMAGE)
    sdk_of(engine).images.build(path=str(DOUBLE), tag=IMAGE, pull=False, rm=True)
    names = {volume.host for volume in USER_DATA}
    before = {v.name for v in sdk_of(engine).volumes.list() if v.name in names}
    yield engine
    for item in engine.list_managed():
        engine.remove(item.id)
    for volume in sdk_of(engine).volumes.list():
        if volume.name in names - before:
            volume.remove(force=True)


def start(engine: Any, service: Service) -> str:
    spec = build_container(service, {})
    container_id: str = engine.create(spec, "comfy-test")
    engine.start(container_id)
    deadline = time.monotonic() + 30
    while True:
        result = probe_plain("127.0.0.1", service.port, spec.readiness.checks)
        if result.ok:
            return container_id
        if time.monotonic() > deadline:
            pytest.fail(f"not ready: {result.detail}\n{engine.logs(container_id)}")
        time.sleep(0.2)


def test_comfyui_starts_through_its_image_and_keeps_user_data(comfy_image: Any) -> None:
    engine = comfy_image
    port = free_port()
    service = Service(
        name="comfy",
        engine=Engine.COMFYUI,
        image=IMAGE,
        port=port,
        args=("--preview-method", "auto"),
    )
    first = start(engine, service)
    stats = httpx.get(f"http://127.0.0.1:{port}/system_stats", trust_env=False).json()
    assert stats["system"]["argv"] == [
        "--listen",
        "--port",
        "8188",
        "--enable-manager",
        "--enable-manager-legacy-ui",
        "--cpu",
        "--preview-method",
        "auto",
    ]
    assert engine.inspect(first)["Config"]["Cmd"] == ["bash", "/runner-scripts/entrypoint.sh"]

    workflow = "/root/ComfyUI/user/default/workflows/mine.json"
    container = sdk_of(engine).containers.get(first)
    code, _ = container.exec_run(
        [
            "bash",
            "-c",
            f"mkdir -p $(dirname {workflow}) && echo '{{}}' > {workflow} && "
            "echo x > /root/ComfyUI/custom_nodes/node.py && echo y > /root/ComfyUI/output/a.png",
        ]
    )
    assert code == 0
    mounts = engine.inspect(first)["Mounts"]
    assert {m["Name"] for m in mounts} == {volume.host for volume in USER_DATA}
    assert all(m["Type"] == "volume" for m in mounts)

    engine.remove(first)  # a recreate: the container goes, named volumes stay
    second = start(engine, service)
    container = sdk_of(engine).containers.get(second)
    code, out = container.exec_run(
        ["cat", workflow, "/root/ComfyUI/custom_nodes/node.py", "/root/ComfyUI/output/a.png"]
    )
    assert (code, out.decode().split()) == (0, ["{}", "x", "y"])
    # The bundle was copied again into the new container (ComfyUI itself is not in a volume),
    # and what the image ships in models/ is there without overwriting the user's files.
    code, _ = container.exec_run(
        [
            "test",
            "-f",
            "/root/ComfyUI/main.py",
            "-a",
            "-f",
            "/root/ComfyUI/models/checkpoints/put_checkpoints_here",
        ]
    )
    assert code == 0
    # Nothing anonymous: every mount of the new container is one of the named volumes.
    assert {m["Name"] for m in engine.inspect(second)["Mounts"]} == {v.host for v in USER_DATA}
