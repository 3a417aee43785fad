"""On a real NVIDIA machine: the remote GPU reader's nvidia-smi parser against the driver.

`aitherctl.gpu.remote` runs `aitherctl.gpu.nvidia_smi.SHELL_SNIPPET` in a container on
another Docker host and parses its output. No Docker engine is needed to check the part that
depends on the driver: the very same snippet runs here under `sh -c`, and what the parser makes
of it must agree with what NVML reports in-process (the reading used for local services), with
a foreign PyTorch process holding a known amount on GPU 0.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from aitherctl.gpu.nvidia_smi import SHELL_SNIPPET, parse_inventory
from tests.gpu.conftest import HOLD_GIB

GIB = 1024**3

MIB = 1024**2


def test_the_snippet_parses_to_what_nvml_reports(foreign_process: subprocess.Popen[str]) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not installed")
    from aitherctl.gpu.nvml import NvmlReader

    run = subprocess.run(
        ["sh", "-c", SHELL_SNIPPET], capture_output=True, text=True, timeout=60, check=False
    )
    parsed = parse_inventory(run.stdout, exit_code=run.returncode)
    reader = NvmlReader()
    try:
        nvml = reader.read()
    finally:
        reader.close()

    assert parsed.error is None, parsed.error
    assert parsed.driver_version == nvml.driver_version
    assert [g.index for g in parsed.gpus] == [g.index for g in nvml.gpus]
    for ours, theirs in zip(parsed.gpus, nvml.gpus, strict=True):
        assert ours.uuid == theirs.uuid
        assert ours.name == theirs.name
        # nvidia-smi prints whole MiB; NVML gives bytes.
        assert abs(ours.memory_total_bytes - theirs.memory_total_bytes) < MIB
        assert abs(ours.memory_used_bytes - theirs.memory_used_bytes) <= 256 * MIB
        assert ours.temperature_c is not None
        assert 0 < ours.temperature_c < 120
        assert ours.power_w is not None
        assert ours.power_w > 0
        assert ours.power_limit_w is not None
        assert ours.power_limit_w >= ours.power_w
    held = {p.pid: p for p in parsed.gpus[0].processes}
    assert foreign_process.pid in held, f"not listed: {parsed.gpus[0].processes}"
    assert (held[foreign_process.pid].used_bytes or 0) >= HOLD_GIB * GIB
    assert held[foreign_process.pid].name  # pid resolvable to a name on the same host


def test_a_failing_nvidia_smi_is_one_line_not_a_reading() -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not installed")
    # An index that does not exist: nvidia-smi's own error, with its exit code.
    run = subprocess.run(
        ["nvidia-smi", "--id=99", "--query-gpu=index,name", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    parsed = parse_inventory(run.stdout + run.stderr, exit_code=run.returncode)
    assert parsed.error is not None
    assert "\n" not in parsed.error
    assert not parsed.gpus
