"""The monitor and `status` across Docker hosts, on fixed readings: services of another host are
shown with their host, reached at that host's address, their VRAM read from that host's GPUs;
a host that cannot be reached is named while the others still show.

The other host's reading is what `aitherctl.monitor.other_hosts.RemoteHostsSource` returns: its
stack as `DockerStackSource` reads it, its GPUs as the nvidia-smi parser makes of the CSV the
remote probe prints (`aitherctl.gpu.nvidia_smi`), and its GPU containers' host PIDs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from aitherctl.engines.metrics import EngineMetrics
from aitherctl.gpu.model import GpuInventory
from aitherctl.gpu.nvidia_smi import RESERVED_MARK, SEPARATOR, parse_inventory
from aitherctl.monitor.collect import MonitorCollector
from aitherctl.monitor.model import ScrapeStatus, StackReading
from aitherctl.monitor.other_hosts import RemoteReading
from aitherctl.monitor.scrape import ScrapeResult
from aitherctl.tui.render import plain_lines, status_renderable
from tests.tui.sources import container, fixed_collector, fixed_scrapes

GIB = 1024**3
MIB = 1024**2
REMOTE_CHAT = replace(
    container("chat", 9, engine="vllm", port=8001, vram_gib=20, model="Llama-70B-AWQ"),
    profile="two-boxes",
)
UUID = "GPU-11111111-2222-3333-4444-555555555555"
# What the remote probe prints on node-a: one 48 GB card, chat's engine (pid 5001) holding
# 18 GiB and a notebook (pid 5002) 2 GiB that aitherctl does not manage.
NODE_A_SMI = (
    f"{RESERVED_MARK}\n"
    f"0, {UUID}, NVIDIA RTX 6000 Ada Generation, 49140, 20480, 63, 58, 210.5, 300.00, 580.1, 512\n"
    f"{SEPARATOR}\n"
    f"{UUID}, 5001, {18 * 1024}, VLLM::EngineCore\n"
    f"{UUID}, 5002, {2 * 1024}, /usr/bin/python3\n"
)


@dataclass
class FixedRemote:
    readings: tuple[RemoteReading, ...]

    def read(self) -> tuple[RemoteReading, ...]:
        return self.readings

    def engine(self, host: str) -> Any | None:
        del host
        return None


class RecordingScraper:
    """Answers for the local services as recorded, and for the remote chat; keeps the URLs."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.results = {
            **fixed_scrapes(),
            "chat@node-a": ScrapeResult(
                "chat@node-a",
                ScrapeStatus.OK,
                EngineMetrics(requests_running=3, requests_waiting=0),
                latency_s=0.02,
            ),
        }

    def scrape_all(self, targets: Any) -> dict[str, ScrapeResult]:
        out = {}
        for target in targets:
            self.urls[target.service] = target.base_url
            if target.service in self.results:
                out[target.service] = self.results[target.service]
        return out


def remote_readings() -> tuple[RemoteReading, ...]:
    node_a = RemoteReading(
        name="node-a",
        endpoint="ssh://ops@node-a",
        address="10.0.0.5",
        stack=StackReading(
            containers=(REMOTE_CHAT,), active_profile="two-boxes", engine="Docker 27.5.1"
        ),
        gpus=parse_inventory(NODE_A_SMI),
        gpu_age_s=3.0,
        pids={REMOTE_CHAT.id: (5000, 5001)},
    )
    node_b = RemoteReading(
        name="node-b",
        endpoint="ssh://ops@node-b",
        address="10.0.0.6",
        stack=StackReading(
            error="host 'node-b': cannot reach its Docker engine at "
            "ssh://ops@node-b: connection refused"
        ),
    )
    return node_a, node_b


def collector(tmp_path: Path, scraper: RecordingScraper) -> MonitorCollector:
    base = fixed_collector(tmp_path)
    return MonitorCollector(
        stack=base._stack,
        gpus=base._gpus,
        scraper=scraper,
        procs=base._procs,
        host=base._host,
        remote=FixedRemote(remote_readings()),
        wall_clock=base._now,
        monotonic=iter(range(10**6)).__next__,
    )


