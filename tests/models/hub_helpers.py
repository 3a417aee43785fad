"""The Hugging Face Hub contract double, filled with the SmolLM2 files the tests already have
(scripts/test-env.sh: AITHER_TEST_MODELS, AITHER_TEST_VLLM_MODEL)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MODEL_FILE, MODELS_DIR, REQUIRE
from tests.doubles.hf_hub import HubState

GGUF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
HF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
GATED_REPO = "meta-llama/SmolLM2-gated"
TOKEN = "hf_test_token_granted"  # the double's own token, not a secret
TOKEN_NOT_GRANTED = "hf_test_token_not_granted"
VLLM_MODEL = Path(os.environ.get("AITHER_TEST_VLLM_MODEL", f"{MODELS_DIR}/smollm2-hf"))
VLLM_VENV = Path(os.environ.get("AITHER_TEST_VLLM_VENV", "/var/cache/aitherctl-test/vllm-venv"))


def need(path: Path) -> Path:
    if not path.exists():
        if REQUIRE:
            pytest.fail(f"integration prerequisite missing: {path} (scripts/test-env.sh)")
        pytest.skip(f"{path} missing (scripts/test-env.sh)")
    return path


def hub_state() -> HubState:
    gguf = need(Path(MODELS_DIR) / MODEL_FILE)
    state = HubState(tokens={TOKEN, TOKEN_NOT_GRANTED}, granted={TOKEN})
    state.add_repo(GGUF_REPO, {MODEL_FILE: gguf})
    state.add_repo(GATED_REPO, {MODEL_FILE: gguf}, gated=True)
    folder = VLLM_MODEL
    if folder.is_dir():
        state.add_repo(
            HF_REPO, {p.name: p for p in sorted(folder.iterdir()) if not p.name.startswith(".")}
        )
    return state


def assert_llama_answers(port: int) -> dict[str, Any]:
    """The llama.cpp server on this loopback port answers a short chat (the model it was
    started on is really there and loads); its answer."""
    import httpx

    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "smollm2", "max_tokens": 4, "temperature": 0,
              "messages": [{"role": "user", "content": "Say hi"}]},
        timeout=120,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data
