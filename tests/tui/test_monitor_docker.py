"""The monitor fed by a real llama.cpp container started through a profile, plus the NVML
contract double holding memory for that container's real host PIDs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aitherctl.gpu.nvml import NvmlReader
from aitherctl.monitor.collect import MonitorCollector
from aitherctl.monitor.model import ScrapeStatus
from aitherctl.monitor.procs import HostReader, ProcessTable
from aitherctl.monitor.scrape import Scraper
from aitherctl.monitor.stack_reader import DockerStackSource
from aitherctl.tui.app import MonitorApp
from aitherctl.tui.render import SERVICE_COLUMNS
from tests.conftest import free_port, llama_service, run_cli, sdk_of
from tests.doubles.nvml_double import GIB, FakeGpu, NvmlDouble

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def llm(clean_namespace: Any, write_profile: Any, llama_image: str) -> dict[str, Any]:
    port = free_port()
    # A CPU service (no GPU here to switch onto); the NVML double still reports memory for its
    # processes, as NVML would for a GPU container.
    write_profile("montest", services={"llm": llama_service(port)})
    switched = run_cli("profile", "switch", "montest", "--yes")
    assert switched.returncode == 0, switched.stderr
    engine = clean_namespace
    container = next(item for item in engine.list_managed() if item.service == "llm")
    init_pid = sdk_of(engine).api.inspect_container(container.id)["State"]["Pid"]
    # A second process in the container that is not its init (as vLLM's GPU process is not).
    exec_id = sdk_of(engine).api.exec_create(container.id, ["sleep", "60"])["Id"]
    sdk_of(engine).api.exec_start(exec_id, detach=True)
    child = None
    for _ in range(50):
        child = next((pid for pid in engine.pids(container.id) if pid != init_pid), None)
        if child:
            break
        time.sleep(0.1)
    assert child, "the exec'd process did not show up"
    return {"engine": engine, "id": container.id, "port": port, "init": init_pid, "child": child}


def collector_for(llm: dict[str, Any]) -> MonitorCollector:
    from aitherctl.docker.engine import DockerEngine

    engine = llm["engine"]
    nvml = NvmlDouble(
        [
            FakeGpu(
                total_bytes=24 * GIB,
                utilization=40,
                processes=[(llm["child"], int(1.5 * GIB)), (999_999_999, 256 * 1024**2)],
            ),
        ]
    )
    return MonitorCollector(
        stack=DockerStackSource(lambda: DockerEngine.connect(engine.namespace)),
        gpus=NvmlReader(nvml),
        scraper=Scraper(timeout_s=2.0),
        procs=ProcessTable(),
        host=HostReader(),
    )


def test_real_cgroup_maps_a_containers_processes(llm: dict[str, Any]) -> None:
    owners = ProcessTable().containers_of([llm["init"], llm["child"]], {})
    assert owners == {llm["init"]: llm["id"], llm["child"]: llm["id"]}


def test_snapshot_of_a_real_llamacpp_service(llm: dict[str, Any]) -> None:
    collector = collector_for(llm)
    first = collector.collect()
    assert first.docker_error is None
    assert first.docker_engine.startswith("Docker ")
    assert first.active_profile == "montest"
    service = first.service("llm")
    assert service is not None
    assert service.engine == "llamacpp"
    assert service.state == "running"
    assert service.scrape is ScrapeStatus.OK, service.scrape_error
    assert (service.requests_running, service.requests_waiting) == (0, 0)
    assert service.vram_used_bytes == int(1.5 * GIB)  # the exec'd child, found by its cgroup
    assert service.uptime_s is not None
    assert service.uptime_s >= 0
    assert [proc.pid for proc in first.unmanaged] == [999_999_999]
    assert first.gpus[0].budgets == ()  # a CPU service has no budget on a GPU

    reply = httpx.post(
        f"http://127.0.0.1:{llm['port']}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Count to five"}], "max_tokens": 12},
        timeout=60,
    )
    assert reply.status_code == 200
    second = collector.collect()
    after = second.service("llm")
    assert after is not None
    assert after.tokens_per_s is not None
    assert after.tokens_per_s > 0


async def test_monitor_app_on_a_real_service(llm: dict[str, Any]) -> None:
    app = MonitorApp(collector_for(llm), interval_s=0.5)
    async with app.run_test(size=(130, 40)) as pilot:
        for _ in range(200):
            if app.refreshes >= 2:
                break
            await pilot.pause(0.05)
        table = app.query_one("#services")
        cells = [str(cell) for cell in table.get_row_at(0)]
        row = dict(zip(SERVICE_COLUMNS, cells, strict=True))
        assert row["service"] == "llm"
        assert row["engine"] == "llamacpp"
        assert row["state"] == "running"
        assert row["VRAM"] == "1.5 GiB"
        assert row["budget"] == "N/A"
        assert row["queue"] == "0/0"
        await pilot.press("q")


def test_status_json_on_a_real_service(llm: dict[str, Any], tmp_path: Path) -> None:
    import json

    result = run_cli("status", "--json", "--no-gpu")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["active_profile"] == "montest"
    (service,) = data["services"]
    assert service["name"] == "llm"
    assert service["scrape"] == "ok"
    assert service["port"] == llm["port"]


def test_a_restart_shows_in_the_log_and_resets_uptime(llm: dict[str, Any]) -> None:
    from aitherctl.monitor.model import LogKind

    collector = collector_for(llm)
    before = collector.collect().service("llm")
    assert before is not None
    assert before.uptime_s is not None
    time.sleep(1.5)
    sdk_of(llm["engine"]).api.restart(llm["id"], timeout=2)
    time.sleep(1.1)
    after = collector.collect()
    messages = [entry.message for entry in after.log if entry.kind is LogKind.RESTART]
    assert "llm: exited" in messages
    assert "llm: started" in messages
    service = after.service("llm")
    assert service is not None
    assert service.uptime_s is not None
    assert service.uptime_s < before.uptime_s + 1.5
