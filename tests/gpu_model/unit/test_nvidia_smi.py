"""The nvidia-smi CSV parser (`aitherctl.gpu.nvidia_smi`) on the documented output format.

The sample lines follow nvidia-smi(1) and `--help-query-gpu` / `--help-query-compute-apps` (see
the module's docstring): one line per GPU, values in the order asked, ", " between them, no units
with `nounits`, memory in MiB, `[N/A]` / `[Not Supported]` where a device gives no value.
No line here was captured from a real GPU (none is reachable from this project's test machines);
the same format runs end to end in tests/gpu_model/docker/test_remote_gpu.py through the contract
double tests/doubles/nvidia_smi_double/nvidia-smi.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aitherctl.gpu.model import GpuProcess
from aitherctl.gpu.nvidia_smi import (
    APP_FIELDS,
    GPU_FIELDS,
    MIB,
    QUERY_COMPUTE_APPS,
    QUERY_GPUS,
    QUERY_GPUS_RESERVED,
    RESERVED_MARK,
    SEPARATOR,
    SHELL_SNIPPET,
    parse_inventory,
)

H100 = "GPU-8d3c5f1a-2b7e-4c90-9a61-3f0e7d2b4c11"
RTX = "GPU-51e0a7c3-9d24-4f6b-8e15-c2a94b7d0e68"
GPUS = (
    f"0, {H100}, NVIDIA H100 80GB HBM3, 81559, 0, 0, 31, 71.43, 700.00, 550.54.15\n"
    f"1, {RTX}, NVIDIA GeForce RTX 4090, 24564, 18034, 87, 64, 312.55, 450.00, 550.54.15\n"
)
APPS = f"{RTX}, 4242, 12288, /usr/bin/python3\n{RTX}, 4343, 5120, /app/llama-server\n"
DOUBLE = Path(__file__).resolve().parents[2] / "doubles" / "nvidia_smi_double" / "nvidia-smi"


def output(gpus: str = GPUS, apps: str = APPS) -> str:
    """What SHELL_SNIPPET prints when both queries succeed."""
    return f"{gpus}{SEPARATOR}\n{apps}"


def test_the_commands_are_the_documented_queries() -> None:
    assert QUERY_GPUS == (
        "nvidia-smi",
        "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,"
        "power.draw,power.limit,driver_version",
        "--format=csv,noheader,nounits",
    )
    assert QUERY_COMPUTE_APPS == (
        "nvidia-smi",
        "--query-compute-apps=gpu_uuid,pid,used_memory,process_name",
        "--format=csv,noheader,nounits",
    )
    assert APP_FIELDS[-1] == "process_name"  # the one value that may hold ", " comes last
    assert len(GPU_FIELDS) == 10
    assert QUERY_GPUS_RESERVED[1] == QUERY_GPUS[1] + ",memory.reserved"


def test_the_drivers_reservation_is_apart_from_used_and_not_free() -> None:
    gpus = "".join(
        line + f", {reserved}\n"
        for line, reserved in zip(GPUS.splitlines(), ("480", "[N/A]"), strict=True)
    )
    inventory = parse_inventory(output(f"{RESERVED_MARK}\n{gpus}"))
    assert inventory.error is None
    h100, rtx = inventory.gpus
    assert (h100.memory_used_bytes, h100.memory_reserved_bytes) == (0, 480 * MIB)
    assert h100.memory_free_bytes == (81559 - 480) * MIB
    assert rtx.memory_reserved_bytes == 0  # [N/A]: unknown, used is all there is
    assert inventory.driver_version == "550.54.15"


def test_a_name_with_a_comma_and_the_reserved_column() -> None:
    line = f"0, {H100}, Some, GPU, 1000, 10, 0, 30, 50, 100, 580.1, 20\n"
    gpu = parse_inventory(output(f"{RESERVED_MARK}\n{line}", apps="")).gpus[0]
    assert (gpu.name, gpu.memory_reserved_bytes) == ("Some, GPU", 20 * MIB)


def test_two_gpus_with_their_memory_in_bytes_and_processes_by_uuid() -> None:
    inventory = parse_inventory(output())
    assert inventory.available
    assert inventory.driver_version == "550.54.15"
    h100, rtx = inventory.gpus
    assert (h100.index, h100.uuid, h100.name) == (0, H100, "NVIDIA H100 80GB HBM3")
    assert h100.memory_total_bytes == 81559 * MIB
    assert h100.memory_used_bytes == 0
    assert (h100.utilization_pct, h100.temperature_c) == (0.0, 31.0)
    assert (h100.power_w, h100.power_limit_w) == (71.43, 700.0)
    assert h100.processes == ()
    assert rtx.memory_total_bytes == 24564 * MIB
    assert rtx.memory_used_bytes == 18034 * MIB
    assert rtx.memory_free_bytes == (24564 - 18034) * MIB
    assert rtx.processes == (
        GpuProcess(pid=4242, used_bytes=12288 * MIB, name="/usr/bin/python3"),
        GpuProcess(pid=4343, used_bytes=5120 * MIB, name="/app/llama-server"),
    )
    assert inventory.by_index(1) == rtx


def test_no_compute_process_is_an_empty_apps_part() -> None:
    inventory = parse_inventory(output(apps=""))
    assert inventory.available
    assert all(gpu.processes == () for gpu in inventory.gpus)
    # The table view's line, should a driver ever print it for a query: no process either.
    assert parse_inventory(output(apps="No running processes found\n")).available


def test_na_and_not_supported_values_are_unknown() -> None:
    gpus = (
        f"0, {RTX}, NVIDIA GeForce RTX 4090, 24564, 1021, [N/A], 45, [N/A], [Not Supported], "
        "[N/A]\n"
    )
    apps = f"{RTX}, 4242, [N/A], [N/A]\n"
    inventory = parse_inventory(output(gpus, apps))
    assert inventory.available, inventory.error
    (gpu,) = inventory.gpus
    assert gpu.utilization_pct is None
    assert gpu.temperature_c == 45.0
    assert (gpu.power_w, gpu.power_limit_w) == (None, None)
    assert inventory.driver_version is None
    assert gpu.processes == (GpuProcess(pid=4242, used_bytes=None, name=None),)


def test_a_gpu_without_a_memory_reading_cannot_be_budgeted() -> None:
    """Unified-memory parts (Grace, Jetson) print [N/A] for memory.total and memory.used."""
    gpus = f"0, {H100}, NVIDIA GB10, [N/A], [N/A], 3, 41, 11.20, [N/A], 580.95.05\n"
    inventory = parse_inventory(output(gpus, ""))
    assert not inventory.available
    assert inventory.gpus == ()
    assert inventory.error == (
        "nvidia-smi gives no memory.total for GPU 0 (NVIDIA GB10) ([N/A]): a GPU without its "
        "own memory reading (unified memory, vGPU) cannot be budgeted"
    )


def test_a_gpu_name_with_a_comma_is_kept_whole() -> None:
    gpus = f"0, {H100}, Vendor Board, Rev 2, 16384, 512, 1, 30, 20.00, 100.00, 550.54.15\n"
    (gpu,) = parse_inventory(output(gpus, "")).gpus
    assert gpu.name == "Vendor Board, Rev 2"
    assert gpu.memory_total_bytes == 16384 * MIB


def test_a_process_name_with_a_comma_is_kept_whole() -> None:
    apps = f"{RTX}, 4242, 100, python3 -c print(1, 2)\n"
    rtx = parse_inventory(output(apps=apps)).gpus[1]
    assert rtx.processes[0].name == "python3 -c print(1, 2)"


def test_a_process_on_an_unlisted_gpu_is_dropped() -> None:
    apps = f"MIG-0b2e5c1a-1111-2222-3333-444455556666, 4242, 100, python3\n{APPS}"
    inventory = parse_inventory(output(apps=apps))
    assert inventory.available
    assert [p.pid for gpu in inventory.gpus for p in gpu.processes] == [4242, 4343]


def test_windows_line_endings() -> None:
    assert parse_inventory(output().replace("\n", "\r\n")).gpus[1].processes[1].pid == 4343


# -- failures: one line each -----------------------------------------------------------------
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


@pytest.mark.parametrize(
    ("printed", "exit_code", "error"),
    [
        (
            NO_DRIVER,
            9,
            "no NVIDIA driver on that host (nvidia-smi: " + NO_DRIVER.strip() + ")",
        ),
        (
            NO_DRIVER.replace(". Make", ".\nMake"),  # the same message on two lines
            9,
            "no NVIDIA driver on that host (nvidia-smi: " + NO_DRIVER.strip() + ")",
        ),
        ("No devices were found\n", 6, "nvidia-smi sees no GPU"),
        (
            "sh: 1: nvidia-smi: not found\n",
            127,
            "nvidia-smi is not in the probe container (the NVIDIA Container Toolkit mounts it "
            "only into a container that requests GPUs with the utility capability)",
        ),
        (
            "Failed to initialize NVML: Driver/library version mismatch\n"
            "NVML library version: 550.54\n",
            18,
            "nvidia-smi failed (exit 18): Failed to initialize NVML: Driver/library version "
            "mismatch NVML library version: 550.54",
        ),
        ("", 255, "nvidia-smi failed (exit 255) and printed nothing"),
        ("", 0, "nvidia-smi printed nothing"),
        ("<html>hello</html>\n", 0, "nvidia-smi output not understood: '<html>hello</html>'"),
    ],
)
def test_nvidia_smi_failures_are_one_line_errors(printed: str, exit_code: int, error: str) -> None:
    inventory = parse_inventory(printed, exit_code=exit_code)
    assert inventory.gpus == ()
    assert inventory.error == error
    assert "\n" not in error


def test_a_failed_compute_apps_query_is_an_error() -> None:
    inventory = parse_inventory(output(apps="Unable to query compute apps\n"), exit_code=15)
    assert inventory.error == (
        "nvidia-smi compute apps query failed (exit 15): Unable to query compute apps"
    )


def test_no_gpu_line_before_the_separator() -> None:
    assert parse_inventory(output(gpus="")).error == "nvidia-smi sees no GPU"


@pytest.mark.parametrize(
    ("gpus", "apps", "error"),
    [
        (
            "0, only, three\n",
            "",
            "nvidia-smi output not understood: '0, only, three'",
        ),
        (
            GPUS.replace("0, GPU-8d3c", "zero, GPU-8d3c"),
            "",
            "nvidia-smi output not understood: index is 'zero' in 'zero, GPU-8d3c5f1a-2b7e-"
            "4c90-9a61-3f0e7d2b4c11, NVIDIA H100 80GB HBM3, 81559, 0, 0, 31, 71.43, 700.00, "
            "550.54.15'",
        ),
        (
            GPUS.replace("81559", "81559 MiB"),  # units: a query without nounits
            "",
            "nvidia-smi output not understood: memory.total is '81559 MiB' in '0, GPU-8d3c5f1a-"
            "2b7e-4c90-9a61-3f0e7d2b4c11, NVIDIA H100 80GB HBM3, 81559 MiB, 0, 0, 31, 71.43, "
            "700.00, 550.54.15'",
        ),
        (
            GPUS,
            f"{RTX}, 4242\n",
            f"nvidia-smi compute apps not understood: '{RTX}, 4242'",
        ),
        (
            GPUS,
            f"{RTX}, four, 10, x\n",
            f"nvidia-smi output not understood: pid is 'four' in '{RTX}, four, 10, x'",
        ),
    ],
)
def test_garbage_is_an_error_that_quotes_the_line(gpus: str, apps: str, error: str) -> None:
    inventory = parse_inventory(output(gpus, apps))
    assert inventory.gpus == ()
    assert inventory.error == error


def test_a_long_message_is_cut_to_one_short_line() -> None:
    error = parse_inventory("x" * 5000 + "\n" + "y" * 10, exit_code=1).error
    assert error is not None
    assert len(error) < 260
    assert error.endswith("…")


# -- the snippet, run by a real shell against the double -------------------------------------
def run_snippet(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """SHELL_SNIPPET in /bin/sh with the contract double first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").symlink_to(DOUBLE)
    return subprocess.run(
        ["/bin/sh", "-c", SHELL_SNIPPET],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        check=False,
        timeout=30,
    )


