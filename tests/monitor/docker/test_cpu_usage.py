"""CPU services show their real CPU and RAM use against their `ram:` budget in `ps`, `status`
and the monitor, read from the container's cgroup as `docker stats` reads it. A real llama.cpp
server with SmolLM2 on the CPU, on the real engine."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests.conftest import free_port, llama_service, run_cli, sdk_of, web_service

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
    # No GPU or VRAM column where no GPU service runs.
    assert table[1].split() == [
        "service",
        "engine",
        "model",
        "state",
        "health",
        "port",
        "cpu",
        "ram",
        "up",
    ]
    assert re.search(r"  \d+\.\d%  \d+(\.\d)? MiB / 1\.0 GiB  ", table[2]), table[2]
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
    # At 80 columns `ps` may leave out whole columns (named under the table), never a word.
    row = narrow.splitlines()[2].split()
    assert row[0] == "llm"
    assert "smollm2" in row

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
    # A generic service (no model to weigh before it starts): Python's http.server holds about
    # 10 MiB.
    write_profile("tight-ram", services={"web": {**web_service(free_port()), "ram": "2MiB"}})
    assert run_cli("profile", "switch", "tight-ram", "--yes").returncode == 0
    ps = json.loads(run_cli("ps", "--json").stdout)["services"][0]
    assert ps["over_ram_budget"] is True
    row = run_cli("ps", env={"COLUMNS": "200"}).stdout.splitlines()[2]
    assert re.search(r"  \d+(\.\d)? MiB / 2 MiB over budget  ", row), row


def test_a_cpu_services_real_memory_stays_under_its_estimate(  # type: ignore[no-untyped-def]
    clean_namespace, write_profile, llama_image
) -> None:
    """The plan's "needs about" for a CPU llama.cpp service is what `serve` may claim from
    its RAM pool: the server's real use, after it has answered, is below it; a `ram:` that
    cannot hold the weights is refused before anything starts."""
    port = free_port()
    write_profile("cpu-fit", services={"llm": llama_service(port, ram="1GiB")})
    plan = json.loads(run_cli("profile", "plan", "cpu-fit", "--json").stdout)
    (fit,) = plan["models"]
    assert fit["summary"].endswith("RAM budget 1.0 GiB"), fit
    assert run_cli("profile", "switch", "cpu-fit", "--yes").returncode == 0
    body = json.dumps(
        {"messages": [{"role": "user", "content": "Count to twenty."}], "max_tokens": 64}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
    (container,) = [item for item in clean_namespace.list_managed() if item.running]
    used = docker_stats_memory(clean_namespace, container.id)
    resident = _resident_bytes(clean_namespace, container.id)
    assert 0 < used <= fit["needed_bytes"]
    assert 0 < resident <= fit["needed_bytes"], (resident, fit)

    write_profile("cpu-tight", services={"llm": llama_service(free_port(), ram="64MiB")})
    refused = run_cli("profile", "switch", "cpu-tight", "--yes")
    assert refused.returncode == 5
    assert "its RAM budget of 64 MiB cannot hold its model's weights alone" in refused.stderr
    assert [item.name for item in clean_namespace.list_managed() if item.running] == [
        container.name
    ]  # nothing changed


def _resident_bytes(engine, container_id: str) -> int:  # type: ignore[no-untyped-def]
    """The server's resident set (anonymous and file-backed pages: the mapped weights too)."""
    top = sdk_of(engine).api.top(container_id, ps_args="-o pid,rss")
    column = top["Titles"].index("RSS")
    return sum(int(row[column]) * 1024 for row in top["Processes"])
