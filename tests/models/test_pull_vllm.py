"""What `pull` puts in the Hugging Face cache is what the real vLLM server loads: the service
names the Hub id, its container has no Hub to ask (HF_HUB_OFFLINE=1), and `--no-pull` proves
the switch sees the model as downloaded."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import VLLM_IMAGE, _need_image, _unavailable, free_port, run_cli
from tests.doubles.hf_hub import serve_hub
from tests.models.hub_helpers import HF_REPO, VLLM_MODEL, VLLM_VENV, hub_state

pytestmark = [pytest.mark.docker, pytest.mark.vllm]


def test_vllm_serves_the_model_pull_put_in_its_cache(
    clean_namespace, write_profile, tmp_path
) -> None:
    _need_image(clean_namespace, VLLM_IMAGE)
    if not (VLLM_VENV / ".complete").exists() or not (VLLM_MODEL / ".complete").exists():
        _unavailable("vLLM venv or model missing: run `bash scripts/test-env.sh`")
    cache, port = tmp_path / "hf", free_port()
    write_profile("pulled-vllm", services={
        "smol": {
            "engine": "vllm", "image": VLLM_IMAGE, "model": HF_REPO, "served_name": "smol",
            "port": port, "gpu": "none",
            "args": ["--max-model-len", "2048", "--dtype", "bfloat16", "--enforce-eager"],
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
            "volumes": {str(VLLM_VENV): "/opt/vllm:ro", str(cache): "/root/.cache/huggingface"},
            "health": {"timeout": 420},
        },
    })  # fmt: skip
    try:
        with serve_hub(hub_state()) as endpoint:
            pulled = run_cli("pull", "pulled-vllm", env={"HF_ENDPOINT": endpoint})
        assert pulled.returncode == 0, pulled.stderr
        switched = run_cli("profile", "switch", "pulled-vllm", "--yes", "--no-pull")
        assert switched.returncode == 0, switched.stderr[-3000:]
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, json={
            "model": "smol", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hello."}],
        }).json()  # fmt: skip
        assert answer["choices"][0]["message"]["content"].strip()
    finally:
        run_cli("down", "--all", "--yes")
