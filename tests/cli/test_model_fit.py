"""`profile plan`, `validate` and `doctor` on a model's fit, before anything is downloaded or
started: the real SmolLM2 GGUF (scripts/test-env.sh) mounted into a llama.cpp service, planned on
an assumed GPU (no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitherctl.cli import runtime
from aitherctl.cli.app import app
from tests.conftest import MODEL_FILE, MODELS_DIR, _unavailable
from tests.doubles.nvml_double import NvmlDouble

runner = CliRunner()


def invoke(*args: str, columns: int = 200):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns)})


@pytest.fixture
def no_gpu_no_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble(driver_loaded=False))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")


@pytest.fixture
def smol(write_profile):  # type: ignore[no-untyped-def]
    if not (Path(MODELS_DIR) / MODEL_FILE).is_file():
        _unavailable(f"{MODELS_DIR}/{MODEL_FILE} (scripts/test-env.sh)")

    def write(vram: str, args: str = "[-c, '2048']") -> Path:
        return write_profile(
            "smol",
            f"""
            services:
              lm:
                engine: llamacpp
                model: /models/{MODEL_FILE}
                port: 18001
                gpu: 0
                vram: {vram}
                args: {args}
                volumes: {{"{MODELS_DIR}": /models}}
            """,
        )

    return write


# SmolLM2-135M Q4_1: 96,576,768 bytes of tensors; KV f16 at 2,048 cells: 2,048 x 30 layers x
# 3 KV heads x 64 x 2 (K, V) x 2 bytes = 47,185,920 bytes; llama.cpp's overhead 1 GiB.
NEED = "needs about 1.1 GiB"
METHOD = (
    "    weights 92 MiB (Q4_1, exact from the file) + KV 45 MiB at 2,048 tokens shared by 4 "
    "slots (f16) + overhead about 1.0 GiB"
)


def assert_last_lines(stdout: str, expected: list[str]) -> None:
    assert stdout.splitlines()[-len(expected) :] == expected


def method_lines(method: str, columns: int) -> list[str]:
    """The method line as printed: whole at 200 columns; at 80, wrapped between words under
    its own indent (before, one 116-character line the terminal cut mid-word)."""
    if columns >= len(method):
        return [method]
    first, rest = method.split(" tokens ", 1)
    return [first + " tokens", "    " + rest]


@pytest.mark.parametrize("columns", [80, 200])
def test_plan_says_what_the_model_needs_beside_its_budget(
    no_gpu_no_docker, smol, columns: int
) -> None:
    smol("4GiB")
    result = invoke("profile", "plan", "smol", "--gpu-memory", "24GiB", columns=columns)
    assert result.exit_code == 0, result.output
    assert_last_lines(
        result.stdout,
        [
            "Models (an upper bound, before any download):",
            f"  lm                   {NEED}, budget 4.0 GiB",
            *method_lines(METHOD, columns),
        ],
    )
    assert result.stderr == ""


def test_plan_json_gives_the_parts(no_gpu_no_docker, smol) -> None:
    smol("4GiB")
    result = invoke("profile", "plan", "smol", "--gpu-memory", "24GiB", "--json")
    assert result.exit_code == 0, result.output
    [model] = json.loads(result.stdout)["models"]
    kv = 2048 * 30 * 3 * 64 * 2 * 2
    assert model == {
        "service": "lm",
        "verdict": "fits",
        "needed_bytes": 96_576_768 + kv + 1024**3,
        "budget_bytes": 4 * 1024**3,
        "weights_bytes": 96_576_768,
        "weights_method": "Q4_1, exact from the file",
        "kv_cache_bytes": kv,
        "kv_cache_tokens": 2048,
        "kv_cache_sequences": 4,
        "kv_cache_dtype": "f16",
        "overhead_bytes": 1024**3,
        "gpus": 1,
        "fitting_tokens": None,
        "source": f"{MODELS_DIR}/{MODEL_FILE}",
        "summary": f"{NEED}, budget 4.0 GiB",
        "method": METHOD.strip(),
    }


def test_a_budget_that_cannot_hold_the_weights_is_refused_with_file_and_line(
    no_gpu_no_docker, smol
) -> None:
    path = smol("64MiB")
    expected = (
        f"{path}:2: service 'lm': its budget of 64 MiB cannot hold its model's weights alone "
        "(92 MiB, Q4_1, exact from the file): raise `vram` or use a smaller model or quantisation"
    )
    plan = invoke("profile", "plan", "smol", "--gpu-memory", "24GiB", columns=80)
    assert plan.exit_code == 5
    assert plan.stdout == ""
    assert plan.stderr.splitlines() == [f"error: {expected}"]
    validate = invoke("profile", "validate", str(path))
    assert validate.exit_code == 3
    assert validate.stderr.splitlines() == [expected]


@pytest.mark.parametrize("columns", [80, 200])
def test_a_budget_short_of_the_kv_cache_warns_with_the_context_that_fits(
    no_gpu_no_docker, smol, columns: int
) -> None:
    smol("1200MiB", "[-c, '8192']")
    result = invoke("profile", "plan", "smol", "--gpu-memory", "24GiB", columns=columns)
    assert result.exit_code == 0, result.output
    # 1,200 MiB holds the weights but not 1 GiB of overhead plus 180 MiB of KV at 8,192 cells.
    room = 1200 * 1024**2 - 1024**3 - 96_576_768
    fitting = room // (30 * 3 * 64 * 2 * 2) // 256 * 256
    assert result.stderr.splitlines() == [
        "warning: service 'lm': its budget of 1.2 GiB holds the weights but not the KV cache at "
        f"8,192 tokens; --ctx-size {fitting} would fit"
    ]
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines)  # wrapped between words, never cut
    start = lines.index("Models (an upper bound, before any download):") + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("    weights"))
    assert " ".join(" ".join(line.split()) for line in lines[start:end]) == (
        "lm needs about 1.3 GiB, budget 1.2 GiB: the KV cache at 8,192 "
        f"tokens does not fit; {fitting:,} would"
    )


def test_a_model_not_downloaded_is_never_refused(write_profile, no_gpu_no_docker) -> None:
    write_profile(
        "later",
        """
        services:
          lm: {engine: llamacpp, model: /models/none.gguf, port: 18001, gpu: 0, vram: 1MiB,
               volumes: {/nonexistent: /models}}
        """,
    )
    result = invoke("profile", "plan", "later", "--gpu-memory", "24GiB", columns=80)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "  lm                   size unknown until downloaded (no /models/none.gguf yet)"
    )


# On the CPU: the same weights and KV, the compute buffers without a CUDA context (512 MiB).
CPU_NEED = "needs about 649 MiB"
CPU_METHOD = METHOD.replace("overhead about 1.0 GiB", "overhead about 512 MiB")


def _cpu_profile(write_profile, ram: str | None = None) -> Path:  # type: ignore[no-untyped-def]
    if not (Path(MODELS_DIR) / MODEL_FILE).is_file():
        _unavailable(f"{MODELS_DIR}/{MODEL_FILE} (scripts/test-env.sh)")
    service = {
        "engine": "llamacpp", "model": f"/models/{MODEL_FILE}", "port": 18001,
        "gpu": "none", "args": ["-c", "2048"], "volumes": {MODELS_DIR: "/models:ro"},
    }  # fmt: skip
    if ram is not None:
        service["ram"] = ram
    return write_profile("cpu", services={"lm": service})  # type: ignore[no-any-return]


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize(
    ("ram", "budget"),
    [
        (None, "on the CPU, no `ram:` budget"),
        # Before, a CPU service with `ram: 2GiB` said "no GPU budget", as if it had none.
        ("2GiB", "RAM budget 2.0 GiB"),
    ],
)
def test_a_cpu_service_is_weighed_against_its_ram_budget(  # type: ignore[no-untyped-def]
    write_profile, no_gpu_no_docker, columns, ram, budget
):
    _cpu_profile(write_profile, ram)
    result = invoke("profile", "plan", "cpu", columns=columns)
    assert result.exit_code == 0, result.output
    assert_last_lines(
        result.stdout,
        [
            "Models (an upper bound, before any download):",
            f"  lm                   {CPU_NEED}, {budget}",
            *method_lines(CPU_METHOD, columns),
        ],
    )


def test_a_ram_budget_that_cannot_hold_the_weights_is_refused(write_profile, no_gpu_no_docker):  # type: ignore[no-untyped-def]
    """`serve` claims a CPU service's `ram:` from its RAM pool: a budget smaller than the
    weights would let it hold more than it claimed."""
    path = _cpu_profile(write_profile, "64MiB")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "lm:" in text)
    expected = (
        f"{path}:{line}: service 'lm': its RAM budget of 64 MiB cannot hold its model's weights "
        "alone (92 MiB, Q4_1, exact from the file): raise `ram` or use a smaller model or "
        "quantisation"
    )
    plan = invoke("profile", "plan", "cpu", columns=80)
    assert plan.exit_code == 5
    assert plan.stdout == ""
    assert plan.stderr.splitlines()[-1] == f"error: {expected}"  # after: no Docker engine here
    validate = invoke("profile", "validate", str(path))
    assert validate.exit_code == 3
    assert validate.stderr.splitlines() == [expected]


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.doubles.nvml_double import FakeGpu

    monkeypatch.setattr(runtime, "nvml_module", NvmlDouble([FakeGpu(total_bytes=24 * 1024**3)]))


@pytest.mark.docker
def test_switch_and_up_refuse_before_anything_changes(
    clean_namespace, smol, one_gpu, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    path = smol("1%")  # 1% of 24 GiB (245 MiB) holds the 92 MiB of weights
    dry = invoke("profile", "switch", "smol", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    [model] = json.loads(dry.stdout)["models"]
    assert (model["verdict"], model["budget_bytes"]) == ("short-context", 24 * 1024**3 // 100)
    path = smol("0.2%")  # 49 MiB: it does not
    expected = (
        f"error: {path}:2: service 'lm': its budget of 49 MiB cannot hold its model's weights "
        "alone (92 MiB, Q4_1, exact from the file): raise `vram` or use a smaller model or "
        "quantisation"
    )
    monkeypatch.setenv("AITHER_GPU_PROFILE", "smol")  # what `up` brings services up from
    for command in (["profile", "switch", "smol", "--yes"], ["up", "lm", "--yes"]):
        result = invoke(*command, columns=80)
        assert result.exit_code == 5, result.output
        assert result.stderr.splitlines()[0] == expected
    assert clean_namespace.list_managed() == []


@pytest.mark.docker
def test_doctor_lists_a_service_whose_budget_cannot_hold_its_model(
    docker_engine, smol, one_gpu
) -> None:  # type: ignore[no-untyped-def]
    path = smol("0.2%")
    result = invoke("doctor", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    models = next(c for c in data["checks"] if c["name"] == "models")
    assert models["status"] == "fail"
    # How many others are estimated depends on the models this machine has (the built-in `cpu`
    # profile's file is there once the quickstart ran); only this profile's service fails.
    assert models["detail"].startswith("1 service's budget cannot hold its model (")
    assert data["problems"] == [
        f"{path}:2: service 'lm': its budget of 49 MiB cannot hold its model's weights alone "
        "(92 MiB, Q4_1, exact from the file): raise `vram` or use a smaller model or quantisation"
    ]


def test_validate_checks_a_share_against_this_machines_gpu(smol, one_gpu) -> None:  # type: ignore[no-untyped-def]
    path = smol("0.2%")
    result = invoke("profile", "validate", str(path))
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{path}:2: service 'lm': its budget of 49 MiB cannot hold its model's weights alone "
        "(92 MiB, Q4_1, exact from the file): raise `vram` or use a smaller model or quantisation"
    ]
