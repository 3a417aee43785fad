"""`profile plan`: what a switch would do, on this machine or on GPUs assumed with --gpu-memory."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aitherctl.cli import runtime
from aitherctl.cli.app import app
from tests.doubles.nvml_double import NvmlDouble

runner = CliRunner()


def invoke(*args: str, columns: int = 200):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns)})


@pytest.fixture
def no_gpu_no_docker(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")


DEV_24 = [
    "plan → dev",
    "action  service       engine  port  gpu  vram     why",
    "start   coding        vllm    8200  0    4.3 GiB  new",
    "start   embeddings    vllm    8209  0    1.2 GiB  new",
    "start   orchestrator  vllm    8120  0    8.4 GiB  new",
    "start   vision        vllm    8201  0    2.9 GiB  new",
    "GPU 0 (assumed, 24.0 GiB):",
    "  coding                  4.3 GiB  18.0%",
    "  embeddings              1.2 GiB   5.0%",
    "  orchestrator            8.4 GiB  35.0%",
    "  vision                  2.9 GiB  12.0%",
    "  reserve                 2.4 GiB  10.0%",
    "  needed                 19.2 GiB  of 24.0 GiB: fits, 4.8 GiB spare",
]


@pytest.mark.parametrize("columns", [80, 200])
def test_plan_with_assumed_gpu_memory_needs_no_gpu(no_gpu_no_docker, columns: int) -> None:
    result = invoke("profile", "plan", "dev", "--gpu-memory", "24GiB", columns=columns)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == DEV_24
    assert result.stderr == ""


def test_plan_with_one_size_per_gpu_and_json(no_gpu_no_docker, write_profile) -> None:
    write_profile(
        "two",
        """
        services:
          a: {engine: vllm, model: m, port: 18001, gpu: 0, vram: 50%}
          b: {engine: vllm, model: m, port: 18002, gpu: 1, vram: 50%}
        """,
    )
    result = invoke("profile", "plan", "two", "--gpu-memory", "0=24GiB,1=48GiB", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [
        (g["index"], g["name"], g["total_bytes"], g["needed_bytes"]) for g in data["vram"]["gpus"]
    ] == [
        (0, "assumed", 24 * 1024**3, 12 * 1024**3 + int(24 * 1024**3 * 0.05)),
        (1, "assumed", 48 * 1024**3, 24 * 1024**3 + int(48 * 1024**3 * 0.05)),
    ]
    missing = invoke("profile", "plan", "two", "--gpu-memory", "0=24GiB")
    assert missing.exit_code == 2
    assert missing.stderr == "error: --gpu-memory gives no total for GPU 1\n"


def test_plan_on_an_assumed_gpu_too_small_gives_the_arithmetic(
    no_gpu_no_docker, write_profile
) -> None:
    write_profile(
        "big",
        """
        gpu: {reserve: 2GiB}
        services:
          lm: {engine: vllm, model: org/big, port: 18001, gpu: 0, vram: 14GiB}
        """,
    )
    result = invoke("profile", "plan", "big", "--gpu-memory", "12GiB", columns=80)
    assert result.exit_code == 5
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: profile 'big' does not fit in VRAM on GPU 0 (missing 4.0 GiB)",
        "GPU 0 (assumed, 12.0 GiB):",
        "  lm                     14.0 GiB  116.7%",
        "  reserve                 2.0 GiB  16.7%",
        "  needed                 16.0 GiB  of 12.0 GiB: missing 4.0 GiB",
    ]
    fits = invoke("profile", "plan", "big", "--gpu-memory", "24GiB", columns=80)
    assert fits.exit_code == 0
    assert fits.stdout.splitlines()[-1] == (
        "  needed                 16.0 GiB  of 24.0 GiB: fits, 8.0 GiB spare"
    )


def test_plan_of_a_gpu_profile_without_gpu_or_docker_refuses_and_says_how_to_see_it(
    no_gpu_no_docker,
) -> None:
    """It used to print an empty plan and exit 0: the GPU services were silently left out."""
    result = invoke("profile", "plan", "dev", columns=80)
    assert result.exit_code == 5
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: cannot reach the Docker engine at unix://")
    assert lines[1:] == [
        "error: profile 'dev' needs a GPU for orchestrator, coding, vision, embeddings, but no "
        "NVIDIA driver (Driver Not Loaded)",
        "CPU services still run: try `aitherctl profile switch cpu`.",
        "Its plan for a GPU of a given size: `aitherctl profile plan dev --gpu-memory 24GiB`.",
    ]
