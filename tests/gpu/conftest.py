"""The GPU suite runs only where NVML answers (a real NVIDIA driver and GPU); elsewhere it skips.

Run it on an NVIDIA machine with `python -m pytest tests/gpu -v`; set AITHER_GPU_ARTIFACTS to a
folder to keep the monitor's screenshot. It needs no Docker engine. The foreign process that
holds GPU memory is PyTorch's (`torch` must be importable), the stand-in for "something else on
this GPU".
"""

from __future__ import annotations

import pytest


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