def test_another_hosts_service_with_its_host_address_and_vram(tmp_path: Path) -> None:
    scraper = RecordingScraper()
    snapshot = collector(tmp_path, scraper).collect()

    local, remote = snapshot.service("chat"), snapshot.service("chat@node-a")
    assert local is not None
    assert remote is not None  # the same service name on two hosts: two rows
    assert (local.host, remote.host) == ("local", "node-a")
    # reached at the host's address, not on this machine's loopback
    assert scraper.urls["chat@node-a"] == "http://10.0.0.5:8001"
    assert scraper.urls["chat"] == "http://127.0.0.1:8001"
    assert remote.url == "http://10.0.0.5:8001"
    assert remote.requests_running == 3
    # its VRAM: node-a's nvidia-smi processes of the container's PIDs, against its budget
    assert remote.vram_used_bytes == 18 * GIB
    assert remote.vram_budget_bytes == 20 * GIB
    assert not remote.over_budget
    gpus = {gpu.label: gpu for gpu in snapshot.gpus}
    assert "node-a GPU 0" in gpus
    assert gpus["node-a GPU 0"].memory_total_bytes == 49140 * MIB
    assert [mark.service for mark in gpus["node-a GPU 0"].budgets] == ["chat"]
    assert "GPU 0" in gpus  # this machine's own still there
    foreign = [proc for proc in snapshot.unmanaged if proc.host == "node-a"]
    assert [(proc.pid, proc.used_bytes) for proc in foreign] == [(5002, 2 * GIB)]


def test_a_host_that_cannot_be_reached_is_named_and_the_rest_shows(tmp_path: Path) -> None:
    snapshot = collector(tmp_path, RecordingScraper()).collect()
    hosts = {view.name: view for view in snapshot.hosts}
    assert hosts["node-a"].error is None
    assert hosts["node-a"].services == 1
    assert hosts["node-b"].error is not None
    assert "connection refused" in hosts["node-b"].error

    console = Console(width=200, record=True, color_system=None)
    console.print(status_renderable(snapshot))
    text = console.export_text()
    assert "host node-b (ssh://ops@node-b): host 'node-b': cannot reach" in text
    assert "node-b unreachable" in text  # in the header too
    assert "chat@node-a" in text
    assert "node-a GPU 0" in text
    lines = plain_lines(snapshot)
    assert any(
        line.endswith("connection refused") and " host node-b unreachable" in line for line in lines
    )
    assert any(" chat@node-a engine=vllm state=running" in line for line in lines)


def test_with_no_local_engine_the_other_hosts_still_show(tmp_path: Path) -> None:
    base = fixed_collector(tmp_path, with_docker=False)
    snapshot = MonitorCollector(
        stack=base._stack,
        gpus=base._gpus,
        scraper=RecordingScraper(),
        procs=base._procs,
        host=base._host,
        remote=FixedRemote(remote_readings()),
        wall_clock=base._now,
    ).collect()
    assert snapshot.docker_error is not None
    assert [svc.key for svc in snapshot.services] == ["chat@node-a"]
    assert snapshot.active_profile == "two-boxes"
    console = Console(width=200, record=True, color_system=None)
    console.print(status_renderable(snapshot))
    assert "chat@node-a" in console.export_text()


def test_a_gpu_reading_that_failed_there_is_said_once(tmp_path: Path) -> None:
    node_a, _ = remote_readings()
    failed = replace(node_a, gpus=GpuInventory(error="on that host: no NVIDIA driver"), pids={})
    base = fixed_collector(tmp_path)
    snapshot = MonitorCollector(
        stack=base._stack,
        gpus=base._gpus,
        scraper=RecordingScraper(),
        procs=base._procs,
        host=base._host,
        remote=FixedRemote((failed,)),
        wall_clock=base._now,
    ).collect()
    assert snapshot.hosts[0].gpu_error == "on that host: no NVIDIA driver"
    remote = snapshot.service("chat@node-a")
    assert remote is not None
    assert remote.vram_used_bytes is None  # unknown, not 0
    assert all(gpu.host == "local" for gpu in snapshot.gpus)
