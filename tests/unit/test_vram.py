"""The VRAM planner's arithmetic, per GPU."""

from __future__ import annotations

from aitherctl.adapters.nvml import NvmlReader
from aitherctl.core.units import GIB, MemoryAmount
from aitherctl.core.vram import GpuClaim, check_vram, describe_vram
from tests.doubles.nvml_double import FakeGpu, NvmlDouble


def inventory(*gpus: FakeGpu, driver_loaded: bool = True):  # type: ignore[no-untyped-def]
    return NvmlReader(NvmlDouble(list(gpus), driver_loaded=driver_loaded)).read()


def test_fits_with_reserve() -> None:
    check = check_vram(
        [GpuClaim("a", (0,), 8 * GIB), GpuClaim("b", (0,), 12 * GIB)],
        inventory(FakeGpu(total_bytes=24 * GIB)),
        MemoryAmount.parse("2GiB"),
    )
    assert check.fits
    assert check.gpus[0].needed_bytes == 22 * GIB


def test_other_processes_count_and_managed_ones_do_not() -> None:
    gpu = FakeGpu(total_bytes=24 * GIB, processes=[(100, 6 * GIB), (200, 3 * GIB)])
    claims = [GpuClaim("a", (0,), 16 * GIB)]
    refused = check_vram(claims, inventory(gpu), MemoryAmount.parse("0GiB" if False else "1GiB"))
    assert not refused.fits
    assert refused.gpus[0].missing_bytes == 2 * GIB  # 16 + 1 + 6 + 3 = 26 > 24
    lines = describe_vram(refused)
    assert lines[0] == "GPU 0 (NVIDIA RTX 4090, 24.0 GiB):"
    assert any(line.split()[:2] == ["pid", "100"] and "not aitherctl's" in line for line in lines)
    assert lines[-1].endswith("missing 2.0 GiB")
    # PID 200 belongs to one of aitherctl's containers: its memory is the budget, not "other".
    accepted = check_vram(claims, inventory(gpu), MemoryAmount.parse("1GiB"), managed_pids=[200])
    assert accepted.fits


def test_service_over_its_budget_is_counted_at_what_it_uses() -> None:
    check = check_vram(
        [GpuClaim("a", (0,), 4 * GIB)],
        inventory(FakeGpu(total_bytes=8 * GIB)),
        MemoryAmount.parse("0.5GiB"),
        actual_use={"a": 9 * GIB},
    )
    assert not check.fits
    assert check.gpus[0].services[0].note == "uses 9.0 GiB, over budget"


def test_no_driver_refuses_gpu_services_only() -> None:
    none = inventory(driver_loaded=False)
    assert check_vram([GpuClaim("cpu-only", (), None)], none, MemoryAmount.parse("5%")).fits
    check = check_vram([GpuClaim("g", (0,), GIB)], none, MemoryAmount.parse("5%"))
    assert not check.fits
    assert check.problems[0].startswith("GPU services (g) cannot run: no NVIDIA driver")


def test_missing_gpu_index() -> None:
    check = check_vram([GpuClaim("g", (1,), GIB)], inventory(FakeGpu()), MemoryAmount.parse("5%"))
    assert check.problems == ("GPU 1 does not exist (this machine has GPU 0); needed by g",)


def test_multi_gpu_claim_counts_on_each_gpu() -> None:
    check = check_vram(
        [GpuClaim("tp", (0, 1), 20 * GIB), GpuClaim("small", (1,), 3 * GIB)],
        inventory(FakeGpu(total_bytes=24 * GIB), FakeGpu(total_bytes=24 * GIB)),
        MemoryAmount.parse("5%"),
    )
    assert [gpu.fits for gpu in check.gpus] == [True, False]


def test_nvml_is_initialised_once_per_reader() -> None:
    double = NvmlDouble([FakeGpu()])
    reader = NvmlReader(double)
    reader.read()
    reader.read()
    assert double.init_calls == 1
    reader.close()
    assert double.initialised == 0