def test_the_snippet_runs_both_queries_in_a_shell(tmp_path: Path) -> None:
    done = run_snippet(tmp_path)
    assert done.stderr == ""
    inventory = parse_inventory(done.stdout, exit_code=done.returncode)
    assert inventory.available, inventory.error
    assert [gpu.name for gpu in inventory.gpus] == [
        "NVIDIA H100 80GB HBM3",
        "NVIDIA GeForce RTX 4090",
    ]
    assert [p.pid for p in inventory.gpus[1].processes] == [4242, 4343]
    assert [gpu.memory_free_bytes // MIB for gpu in inventory.gpus] == [81079, 6057]


def test_a_driver_without_memory_reserved_is_asked_again_without_it(tmp_path: Path) -> None:
    done = run_snippet(tmp_path, NVIDIA_SMI_DOUBLE_OLD_DRIVER="1")
    assert done.returncode == 0, done.stdout
    assert RESERVED_MARK not in done.stdout
    assert "not a valid field" not in done.stdout
    inventory = parse_inventory(done.stdout, exit_code=done.returncode)
    assert inventory.error is None
    assert [gpu.memory_reserved_bytes for gpu in inventory.gpus] == [0, 0]
    assert [gpu.memory_used_bytes // MIB for gpu in inventory.gpus] == [0, 18034]


def test_the_snippet_stops_with_nvidia_smis_exit_code(tmp_path: Path) -> None:
    done = run_snippet(tmp_path, NVIDIA_SMI_DOUBLE_FAIL="driver")
    assert done.returncode == 9
    assert SEPARATOR not in done.stdout
    error = parse_inventory(done.stdout, exit_code=done.returncode).error
    assert error is not None
    assert error.startswith("no NVIDIA driver on that host (nvidia-smi: NVIDIA-SMI has failed")


def test_the_snippet_without_nvidia_smi(tmp_path: Path) -> None:
    done = subprocess.run(
        ["/bin/sh", "-c", SHELL_SNIPPET],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
        check=False,
        timeout=30,
    )
    assert done.returncode == 127
    error = parse_inventory(done.stdout, exit_code=done.returncode).error
    assert error is not None
    assert error.startswith("nvidia-smi is not in the probe container")
