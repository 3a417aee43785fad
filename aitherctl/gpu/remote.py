"""GPU readings taken on another Docker host: `nvidia-smi` in a short-lived container there.

NVML only sees the GPUs of the machine aitherctl runs on. For a service on a remote engine
(`ssh://`, `tcp://`) the VRAM check needs that host's numbers, so this runs
`aitherctl.gpu.nvidia_smi.SHELL_SNIPPET` (`nvidia-smi --query-gpu=... --format=csv,noheader,
nounits`, then `--query-compute-apps=...`) in a container on that engine and parses the output.

The container requests every GPU with the capabilities `[["gpu", "utility"]]` (a device
request, as `docker run --gpus` sends). Docker hands it to its `nvidia` device driver, which
it registers only when the NVIDIA Container Toolkit is installed (moby/moby
`daemon/devices_nvidia_linux.go` at 1d223fdd: capset `gpu`, `nvidia`, `compute`, `utility`, ...;
the selected driver capabilities become `NVIDIA_DRIVER_CAPABILITIES`); the toolkit then mounts
the host's `nvidia-smi` and NVML into the container ("utility: required for using nvidia-smi
and NVML", docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/
docker-specialized.html). So any image with `/bin/sh` serves: the entrypoint is overridden to
`sh -c`. Without the toolkit Docker refuses to start it (moby `daemon/errors.go`):
`could not select device driver "" with capabilities: [[gpu utility]]`.

`pid_mode="host"` makes the compute apps' PIDs (host PIDs, as NVML reports them) resolvable to
process names. The container carries the label `ai.aitherctl.probe=gpu`, has no network, and is
removed when the reading is done, failed or timed out.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aitherctl.docker.listing import connection_reason
from aitherctl.gpu.model import GpuInventory
from aitherctl.gpu.nvidia_smi import SHELL_SNIPPET, parse_inventory

if TYPE_CHECKING:
    import docker

PROBE_LABEL = "ai.aitherctl.probe"
PROBE_KIND = "gpu"
GPU_CAPABILITIES: list[list[str]] = [["gpu", "utility"]]
_MAX_REASON = 200


def read_inventory(
    client: docker.DockerClient,
    image: str,
    *,
    request_gpus: bool = True,
    timeout_s: float = 30.0,
) -> GpuInventory:
    """The GPUs of the host behind `client`, read by `nvidia-smi` in a container of `image` (any
    image with `/bin/sh` that is already on that host: it is never pulled). Never raises: an
    unreachable engine, a refused start, a timeout or nvidia-smi's own failure gives
    `GpuInventory(error=...)`, one line about that host. `request_gpus=False` leaves the GPU
    request out (an image that brings its own `nvidia-smi`, such as the test double)."""
    import docker.errors
    import docker.types
    import requests.exceptions

    deadline = time.monotonic() + timeout_s
    container: Any = None
    try:
        container = client.containers.create(
            image,
            command=[SHELL_SNIPPET],
            entrypoint=["sh", "-c"],
            labels={PROBE_LABEL: PROBE_KIND},
            pid_mode="host",
            network_mode="none",
            device_requests=(
                [docker.types.DeviceRequest(count=-1, capabilities=GPU_CAPABILITIES)]
                if request_gpus
                else None
            ),
        )
        container.start()
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            status = container.wait(timeout=remaining)
        except requests.exceptions.RequestException:
            if time.monotonic() >= deadline - 0.05:
                return GpuInventory(error=f"the GPU probe did not finish within {timeout_s:g} s")
            raise
        output = container.logs(stdout=True, stderr=True)
    except docker.errors.ImageNotFound:
        return GpuInventory(
            error=f"image {image} not on that host (pull it there, or name an image it has)"
        )
    except docker.errors.APIError as exc:
        return GpuInventory(error=_refusal(exc, image))
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return GpuInventory(error=f"Docker engine unreachable: {_unreachable(exc)}")
    except Exception as exc:  # never raise for a failed probe: the caller shows the reason
        return GpuInventory(error=f"GPU probe failed: {_one_line(f'{type(exc).__name__}: {exc}')}")
    finally:
        if container is not None:
            _remove(container)
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    return parse_inventory(text, exit_code=int(status.get("StatusCode", -1)))


def _remove(container: Any) -> None:
    """Force-removes the probe (it may still run after a timeout); a failure here is not the
    reading's: the label lets a later sweep find what was left."""
    try:
        container.remove(force=True, v=True)
    except Exception:
        return


def _refusal(exc: Any, image: str) -> str:
    """One line for an engine that answered but would not create or start the probe. The
    runtime's reason sits at the end of a long OCI error, so it is looked for in the whole text."""
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    text = " ".join(str(explanation or exc).split())
    if "could not select device driver" in text:
        return "no NVIDIA runtime on that engine (install the NVIDIA Container Toolkit)"
    for tool in ("nvidia-container-cli", "nvidia-container-runtime"):
        if tool in text:
            reason = _one_line(text[text.index(tool) :])
            return f"the NVIDIA Container Toolkit failed on that host: {reason}"
    if '"sh"' in text and ("executable file not found" in text or "no such file" in text):
        return f"image {image} has no /bin/sh for the GPU probe: {_one_line(text)}"
    return f"the engine refused the GPU probe: {_one_line(text)}"


def _unreachable(exc: BaseException) -> str:
    """The cause of a lost connection in a few words."""
    text = str(exc)
    if "Broken pipe" in text or "Connection aborted" in text:
        # What an ssh:// engine gives when ssh itself failed (its reason went to stderr).
        return "the connection was closed (for ssh://, try `ssh HOST docker version`)"
    return _one_line(connection_reason(exc))


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 1] + "…"


__all__ = ["GPU_CAPABILITIES", "PROBE_KIND", "PROBE_LABEL", "read_inventory"]
