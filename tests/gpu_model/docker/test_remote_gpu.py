"""`read_inventory` for real on the test Docker engine (DOCKER_HOST): the probe container is
created, run and removed there, and its output read back through the Docker API.

This engine has no GPU and no NVIDIA Container Toolkit, so `nvidia-smi` comes from the contract
double image (tests/doubles/nvidia_smi_double/, built from NVIDIA's documented CSV format) and
the GPU request is left out (`request_gpus=False`). What the toolkit would add on a GPU host
(mounting the host's nvidia-smi into the container) is not exercised here; what this engine does
with a GPU request, the refusal a host without the toolkit gives, is.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from aitherctl.gpu.model import GpuProcess
from aitherctl.gpu.nvidia_smi import MIB
from aitherctl.gpu.remote import PROBE_KIND, PROBE_LABEL, read_inventory
from tests.conftest import free_port, sdk_of
from tests.doubles.nvidia_smi_image import (
    nvidia_smi_hang_image,
    nvidia_smi_image,
    nvidia_smi_no_driver_image,
)

__all__ = ["nvidia_smi_hang_image", "nvidia_smi_image", "nvidia_smi_no_driver_image"]  # fixtures


def probes(client: Any) -> set[str]:
    """Every GPU probe container on the engine, running or not."""
    found = client.containers.list(all=True, filters={"label": f"{PROBE_LABEL}={PROBE_KIND}"})
    return {container.id for container in found}


@pytest.fixture
def client(docker_engine: Any) -> Any:
    """The engine's docker SDK client; checks that the test leaves no probe container behind
    (other sessions' probes may come and go meanwhile: only new ones that stay count)."""
    sdk = sdk_of(docker_engine)
    before = probes(sdk)
    yield sdk
    assert probes(sdk) <= before, "a GPU probe container was left on the engine"


@pytest.mark.docker
def test_the_inventory_a_user_sees_on_the_remote_host(client: Any, nvidia_smi_image: str) -> None:
    inventory = read_inventory(client, nvidia_smi_image, request_gpus=False)
    assert inventory.error is None
    assert inventory.driver_version == "550.54.15"
    h100, rtx = inventory.gpus
    assert (h100.index, h100.name) == (0, "NVIDIA H100 80GB HBM3")
    assert h100.uuid == "GPU-8d3c5f1a-2b7e-4c90-9a61-3f0e7d2b4c11"
    assert (h100.memory_total_bytes, h100.memory_used_bytes) == (81559 * MIB, 0)
    # the driver's own 480 MiB is apart from used, as nvidia-smi prints it, and not free
    assert h100.memory_reserved_bytes == 480 * MIB
    assert h100.memory_free_bytes == 81079 * MIB
    assert h100.processes == ()
    assert (h100.power_w, h100.power_limit_w, h100.temperature_c) == (71.43, 700.0, 31.0)
    assert (rtx.index, rtx.name) == (1, "NVIDIA GeForce RTX 4090")
    assert (rtx.memory_total_bytes, rtx.memory_used_bytes) == (24564 * MIB, 18034 * MIB)
    assert rtx.memory_free_bytes == 6057 * MIB  # nvidia-smi's memory.free for that board
    assert rtx.utilization_pct == 87.0
    assert rtx.processes == (
        GpuProcess(pid=4242, used_bytes=12288 * MIB, name="/usr/bin/python3"),
        GpuProcess(pid=4343, used_bytes=5120 * MIB, name="/app/llama-server"),
    )


@pytest.mark.docker
def test_nvidia_smis_own_failure_is_the_hosts_one_line_error(
    client: Any, nvidia_smi_no_driver_image: str
) -> None:
    inventory = read_inventory(client, nvidia_smi_no_driver_image, request_gpus=False)
    assert inventory.gpus == ()
    assert inventory.error == (
        "no NVIDIA driver on that host (nvidia-smi: NVIDIA-SMI has failed because it couldn't "
        "communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is "
        "installed and running.)"
    )


@pytest.mark.docker
def test_a_gpu_request_on_an_engine_without_the_nvidia_toolkit(
    client: Any, nvidia_smi_image: str
) -> None:
    """This engine has no NVIDIA Container Toolkit: Docker refuses the device request at start."""
    inventory = read_inventory(client, nvidia_smi_image, request_gpus=True)
    assert inventory.gpus == ()
    assert (
        inventory.error == "no NVIDIA runtime on that engine (install the NVIDIA Container Toolkit)"
    )


@pytest.mark.docker
def test_an_image_the_host_does_not_have(client: Any) -> None:
    image = "aither-test/not-on-this-host:never"
    inventory = read_inventory(client, image, request_gpus=False)
    assert inventory.error == (
        f"image {image} not on that host (pull it there, or name an image it has)"
    )


@pytest.mark.docker
def test_a_hanging_nvidia_smi_times_out_and_its_container_goes(
    client: Any, nvidia_smi_hang_image: str
) -> None:
    started = time.monotonic()
    inventory = read_inventory(client, nvidia_smi_hang_image, request_gpus=False, timeout_s=2)
    elapsed = time.monotonic() - started
    assert inventory.error == "the GPU probe did not finish within 2 s"
    assert 2 <= elapsed < 15, elapsed  # the wait, then a forced removal of a sleeping shell


def test_an_unreachable_engine_is_an_error_not_an_exception() -> None:
    import docker

    # Nothing listens on that port; a fixed API version so the client does not ask the engine.
    sdk = docker.DockerClient(base_url=f"tcp://127.0.0.1:{free_port()}", version="1.41", timeout=5)
    try:
        inventory = read_inventory(sdk, "aither-test/base:bookworm")
    finally:
        sdk.close()
    assert inventory.gpus == ()
    assert inventory.error is not None
    assert inventory.error.startswith("Docker engine unreachable: ")
    assert "\n" not in inventory.error


@pytest.mark.parametrize(
    ("explanation", "error"),
    [
        (
            'could not select device driver "" with capabilities: [[gpu utility]]',
            "no NVIDIA runtime on that engine (install the NVIDIA Container Toolkit)",
        ),
        (
            "failed to create task for container: failed to create shim task: OCI runtime create "
            "failed: runc create failed: unable to start container process: error during "
            "container init: error running hook #0: error running hook: exit status 1, stdout: , "
            "stderr: nvidia-container-cli: initialization error: nvml error: driver not loaded: "
            "unknown",
            "the NVIDIA Container Toolkit failed on that host: nvidia-container-cli: "
            "initialization error: nvml error: driver not loaded: unknown",
        ),
        (
            "OCI runtime create failed: runc create failed: unable to start container process: "
            'exec: "sh": executable file not found in $PATH: unknown',
            "image scratch-app has no /bin/sh for the GPU probe: OCI runtime create failed: runc "
            'create failed: unable to start container process: exec: "sh": executable file not '
            "found in $PATH: unknown",
        ),
        ("conflict: something else", "the engine refused the GPU probe: conflict: something else"),
    ],
)
def test_what_an_engine_that_refuses_the_probe_says(explanation: str, error: str) -> None:
    """The lines for Docker's refusals (texts as Docker and the toolkit print them)."""
    import docker.errors

    from aitherctl.gpu.remote import _refusal

    assert _refusal(docker.errors.APIError("500", explanation=explanation), "scratch-app") == error
