"""The GPU suite runs only where NVML answers (a real NVIDIA driver and GPU); elsewhere it skips.

Run it on an NVIDIA machine with `python -m pytest tests/gpu -v`; set AITHER_GPU_ARTIFACTS to a
folder to keep the monitor's screenshot. It needs no Docker engine. The foreign process that
holds GPU memory is PyTorch's (`torch` must be importable), the stand-in for "something else on
this GPU".
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

HOLD_GIB = 4  # what the foreign process holds on GPU 0


def _nvml_error() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:
        return f"NVML unavailable: {exc}"
    return None if count else "NVML sees no GPU"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    gpu_items = [item for item in items if "tests/gpu/" in str(item.fspath).replace("\\", "/")]
    if not gpu_items:
        return
    reason = _nvml_error()
    if reason is None:
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=f"no NVIDIA GPU: {reason}"))


@pytest.fixture
def foreign_process() -> Iterator[subprocess.Popen[str]]:
    """A PyTorch process holding HOLD_GIB GiB on GPU 0 until the test ends."""
    pytest.importorskip("torch")
    code = (
        "import sys, time, torch\n"
        f"x = torch.empty({HOLD_GIB} * 1024**3, dtype=torch.uint8, device='cuda:0')\n"
        "x.fill_(1); torch.cuda.synchronize(); print('holding', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "holding", process.stderr.read() if process.stderr else line
    time.sleep(1.0)  # NVML's process list catches up
    yield process
    process.kill()
    process.wait(timeout=30)
