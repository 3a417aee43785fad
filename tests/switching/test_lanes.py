"""Which services start one after another: every one that takes GPU memory as it starts, per GPU."""

from __future__ import annotations

from aitherctl.engines.registry import build_container
from aitherctl.profiles.profile import Engine, Health, Service
from aitherctl.switching.plan import compute_plan
from aitherctl.switching.transaction import lanes, start_items
from aitherctl.units import GIB, MemoryAmount

TOTALS = {0: 24 * GIB, 1: 24 * GIB}


def spec(name: str, engine: Engine, gpus: tuple[int, ...], port: int):  # type: ignore[no-untyped-def]
    service = Service(
        name=name,
        engine=engine,
        image="img",
        port=port,
        model="m",
        health=Health(),
        gpus=gpus,
        vram=MemoryAmount.parse("10%") if gpus else None,
    )
    return build_container(service, TOTALS)


def lane_names(*specs) -> list[list[str]]:  # type: ignore[no-untyped-def]
    plan = compute_plan("p", [], {s.service: s for s in specs})
    return sorted(sorted(item.service for item in lane) for lane in lanes(start_items(plan)))


def test_vllm_and_llamacpp_on_one_gpu_start_one_after_another_cpu_ones_in_parallel() -> None:
    assert lane_names(
        spec("chat", Engine.VLLM, (0,), 1),
        spec("code", Engine.LLAMACPP, (0,), 2),
        spec("other-gpu", Engine.VLLM, (1,), 3),
        spec("cpu", Engine.LLAMACPP, (), 4),
    ) == [["chat", "code"], ["cpu"], ["other-gpu"]]


def test_a_service_on_two_gpus_joins_both_lanes() -> None:
    assert lane_names(
        spec("a", Engine.VLLM, (0,), 1),
        spec("b", Engine.VLLM, (1,), 2),
        spec("tp", Engine.VLLM, (0, 1), 3),
    ) == [["a", "b", "tp"]]
