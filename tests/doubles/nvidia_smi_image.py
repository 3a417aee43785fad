"""The nvidia-smi contract-double images (`nvidia_smi_double/`), built on the test Docker engine.

`nvidia_smi_double/nvidia-smi` answers `--query-gpu=` / `--query-compute-apps=` in the CSV
format NVIDIA documents, for two fake GPUs; see its header for the sources and the numbers.
Three tags are built from that one folder:
- `NVIDIA_SMI_IMAGE`: the machine answers;
- `NVIDIA_SMI_NO_DRIVER_IMAGE`: every call fails as nvidia-smi does on a host without a driver;
- `NVIDIA_SMI_HANG_IMAGE`: every call hangs (a wedged GPU), for timeouts.
All are rebuilt only when the folder changed, through the same content-hash label as the other
doubles (`tests/doubles/images.py`), kept out of that file's table so it stays unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.doubles.images import BASE_IMAGE, CONTEXT_LABEL, HERE, context_hash

NVIDIA_SMI_IMAGE = "aither-test/nvidia-smi-double:latest"
NVIDIA_SMI_NO_DRIVER_IMAGE = "aither-test/nvidia-smi-double:no-driver"
NVIDIA_SMI_HANG_IMAGE = "aither-test/nvidia-smi-double:hang"
FOLDER = HERE / "nvidia_smi_double"
_FAILURES = {
    NVIDIA_SMI_IMAGE: "",
    NVIDIA_SMI_NO_DRIVER_IMAGE: "driver",
    NVIDIA_SMI_HANG_IMAGE: "hang",
}


def ensure_nvidia_smi_image(client: Any, tag: str) -> str:
    """Builds `tag` unless an image with the same folder hash and failure mode is there.
    `client` is a docker SDK client; the base image must exist."""
    import docker.errors

    failure = _FAILURES[tag]
    wanted = f"{context_hash(FOLDER)}:{failure}"
    try:
        labels = client.images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        labels = {}
    if labels.get(CONTEXT_LABEL) != wanted:
        client.images.build(
            path=str(FOLDER),
            tag=tag,
            pull=False,
            rm=True,
            buildargs={"NVIDIA_SMI_DOUBLE_FAIL": failure},
            labels={CONTEXT_LABEL: wanted},
        )
    return tag


def _fixture(tag: str) -> Any:
    @pytest.fixture(scope="session")
    def built(docker_engine: Any) -> str:
        from tests.conftest import _need_image

        _need_image(docker_engine, BASE_IMAGE)
        return ensure_nvidia_smi_image(docker_engine.client, tag)

    return built


nvidia_smi_image = _fixture(NVIDIA_SMI_IMAGE)
nvidia_smi_no_driver_image = _fixture(NVIDIA_SMI_NO_DRIVER_IMAGE)
nvidia_smi_hang_image = _fixture(NVIDIA_SMI_HANG_IMAGE)

__all__ = [
    "NVIDIA_SMI_HANG_IMAGE",
    "NVIDIA_SMI_IMAGE",
    "NVIDIA_SMI_NO_DRIVER_IMAGE",
    "ensure_nvidia_smi_image",
    "nvidia_smi_hang_image",
    "nvidia_smi_image",
    "nvidia_smi_no_driver_image",
]
