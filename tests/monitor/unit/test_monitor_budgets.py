"""The monitor shows each service's budget resolved against each GPU's own total (mixed cards)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aitherctl.gpu.nvml import NvmlReader
from aitherctl.monitor.collect import MonitorCollector
from aitherctl.monitor.model import StackReading
from aitherctl.monitor.procs import ProcessTable
from tests.doubles.nvml_double import GIB, FakeGpu, NvmlDouble
from tests.tui.sources import FROZEN_AT, FixedHost, FixedStack, container


def test_budgets_on_a_24_and_a_48_gb_card(tmp_path: Path) -> None:
    # 35% of each card, as build_container records it in `gpu_vram` (and the label).
    small, large = 24 * GIB * 35 // 100, 48 * GIB * 35 // 100
    big = replace(
        container("big", 1, engine="vllm", port=8001, gpus=(0, 1)),
        vram_bytes=small,
        gpu_vram=((0, small), (1, large)),
    )
    nvml = NvmlDouble([FakeGpu(total_bytes=24 * GIB), FakeGpu(total_bytes=48 * GIB)])
    (tmp_path / "proc").mkdir()
    collector = MonitorCollector(
        stack=FixedStack(StackReading(containers=(big,))),
        gpus=NvmlReader(nvml),
        scraper=None,
        procs=ProcessTable(tmp_path / "proc"),
        host=FixedHost(),
        wall_clock=lambda: FROZEN_AT,
    )
    snapshot = collector.collect()
    assert snapshot.services[0].vram_budget_bytes == small + large
    marks = {gpu.index: [(m.service, m.budget_bytes) for m in gpu.budgets] for gpu in snapshot.gpus}
    assert marks == {0: [("big", small)], 1: [("big", large)]}
