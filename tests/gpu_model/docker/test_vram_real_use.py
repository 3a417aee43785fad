"""A budget no engine flag enforces (llama.cpp, Ollama) is checked against real use: `ps` flags a
service that holds more than its budget, and the planner counts it at what it holds.

The service is a real container on the real engine, labelled exactly as a switch labels a GPU
service (no GPU can run here, so it is created without a device request); the NVML contract
double (tests/doubles/nvml_double.py) reports 3 GiB on GPU 0 for that container's real host PID,
against its 2 GiB budget, as NVML's per-process list would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import BASE_IMAGE, free_port, sdk_of
from tests.doubles.nvml_double import GIB, FakeGpu, NvmlDouble

pytestmark = pytest.mark.docker


@pytest.fixture
def greedy(clean_namespace: Any, write_profile: Any, base_image: str) -> dict[str, Any]:
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.specs import build_specs

    port = free_port()
    write_profile(
        "greedy",
        services={
            "llm": {
                "engine": "llamacpp",
                "model": "/models/m.gguf",
                "port": port,
                "gpu": 0,
                "vram": "2GiB",
            }
        },
    )
    spec = build_specs(ProfileCatalog().load("greedy"), {0: 24 * GIB}).resident["llm"]
    engine = clean_namespace
    client = sdk_of(engine).api
    created = client.create_container(
        image=BASE_IMAGE,
        command=["python3", "-m", "http.server", "8080"],
        name=f"aither-{engine.namespace}-llm",
        labels=spec.labels(engine.namespace, "greedy"),
        ports=[8080],
        host_config=client.create_host_config(port_bindings={8080: ("127.0.0.1", port)}),
    )
    client.start(created["Id"])
    pid = client.inspect_container(created["Id"])["State"]["Pid"]
    return {"engine": engine, "pid": pid, "port": port}


def test_ps_flags_a_service_over_its_budget(
    greedy: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aitherctl.cli import runtime
    from aitherctl.cli.app import app

    double = NvmlDouble([FakeGpu(total_bytes=24 * GIB, processes=[(greedy["pid"], 3 * GIB)])])
    monkeypatch.setattr(runtime, "nvml_module", double)
    result = CliRunner().invoke(app, ["ps", "--json"])
    assert result.exit_code == 0, result.output
    row = next(item for item in json.loads(result.stdout)["services"] if item["service"] == "llm")
    assert row["vram_budget_bytes"] == 2 * GIB
    assert row["vram_used_bytes"] == 3 * GIB
    assert row["over_budget"] is True
    table = CliRunner().invoke(app, ["ps"])
    assert "over budget" in table.stdout


def test_the_planner_counts_a_kept_service_at_what_it_really_holds(
    greedy: dict[str, Any], write_profile: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An 8 GiB card: `llm` (budget 2 GiB) holds 3 GiB, another process 2 GiB, reserve 1 GiB.
    Adding a 2.5 GiB service fits by budgets (2 + 2.5 + 1 + 2 = 7.5) but not by what `llm`
    really holds (3 + 2.5 + 1 + 2 = 8.5): refused, with `llm` at 3 GiB in the arithmetic."""
    from aitherctl.cli import runtime
    from aitherctl.cli.app import app

    double = NvmlDouble(
        [
            FakeGpu(
                total_bytes=8 * GIB,
                used_bytes=5 * GIB,
                processes=[(greedy["pid"], 3 * GIB), (4242, 2 * GIB)],
            )
        ]
    )
    monkeypatch.setattr(runtime, "nvml_module", double)
    write_profile(
        "greedy-plus",
        extends="greedy",
        gpu={"reserve": "1GiB"},
        services={
            "small": {
                "engine": "llamacpp",
                "model": "/models/s.gguf",
                "port": free_port(),
                "gpu": 0,
                "vram": "2560MiB",
            }
        },
    )
    result = CliRunner().invoke(app, ["profile", "plan", "greedy-plus"])
    assert result.exit_code == 5, result.output
    assert "needed                  8.5 GiB  of 8.0 GiB: missing 512 MiB" in result.stderr
    assert any(
        line.split()[:2] == ["llm", "3.0"] and "uses 3.0 GiB, over budget" in line
        for line in result.stderr.splitlines()
    ), result.stderr
