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
    # dev's fifth service: the plan says where it went.
    "on demand, not started by a switch: reasoning (vllm, 9.6 GiB)",
    "  `aitherctl up reasoning` or a request through `serve` starts it",
    "GPU 0 (assumed, 24.0 GiB):",
    "  coding                  4.3 GiB  18.0%",
    "  embeddings              1.2 GiB   5.0%",
    "  orchestrator            8.4 GiB  35.0%",
    "  vision                  2.9 GiB  12.0%",
    "  reserve                 2.4 GiB  10.0%",
    "  needed                 19.2 GiB  of 24.0 GiB: fits, 4.8 GiB spare",
    "Models (an upper bound, before any download):",
]
MODELS = ("orchestrator", "reasoning", "coding", "vision", "embeddings")
UNKNOWN = "size unknown until downloaded (not in the Hugging Face"


def dev_24(columns: int) -> list[str]:
    """At 80 columns each model's line wraps between words under its text (before, the
    terminal cut it mid-word); at 200 it is whole."""
    if columns >= 200:
        return DEV_24 + [f"  {name:<20} {UNKNOWN} cache yet)" for name in MODELS]
    return DEV_24 + [
        line for name in MODELS for line in (f"  {name:<20} {UNKNOWN}", " " * 23 + "cache yet)")
    ]


@pytest.mark.parametrize("columns", [80, 200])
def test_plan_with_assumed_gpu_memory_needs_no_gpu(no_gpu_no_docker, columns: int) -> None:
    result = invoke("profile", "plan", "dev", "--gpu-memory", "24GiB", columns=columns)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == dev_24(columns)
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
    assert fits.stdout.splitlines()[-4:] == [
        "  needed                 16.0 GiB  of 24.0 GiB: fits, 8.0 GiB spare",
        "Models (an upper bound, before any download):",
        "  lm                   size unknown until downloaded (in Docker volume",
        "                       'aither-hf-cache', not read from here)",
    ]


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
        # Without an engine no profile whose images are here can be named (the built-in cpu's
        # image may not be pullable): how to find one instead.
        "CPU services still can: `aitherctl profile plan NAME` says whether a profile's images "
        "are on the Docker engine (`bash scripts/quickstart.sh` builds an image and a "
        "`cpu-local` profile that uses it).",
        "Its plan for a GPU of a given size: `aitherctl profile plan dev --gpu-memory 24GiB`.",
    ]


# ---- images: a plan says what a switch would refuse ---------------------------------------------

UNREACHABLE = "127.0.0.1:1/aither-none:1"  # a registry nothing listens on: refused at once


@pytest.mark.docker
@pytest.mark.parametrize("columns", [80, 200])
def test_plan_says_an_image_is_missing_and_cannot_be_pulled(
    docker_engine, base_image, write_profile, monkeypatch, columns: int
) -> None:
    """It used to print the plan and exit 0; the switch then refused."""
    from tests.conftest import free_port, web_service

    port = free_port()
    write_profile("lost", services={"web": {**web_service(port), "image": UNREACHABLE}})
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    result = invoke("profile", "plan", "lost", columns=columns)
    assert result.exit_code == 5
    assert result.stdout.splitlines() == [
        "plan → lost",
        "action  service  engine   port   gpu  vram  why",
        f"start   web      generic  {port}  cpu  -     new",
    ]
    assert result.stderr.splitlines() == [
        f"error: image {UNREACHABLE} is not on this engine and cannot be pulled (127.0.0.1:1 "
        "cannot be reached: connection refused); a switch refuses it",
        "Build or load it (`docker load`), or give the service another `image`.",
    ]
    data = json.loads(invoke("profile", "plan", "lost", "--json").stdout)
    assert data["images"] == [
        {
            "image": UNREACHABLE,
            "present": False,
            "pullable": False,
            "reason": "127.0.0.1:1 cannot be reached: connection refused",
        }
    ]
    # An image that is there is not mentioned.
    write_profile("here", services={"web": web_service(port)})
    here = invoke("profile", "plan", "here")
    assert here.exit_code == 0, here.stderr
    assert here.stderr == ""
    assert len(here.stdout.splitlines()) == 3
    assert json.loads(invoke("profile", "plan", "here", "--json").stdout)["images"] == [
        {"image": base_image, "present": True, "pullable": True, "reason": None}
    ]


def test_a_missing_image_that_can_be_pulled_is_one_line_of_the_plan() -> None:
    from aitherctl.switching.images import ImageStatus

    assert ImageStatus("a/b:1", present=True).describe() == ""
    assert ImageStatus("a/b:1", present=False).describe() == (
        "image a/b:1 is not on this engine; the switch pulls it first"
    )
    assert ImageStatus("a/b:1", False, "r.io cannot be reached: no such host").usable is False


