"""On a real NVIDIA machine: aitherctl's GPU readings and VRAM arithmetic against the driver.

- `aitherctl gpu --json` agrees with `nvidia-smi --query-gpu` and `--query-compute-apps`.
- A foreign process that allocates a known amount (PyTorch) shows up in the planner as memory
  held outside aitherctl, and a plan that no longer fits beside it is refused.
- The monitor's GPU panel renders the real readings (screenshot saved when
  AITHER_GPU_ARTIFACTS names a folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.conftest import HOLD_GIB

GIB = 1024**3


def smi(query: str, kind: str = "gpu") -> list[list[str]]:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not installed")
    flag = "--query-gpu" if kind == "gpu" else "--query-compute-apps"
    text = subprocess.run(
        ["nvidia-smi", f"{flag}={query}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [[cell.strip() for cell in line.split(",")] for line in text.splitlines() if line]


def aitherctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aitherctl", *args], capture_output=True, text=True, check=False
    )


def test_gpu_json_matches_nvidia_smi() -> None:
    result = aitherctl("gpu", "--json")
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)["gpus"]
    theirs = smi("index,name,memory.total,memory.used")
    assert [gpu["index"] for gpu in ours] == [int(row[0]) for row in theirs]
    for gpu, row in zip(ours, theirs, strict=True):
        assert gpu["name"] == row[1]
        # nvidia-smi prints MiB; NVML gives bytes.
        assert abs(gpu["memory_total_bytes"] / 1024**2 - int(row[2])) <= 1
        assert abs(gpu["memory_used_bytes"] / 1024**2 - int(row[3])) <= 256  # moves meanwhile


def test_compute_apps_match_nvidia_smi(foreign_process: subprocess.Popen[str]) -> None:
    result = aitherctl("gpu", "--json")
    ours = {
        proc["pid"]: proc["used_bytes"]
        for gpu in json.loads(result.stdout)["gpus"]
        for proc in gpu["processes"]
    }
    theirs = {int(row[0]): int(row[1]) for row in smi("pid,used_memory", kind="apps")}
    assert foreign_process.pid in theirs, "nvidia-smi does not list the foreign process"
    assert foreign_process.pid in ours
    assert abs(ours[foreign_process.pid] / 1024**2 - theirs[foreign_process.pid]) <= 1
    assert ours[foreign_process.pid] >= HOLD_GIB * GIB


def test_planner_counts_a_foreign_process_and_refuses_what_no_longer_fits(
    foreign_process: subprocess.Popen[str], tmp_path: Path
) -> None:
    from aitherctl.gpu.nvml import NvmlReader
    from aitherctl.gpu.vram import GpuClaim, check_vram, describe_vram
    from aitherctl.units import MemoryAmount

    reader = NvmlReader()
    inventory = reader.read()
    reader.close()
    gpu = inventory.by_index(0)
    assert gpu is not None
    total = gpu.memory_total_bytes
    reserve = MemoryAmount.parse("1GiB")
    # What fits without the foreign process, minus half of what it holds: fits before, not now.
    room = total - reserve.resolve(total) - HOLD_GIB * GIB // 2
    check = check_vram([GpuClaim("big", (0,), ((0, room),))], inventory, reserve)
    assert check.gpus[0].others_bytes >= HOLD_GIB * GIB
    assert not check.fits
    lines = describe_vram(check)
    assert any(f"pid {foreign_process.pid}" in line for line in lines)

    # The same through the CLI: a profile asking for that much is refused with the arithmetic.
    (tmp_path / "big.yaml").write_text(
        "services:\n"
        "  big:\n"
        "    engine: vllm\n"
        "    model: some/model\n"
        "    port: 18000\n"
        "    gpu: 0\n"
        f"    vram: {room // 1024**2}MiB\n"
        "gpu:\n  reserve: 1GiB\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aitherctl",
            "--profile-dir",
            str(tmp_path),
            "profile",
            "plan",
            "big",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 5, result.stderr
    assert f"pid {foreign_process.pid}" in result.stderr


def test_monitor_gpu_panel_renders_the_real_readings(tmp_path: Path) -> None:
    import asyncio

    from aitherctl.gpu.nvml import NvmlReader
    from aitherctl.tui.app import build_monitor_app

    reader = NvmlReader()
    reader_name = reader.read().gpus[0].name
    reader.close()

    async def run() -> str:
        app = build_monitor_app(interval_s=0.5, use_docker=False)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(2.0)
            folder = Path(os.environ.get("AITHER_GPU_ARTIFACTS", tmp_path))
            folder.mkdir(parents=True, exist_ok=True)
            app.save_screenshot(str(folder / "monitor-gpu.svg"))
            return (folder / "monitor-gpu.svg").read_text()

    svg = asyncio.run(run())
    first_word = reader_name.split()[-1]
    assert first_word.replace("&", "&amp;") in svg, f"{reader_name} not on the screen"
