"""The monitor's services panel shows a model download in progress (models/downloads.py): on the
row of the service whose container waits for it (an Ollama pull), and as a row of its own for a
service whose container does not exist yet (a Hub or GGUF download before the start)."""

from __future__ import annotations

from pathlib import Path

from aitherctl.models.pull_model import DownloadState
from aitherctl.monitor.collect import MonitorCollector
from aitherctl.monitor.model import StackReading
from aitherctl.monitor.procs import ProcessTable
from aitherctl.tui.render import state_text
from tests.tui.sources import FROZEN_AT, FixedHost, FixedStack, container

SIZE = 1_321_098_329


def test_a_download_shows_on_its_service_or_as_a_row_of_its_own(tmp_path: Path) -> None:
    pulling = DownloadState("local", "local", "llama3.2:1b dde5aa3fc5ff", SIZE // 4, SIZE, 0.0,
                            "ollama", "llama3.2:1b")  # fmt: skip
    fetching = DownloadState("coder", "local", "model-00001-of-00002.safetensors", 0, 4 * 10**9,
                             0.0, "vllm", "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ")  # fmt: skip
    (tmp_path / "proc").mkdir()
    collector = MonitorCollector(
        stack=FixedStack(
            StackReading(
                containers=(
                    container("local", 1, engine="ollama", port=11434, gpus=()),
                    container("chat", 2, engine="vllm", port=8001),
                )
            )
        ),
        gpus=None,
        scraper=None,
        procs=ProcessTable(tmp_path / "proc"),
        host=FixedHost(),
        wall_clock=lambda: FROZEN_AT,
        downloads=lambda: {("local", "local"): pulling, ("local", "coder"): fetching},
    )
    services = {view.name: view for view in collector.collect().services}
    assert [(name, view.state, str(state_text(view))) for name, view in services.items()] == [
        ("chat", "running", "running"),
        ("local", "running", "downloading 24%"),
        ("coder", "downloading", "downloading 0%"),
    ]
    assert (services["coder"].engine, services["coder"].model) == (
        "vllm",
        "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
    )
    assert services["coder"].container_id is None
