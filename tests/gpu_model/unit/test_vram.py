"""The VRAM planner's arithmetic, per GPU."""

from __future__ import annotations

from aitherctl.gpu.nvml import NvmlReader
from aitherctl.gpu.vram import GpuClaim, check_vram, describe_vram
from aitherctl.units import GIB, MemoryAmount
from tests.doubles.nvml_double import FakeGpu, NvmlDouble


def inventory(*gpus: FakeGpu, driver_loaded: bool = True):  # type: ignore[no-untyped-def]
    return NvmlReader(NvmlDouble(list(gpus), driver_loaded=driver_loaded)).read()


def claim(service: str, gpus: tuple[int, ...], each: int | None) -> GpuClaim:
    return GpuClaim(service, gpus, tuple((gpu, each or 0) for gpu in gpus))


def test_fits_with_reserve() -> None:
    check = check_vram(
        [claim("a", (0,), 8 * GIB), claim("b", (0,), 12 * GIB)],
        inventory(FakeGpu(total_bytes=24 * GIB)),
        MemoryAmount.parse("2GiB"),
    )
    assert check.fits
    assert check.gpus[0].needed_bytes == 22 * GIB


def test_other_processes_count_and_managed_ones_do_not() -> None:
    gpu = FakeGpu(total_bytes=24 * GIB, processes=[(100, 6 * GIB), (200, 3 * GIB)])
    claims = [claim("a", (0,), 16 * GIB)]
    refused = check_vram(claims, inventory(gpu), MemoryAmount.parse("1GiB"))
    assert not refused.fits
    assert refused.gpus[0].missing_bytes == 2 * GIB  # 16 + 1 + 6 + 3 = 26 > 24
    lines = describe_vram(refused)
    assert lines[0] == "GPU 0 (NVIDIA RTX 4090, 24.0 GiB):"
    assert any(line.split()[:2] == ["pid", "100"] and "not aitherctl's" in line for line in lines)
    assert lines[-1].endswith("missing 2.0 GiB")
    # PID 200 belongs to aitherctl's running service `x`, which the plan stops: not "other".
    accepted = check_vram(
        claims,
        inventory(gpu),
        MemoryAmount.parse("1GiB"),
        managed_pids=[200],
        actual_use={"x": {0: 3 * GIB}},
        running=[claim("x", (0,), 3 * GIB)],
    )
    assert accepted.fits


def test_service_over_its_budget_is_counted_at_what_it_uses() -> None:
    check = check_vram(
        [claim("a", (0,), 4 * GIB)],
        inventory(FakeGpu(total_bytes=8 * GIB)),
        MemoryAmount.parse("0.5GiB"),
        actual_use={"a": {0: 9 * GIB}},
    )
    assert not check.fits
    assert check.gpus[0].services[0].note == "uses 9.0 GiB, over budget"


def test_no_driver_refuses_gpu_services_only() -> None:
    none = inventory(driver_loaded=False)
    assert check_vram([claim("cpu-only", (), None)], none, MemoryAmount.parse("5%")).fits
    check = check_vram([claim("g", (0,), GIB)], none, MemoryAmount.parse("5%"))
    assert not check.fits
    assert check.problems[0].startswith("GPU services (g) cannot run: no NVIDIA driver")


def test_without_a_gpu_the_hint_names_no_profile_it_cannot_vouch_for() -> None:
    """It used to suggest `profile switch cpu`, whose image cannot be pulled where no registry
    is reachable: the caller, which can look at the engine's images, gives the hint."""
    none = inventory(driver_loaded=False)
    reserve = MemoryAmount.parse("5%")
    check = check_vram([claim("g", (0,), GIB)], none, reserve)
    assert check.problems == (
        "GPU services (g) cannot run: no NVIDIA driver (Driver Not Loaded). CPU services still "
        "can: `aitherctl profile plan NAME` says whether a profile's images are on the Docker "
        "engine (`bash scripts/quickstart.sh` builds an image and a `cpu-local` profile that "
        "uses it).",
    )
    hinted = check_vram(
        [claim("g", (0,), GIB)],
        none,
        reserve,
        no_gpu_hint="CPU services still run: try `aitherctl profile switch cpu-local`.",
    )
    assert hinted.problems[0].endswith(
        "(Driver Not Loaded). CPU services still run: try `aitherctl profile switch cpu-local`."
    )


def test_missing_gpu_index() -> None:
    check = check_vram([claim("g", (1,), GIB)], inventory(FakeGpu()), MemoryAmount.parse("5%"))
    assert check.problems == ("GPU 1 does not exist (this machine has GPU 0); needed by g",)


