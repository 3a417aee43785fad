"""A machine without the NVIDIA driver (this one): the NVML reader says so as pynvml would, and
without importing pynvml, which costs every `ps`, `status` and switch 25-50 ms here."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest


def _driver_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(_driver_present(), reason="this machine has the NVIDIA driver")

READ = """
import sys
from aitherctl.gpu.nvml import NvmlReader
print(NvmlReader().read().error)
print("pynvml" in sys.modules)
"""


def test_no_driver_is_said_as_pynvml_says_it_without_importing_pynvml() -> None:
    import pynvml

    with pytest.raises(pynvml.NVMLError) as raised:
        pynvml.nvmlInit()
    done = subprocess.run(
        [sys.executable, "-c", READ], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines() == [f"no NVIDIA driver ({raised.value})", "False"]