@pytest.mark.docker
def test_no_gpu_hint_names_a_cpu_profile_whose_image_is_here(
    docker_engine, base_image, write_profile, monkeypatch
) -> None:
    """The hint used to be `profile switch cpu` even where cpu's image cannot be pulled."""
    from aitherctl.profiles.catalog import ProfileCatalog
    from aitherctl.switching.specs import build_specs
    from tests.conftest import free_port, web_service

    cpu = build_specs(ProfileCatalog().load("cpu"), {}).resident["assistant"].image
    if docker_engine.image_exists(cpu) or docker_engine.pull_refusal(cpu) is None:
        pytest.skip(f"{cpu} is usable here: the built-in cpu is then the right hint")
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    result = invoke("profile", "plan", "dev")
    assert result.exit_code == 5
    assert result.stderr.splitlines()[1] == (
        "No profile without a GPU has its image on this engine, and none can be pulled: `bash "
        "scripts/quickstart.sh` builds a llama.cpp image and a `cpu-local` profile that uses it."
    )
    write_profile("cpu-mine", services={"web": web_service(free_port())})
    result = invoke("profile", "plan", "dev")
    assert result.stderr.splitlines()[1] == (
        "CPU services still run: try `aitherctl profile switch cpu-mine`."
    )


NODES_PROFILE = """
services:
  a: {engine: vllm, model: m, port: 18001, gpu: 0, vram: 50%}
nodes:
  reasoning:
    provider: vast
    gpu: RTX 3090
    vram: 24GiB
    max_price_per_hour: 0.2
    engine: vllm
    model: casperhansen/deepseek-r1-distill-qwen-14b-awq
    wake_on: {effort: 7, queue_depth: 3}
    idle_after: 15m
  orch: {provider: vast, gpu: RTX 4090, max_price_per_hour: 0.3, engine: llamacpp,
         model: /m/orch.gguf, always_on: true}
cloud: {daily_cap: 5, warn_at: 80%}
"""


@pytest.mark.parametrize("columns", [80, 200])
def test_plan_shows_the_cloud_nodes_and_the_budget(
    no_gpu_no_docker, write_profile, columns: int
) -> None:
    write_profile("withnodes", NODES_PROFILE)
    result = invoke("profile", "plan", "withnodes", "--gpu-memory", "24GiB", columns=columns)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-8:] == [
        "Cloud nodes (rented; a switch does not create them):",
        "  reasoning: vast RTX 3090 ≥24.0 GiB, at most $0.200/h",
        "    vllm casperhansen/deepseek-r1-distill-qwen-14b-awq",
        "    on demand: wakes at effort 7 or 3 waiting, destroyed after 15 min idle",
        "  orch: vast RTX 4090, at most $0.300/h",
        "    llamacpp /m/orch.gguf",
        "    always on (replaced when it dies)",
        "  budget: $5.00 a day, warning at 80% ($4.00), hard stop",
    ]
    as_json = invoke("profile", "plan", "withnodes", "--gpu-memory", "24GiB", "--json")
    nodes = json.loads(as_json.stdout)["nodes"]
    assert [(n["name"], n["mode"], n["port"]) for n in nodes["nodes"]] == [
        ("reasoning", "on_demand", 8000),
        ("orch", "always_on", 8080),
    ]
    assert nodes["cloud"] == {"daily_cap_usd": 5.0, "warn_share": 0.8, "hard_stop": True}


def test_show_lists_the_nodes_too(write_profile) -> None:  # type: ignore[no-untyped-def]
    write_profile("withnodes", NODES_PROFILE)
    result = invoke("profile", "show", "withnodes", columns=80)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-8:] == [
        "Cloud nodes (rented; a switch does not create them):",
        "  reasoning: vast RTX 3090 ≥24.0 GiB, at most $0.200/h",
        "    vllm casperhansen/deepseek-r1-distill-qwen-14b-awq",
        "    on demand: wakes at effort 7 or 3 waiting, destroyed after 15 min idle",
        "  orch: vast RTX 4090, at most $0.300/h",
        "    llamacpp /m/orch.gguf",
        "    always on (replaced when it dies)",
        "  budget: $5.00 a day, warning at 80% ($4.00), hard stop",
    ]
    shown = json.loads(invoke("profile", "show", "withnodes", "--json").stdout)
    assert [n["name"] for n in shown["nodes"]["nodes"]] == ["reasoning", "orch"]