def test_multi_gpu_claim_counts_on_each_gpu() -> None:
    check = check_vram(
        [claim("tp", (0, 1), 20 * GIB), claim("small", (1,), 3 * GIB)],
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


def test_memory_no_process_explains_counts_as_held_outside_aitherctl() -> None:
    """WSL2 and vGPU: NVML lists no processes, yet 10 GiB are in use. They must count."""
    gpu = FakeGpu(total_bytes=24 * GIB, used_bytes=10 * GIB, processes=[])
    check = check_vram([claim("a", (0,), 16 * GIB)], inventory(gpu), MemoryAmount.parse("1MiB"))
    assert not check.fits
    assert check.gpus[0].others_bytes == 10 * GIB
    assert any(line.split()[:1] == ["unattributed"] for line in describe_vram(check))


def test_aitherctl_services_real_use_is_not_counted_twice() -> None:
    """8 GiB used, all of it by aitherctl's running service `a` (PID 300): replacing `a` by `b`
    (16 GiB) fits on 24 GiB; nothing is held outside aitherctl."""
    gpu = FakeGpu(total_bytes=24 * GIB, used_bytes=8 * GIB, processes=[(300, 8 * GIB)])
    check = check_vram(
        [claim("b", (0,), 16 * GIB)],
        inventory(gpu),
        MemoryAmount.parse("1GiB"),
        managed_pids=[300],
        actual_use={"a": {0: 8 * GIB}},
        running=[claim("a", (0,), 8 * GIB)],
    )
    assert check.fits
    assert check.gpus[0].others_bytes == 0


def test_without_process_attribution_running_services_count_at_their_budget() -> None:
    """vGPU: 12 GiB used, no process list; aitherctl's `a` (budget 8 GiB) runs: 4 GiB are
    someone else's."""
    gpu = FakeGpu(total_bytes=24 * GIB, used_bytes=12 * GIB, processes=[])
    check = check_vram(
        [claim("a", (0,), 8 * GIB)],
        inventory(gpu),
        MemoryAmount.parse("1MiB"),
        running=[claim("a", (0,), 8 * GIB)],
    )
    assert check.gpus[0].others_bytes == 4 * GIB
    assert check.gpus[0].needed_bytes == 12 * GIB + 1024**2


def test_kept_service_counts_at_max_of_budget_and_real_use() -> None:
    gpu = FakeGpu(total_bytes=24 * GIB, used_bytes=3 * GIB, processes=[(5, 3 * GIB)])
    check = check_vram(
        [claim("llama", (0,), 6 * GIB)],
        inventory(gpu),
        MemoryAmount.parse("1MiB"),
        managed_pids=[5],
        actual_use={"llama": {0: 3 * GIB}},
        running=[claim("llama", (0,), 6 * GIB)],
    )
    assert check.gpus[0].services[0].bytes == 6 * GIB  # under budget: the budget counts


def test_budgets_resolve_against_each_gpus_own_total() -> None:
    """A 50% budget over a 24 GiB and a 48 GiB card is 12 GiB on one and 24 GiB on the other."""
    from aitherctl.engines.registry import build_container
    from aitherctl.profiles.profile import Engine, Health, Service

    service = Service(
        name="tp",
        engine=Engine.VLLM,
        image="img",
        port=8000,
        model="m",
        health=Health(),
        gpus=(0, 1),
        vram=MemoryAmount.parse("50%"),
    )
    spec = build_container(service, {0: 24 * GIB, 1: 48 * GIB})
    check = check_vram(
        [GpuClaim.of(spec)],
        inventory(FakeGpu(total_bytes=24 * GIB), FakeGpu(total_bytes=48 * GIB)),
        MemoryAmount.parse("1MiB"),
    )
    assert [gpu.services[0].bytes for gpu in check.gpus] == [12 * GIB, 24 * GIB]


def test_the_drivers_reservation_is_shown_apart_and_counted() -> None:
    """NVML v2: an idle 80 GB card with 480 MiB reserved by the driver says 0 used, like
    nvidia-smi; the plan still counts the 480 MiB as taken and names it."""
    gpu = FakeGpu(total_bytes=80 * GIB, used_bytes=0, reserved_bytes=480 * 1024**2)
    reading = inventory(gpu).gpus[0]
    assert (reading.memory_used_bytes, reading.memory_reserved_bytes) == (0, 480 * 1024**2)
    assert reading.memory_free_bytes == 80 * GIB - 480 * 1024**2
    room = 80 * GIB - 1 * GIB  # everything but the reserve: no longer fits
    check = check_vram([claim("a", (0,), room)], inventory(gpu), MemoryAmount.parse("1GiB"))
    assert not check.fits
    assert check.gpus[0].missing_bytes == 480 * 1024**2
    assert any(line.split()[:2] == ["driver", "reserved"] for line in describe_vram(check))


def test_an_nvml_without_memory_info_v2_counts_the_reservation_in_used() -> None:
    """Older pynvml (no nvmlMemory_v2): v1 lumps the reservation into used; nothing is lost."""

    class OldBindings(NvmlDouble):
        nvmlMemory_v2 = None  # type: ignore[assignment]

    gpu = FakeGpu(total_bytes=24 * GIB, used_bytes=0, reserved_bytes=400 * 1024**2)
    reading = NvmlReader(OldBindings([gpu])).read().gpus[0]
    assert (reading.memory_used_bytes, reading.memory_reserved_bytes) == (400 * 1024**2, 0)
    assert reading.memory_free_bytes == 24 * GIB - 400 * 1024**2
