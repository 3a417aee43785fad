"""The fit estimate against what the real engines say they allocated: a llama.cpp container and
the vLLM CPU server started through a profile with the SmolLM2 files the tests have, their
start-up logs read for the model buffer and the KV cache."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from aitherctl.models.files import read_model_shape
from aitherctl.models.fit import estimate_fit
from aitherctl.profiles.catalog import ProfileCatalog
from aitherctl.units import GIB, MIB
from tests.conftest import VLLM_IMAGE, _need_image, _unavailable, free_port, llama_service, run_cli

pytestmark = pytest.mark.docker
CACHE = Path("/var/cache/aitherctl-test")


def start_and_read_logs(engine: Any, profile: str, service: str) -> str:
    result = run_cli("profile", "switch", profile, "--yes")
    assert result.returncode == 0, result.stderr[-3000:]
    [container] = [item for item in engine.list_managed() if item.service == service]
    return str(engine.logs(container.id, tail=2000))


def memory_lines(logs: str) -> str:
    return "\n".join(line for line in logs.splitlines() if re.search("GiB|MiB|KV|token", line))


def mib_logged(pattern: str, logs: str) -> float:
    found = re.search(pattern + r"\s*=\s*([0-9.]+) MiB", logs)
    assert found, f"no {pattern!r} in the logs:\n{logs[-3000:]}"
    return float(found.group(1))


def test_llamacpp_allocates_what_the_estimate_says(
    clean_namespace: Any, write_profile: Any, llama_image: str
) -> None:
    # 3,000 tokens over 2 slots: llama.cpp pads the cells to 3,072; -lv 4 logs the buffers.
    args = ["--ctx-size", "3000", "--parallel", "2", "--threads", "1", "-lv", "4"]
    write_profile("fit-llama", services={"lm": llama_service(free_port(), args=args)})
    service = ProfileCatalog().load("fit-llama").service("lm")
    estimate = estimate_fit("llamacpp", read_model_shape(service), service.args)
    assert estimate.kv_tokens == 3072

    logs = start_and_read_logs(clean_namespace, "fit-llama", "lm")
    # load_tensors: "CPU_Mapped model buffer size =    92.10 MiB"
    assert mib_logged("model buffer size", logs) == round(estimate.weights_bytes / MIB, 2)
    # llama_kv_cache: "CPU KV buffer size =    67.50 MiB" (3,072 cells x 23,040 bytes)
    assert mib_logged("KV buffer size", logs) == round(estimate.kv_bytes / MIB, 2) == 67.5
    # Its compute buffer (the overhead's CPU part) is well inside the stated 1 GiB.
    assert mib_logged("compute buffer size", logs) * MIB < estimate.overhead_bytes
    assert run_cli("down", "--all", "--yes").returncode == 0


@pytest.mark.vllm
def test_vllm_loads_and_caches_what_the_estimate_says(
    clean_namespace: Any, write_profile: Any
) -> None:
    _need_image(clean_namespace, VLLM_IMAGE)
    venv = Path(os.environ.get("AITHER_TEST_VLLM_VENV", CACHE / "vllm-venv"))
    model = Path(os.environ.get("AITHER_TEST_VLLM_MODEL", CACHE / "models" / "smollm2-hf"))
    if not (venv / ".complete").exists() or not (model / ".complete").exists():
        _unavailable("vLLM venv or model missing: run `bash scripts/test-env.sh`")
    write_profile("fit-vllm", services={
        "smol": {
            "engine": "vllm", "image": VLLM_IMAGE, "model": "/model", "served_name": "smol",
            "port": free_port(), "gpu": "none",
            "args": ["--max-model-len", "2048", "--dtype", "bfloat16", "--enforce-eager"],
            # On the CPU the KV cache is this many GiB, whatever the model.
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "volumes": {str(venv): "/opt/vllm:ro", str(model): "/model:ro"},
            "health": {"timeout": 600},
        },
    })  # fmt: skip
    service = ProfileCatalog().load("fit-vllm").service("smol")
    shape = read_model_shape(service)
    estimate = estimate_fit("vllm", shape, service.args, on_cpu=True, env=service.env)
    # The file holds float32; --dtype bfloat16 loads 2 bytes a parameter.
    assert estimate.weights_bytes == shape.parameters * 2 == shape.weights_bytes // 2

    logs = start_and_read_logs(clean_namespace, "fit-vllm", "smol")
    # The CPU runner does not log the bytes it loaded ("Model loading took" is the GPU
    # runner's): the checkpoint it read and the dtype it loads at are what it says.
    checkpoint = re.search(r"Checkpoint size: ([0-9.]+) GiB", logs)
    assert checkpoint, memory_lines(logs)
    assert float(checkpoint.group(1)) == round(shape.weights_bytes / GIB, 2)
    assert f"dtype=torch.{estimate.kv_dtype}," in logs
    cached = re.search(r"KV cache size: ([0-9,]+) tokens", logs)
    assert cached, memory_lines(logs)
    tokens = int(cached.group(1).replace(",", ""))
    # VLLM_CPU_KVCACHE_SPACE=1: 1 GiB in whole 16-token blocks at the estimate's bytes a token
    # (2 x 30 layers x 3 KV heads x 64 x 2 bytes = 23,040), whatever --max-model-len says: the
    # estimate counts what vLLM allocates.
    assert estimate.kv_bytes_per_token == 23_040
    assert tokens == estimate.kv_tokens == GIB // (23_040 * 16) * 16 == 46_592
    assert estimate.kv_bytes == GIB
    assert run_cli("down", "--all", "--yes").returncode == 0
