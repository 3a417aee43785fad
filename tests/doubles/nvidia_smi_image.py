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

from tests.doubles.images import HERE, build_if_changed, image_fixture

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
    return build_if_changed(client, tag, FOLDER, {"NVIDIA_SMI_DOUBLE_FAIL": _FAILURES[tag]})


nvidia_smi_image = image_fixture(NVIDIA_SMI_IMAGE, ensure_nvidia_smi_image)
nvidia_smi_no_driver_image = image_fixture(NVIDIA_SMI_NO_DRIVER_IMAGE, ensure_nvidia_smi_image)
nvidia_smi_hang_image = image_fixture(NVIDIA_SMI_HANG_IMAGE, ensure_nvidia_smi_image)

__all__ = [
    "NVIDIA_SMI_HANG_IMAGE",
    "NVIDIA_SMI_IMAGE",
    "NVIDIA_SMI_NO_DRIVER_IMAGE",
    "ensure_nvidia_smi_image",
    "nvidia_smi_hang_image",
    "nvidia_smi_image",
    "nvidia_smi_no_driver_image",
]
