"""CPU services show their real CPU and RAM use against their `ram:` budget in `ps`, `status`
and the monitor, read from the container's cgroup as `docker stats` reads it. A real llama.cpp
server with SmolLM2 on the CPU, on the real engine."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import free_port, llama_service, run_cli, sdk_of

pytestmark = pytest.mark.docker


@pytest.fixture
def llm(clean_namespace, write_profile, llama_image):  # type: ignore[no-untyped-def]
    write_profile("cpu-budget", services={"llm": llama_service(free_port(), ram="1GiB")})
    switched = run_cli("profile", "switch", "cpu-budget", "--yes")
    assert switched.returncode == 0, switched.stderr
    return clean_namespace


def docker_stats_memory(engine, container_id: str) -> int:  # type: ignore[no-untyped-def]
    """What `docker stats` shows as MEM USAGE: usage less inactive file cache."""
    stats = sdk_of(engine).api.stats(container_id, stream=False)
    memory = stats["memory_stats"]
    inactive = memory["stats"].get("total_inactive_file", memory["stats"].get("inactive_file", 0))
    return int(memory["usage"]) - int(inactive)


def test_ps_status_and_the_monitor_show_cpu_and_ram_against_the_budget(  # type: ignore[no-untyped-def]
    llm,
) -> None:
    engine = llm
    (container,) = [item for item in engine.list_managed() if item.running]
    expected = docker_stats_memory(engine, container.id)
    assert expected > 20 * 1024**2  # llama-server with its model: a real reading

    ps = json.loads(run_cli("ps", "--json").stdout)["services"][0]
    assert ps["ram_budget_bytes"] == 1024**3
    assert ps["ram_used_bytes"] == pytest.approx(expected, rel=0.2)
    assert ps["cpu_pct"] >= 0
    assert ps["over_ram_budget"] is False

    table = run_cli("ps", env={"COLUMNS": "200"}).stdout.splitlines()
    # No VRAM column where no GPU service runs.
    assert table[1].split() == [
        "service",
        "engine",
        "model",
        "state",
        "health",
        "port",
        "gpu",
        "cpu",
        "ram",
        "up",
    ]
    assert re.search(r"  cpu  \d+\.\d%  \d+(\.\d)? MiB / 1\.0 GiB  ", table[2]), table[2]
    # At 80 columns a cell may wrap between words, never inside one.
    narrow = run_cli("ps", env={"COLUMNS": "80"}).stdout
    words = set(narrow.split())
    # Each `ps` takes its own readings: CPU, RAM and uptime may differ between the two runs.
    readings = re.compile(r"[\d.]+%?")
    assert [
        word
        for word in table[2].split()
        if word not in words and not readings.fullmatch(word) and not word.endswith("s")
    ] == []
    assert narrow.splitlines()[2].split()[:3] == ["llm", "llamacpp", "smollm2"]

    status = json.loads(run_cli("status", "--json", "--no-gpu").stdout)["services"][0]
    assert status["ram_budget_bytes"] == 1024**3
    assert status["ram_used_bytes"] == pytest.approx(expected, rel=0.2)
    assert status["cpu_pct"] is not None

    watch = run_cli("status", "--watch", "--count", "1", "--no-gpu").stdout
    line = next(line for line in watch.splitlines() if " llm engine=llamacpp" in line)
    assert re.search(r" cpu=\d+\.\d% ram=\d+(\.\d)? MiB/1\.0 GiB ", line), line

    from aitherctl.monitor.collect import build_collector

    collector, _ = build_collector(use_gpu=False, use_scheduler=False)
    try:
        first = collector.collect().service("llm")
        again = collector.collect().service("llm")  # CPU % between two refreshes
    finally:
        collector.close()
    assert first is not None
    assert again is not None
    assert first.ram_budget_bytes == 1024**3
    assert again.ram_used_bytes == pytest.approx(expected, rel=0.2)
    assert first.cpu_pct is not None  # two readings 0.2 s apart on the first refresh
    assert again.cpu_pct is not None


def test_a_service_over_its_ram_budget_is_flagged(  # type: ignore[no-untyped-def]
    clean_namespace, write_profile, llama_image
) -> None:
    write_profile("tight-ram", services={"llm": llama_service(free_port(), ram="16MiB")})
    assert run_cli("profile", "switch", "tight-ram", "--yes").returncode == 0
    ps = json.loads(run_cli("ps", "--json").stdout)["services"][0]
    assert ps["over_ram_budget"] is True
    row = run_cli("ps", env={"COLUMNS": "200"}).stdout.splitlines()[2]
    assert re.search(r"  \d+(\.\d)? MiB / 16 MiB over budget  ", row), row
