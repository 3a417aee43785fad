"""The ComfyUI container aitherctl builds, against what its default image's entrypoint reads.

Uses the contract double `tests/doubles/comfyui_image.py`, which follows
YanWenKun/ComfyUI-Docker `cu130-slim-v2/Dockerfile` and `cu130-slim-v2/runner-scripts/entrypoint.sh`
at commit 987122a37f7213731463f3c790532800dd15ce6f, and ComfyUI's comfy/cli_args.py and
comfy/model_management.py for what the flags mean.
"""

from __future__ import annotations

import pytest

from aitherctl.engines.comfyui import IMAGE
from aitherctl.engines.container import ContainerSpec
from aitherctl.engines.registry import build_container, driver_for
from aitherctl.profiles.profile import Engine, Service, Volume
from aitherctl.units import GIB, MemoryAmount
from tests.doubles import comfyui_image
from tests.doubles.comfyui_image import ImageContractError, Started

GPUS = {0: 24 * GIB}


def comfy(**fields: object) -> Service:
    base: dict[str, object] = {
        "name": "comfy",
        "engine": Engine.COMFYUI,
        "image": IMAGE,
        "port": 8188,
    }
    return Service(**{**base, **fields})  # type: ignore[arg-type]


def run(spec: ContainerSpec) -> Started:
    """Docker's view of the spec (the adapter sends `command or None`) through the image."""
    return comfyui_image.start(
        list(spec.command) or None, spec.env, [volume.container for volume in spec.volumes]
    )


def test_the_default_image_is_the_one_the_double_describes() -> None:
    assert driver_for(Engine.COMFYUI).default_image(uses_gpu=True) == IMAGE
    assert IMAGE.startswith("yanwk/comfyui-boot:cu130-slim-v2-")


def test_a_gpu_service_starts_comfyui_with_its_reserve() -> None:
    beside = Service(
        name="chat",
        engine=Engine.VLLM,
        image="v",
        port=8000,
        model="m",
        gpus=(0,),
        vram=MemoryAmount.parse("8GiB"),
    )
    spec = build_container(comfy(gpus=(0,), vram=MemoryAmount.parse("10GiB")), GPUS, [beside])
    started = run(spec)
    assert started.argv[:2] == ("python3.13", "./ComfyUI/main.py")
    assert started.options.listen == "0.0.0.0,::"  # reachable through the published port
    assert started.options.port == spec.container_port == 8188
    # model_management.py: EXTRA_RESERVED_VRAM = reserve_vram * 1024**3; ComfyUI then holds at
    # most free - reserve = (24 - 8) - 6 = 10 GiB, its budget.
    assert started.options.reserve_vram * GIB == 6 * GIB
    assert not started.options.cpu
    assert started.anonymous_volumes == ()


def test_a_cpu_service_on_another_container_port() -> None:
    spec = build_container(comfy(container_port=8190, args=("--preview-method", "auto")), {})
    started = run(spec)
    assert started.options.cpu
    assert started.options.port == 8190 == spec.container_port
    assert started.options.preview_method == "auto"


def test_the_old_way_of_passing_flags_does_not_start_comfyui() -> None:
    # What aitherctl did before: the flags as the container's command, which replaces the CMD.
    with pytest.raises(ImageContractError, match="instead of the entrypoint script"):
        comfyui_image.start(["--listen", "0.0.0.0", "--port", "8188"], [], [])


def test_user_data_survives_a_recreate_and_comfyui_itself_does_not() -> None:
    spec = build_container(comfy(gpus=(0,), vram=MemoryAmount.parse("50%")), GPUS)
    mounts = {volume.container: volume.host for volume in spec.volumes}
    assert set(comfyui_image.MUST_PERSIST) <= comfyui_image.persisted(mounts)
    assert set(mounts) <= set(comfyui_image.USER_DATA_PATHS)
    run(spec)  # no volume on /root or /root/ComfyUI: a new image tag brings its own ComfyUI


def test_a_volume_on_root_would_pin_the_first_comfyui() -> None:
    spec = build_container(comfy(volumes=(Volume("/srv/comfy", "/root"),)), {})
    with pytest.raises(ImageContractError, match="keeps the first ComfyUI"):
        run(spec)


def test_arguments_bash_would_split_or_expand_are_refused_before_docker() -> None:
    with pytest.raises(ImageContractError):
        comfyui_image.start(None, [("CLI_ARGS", "--output-directory /data/*")], [])
    from aitherctl.errors import RefusedError

    with pytest.raises(RefusedError, match="CLI_ARGS"):
        build_container(comfy(args=("--output-directory", "/data/*")), {})
