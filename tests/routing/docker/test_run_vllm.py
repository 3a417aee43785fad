"""The real vLLM CPU server as a routing candidate: it answers, and its real `/metrics`
(`vllm:num_requests_waiting`) feed the queue check that overflows to the next candidate.

The container is started here with the docker SDK (own name and labels, removed at the end):
image aither-test/vllm-cpu:latest with the vLLM venv and the Hugging Face copy of SmolLM2 that
scripts/test-env.sh prepares. Start-up takes a minute or two on the CPU.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aitherctl.routing.probes import queue_waiting_from_metrics
from aitherctl.routing.router import RunOptions
from tests.conftest import MODELS_DIR, VLLM_IMAGE
from tests.doubles.chat_server import chat_double
from tests.routing.docker.routing_helpers import router_for

pytestmark = [pytest.mark.docker, pytest.mark.vllm]

VENV = os.environ.get("AITHER_TEST_VLLM_VENV", "/var/cache/aitherctl-test/vllm-venv")
HF_MODEL = os.environ.get("AITHER_TEST_VLLM_MODEL", f"{MODELS_DIR}/smollm2-hf")


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("AITHER_REQUIRE_INTEGRATION") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def vllm_url() -> Iterator[str]:
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
        client.images.get(VLLM_IMAGE)
    except Exception as exc:
        _skip_or_fail(f"vLLM image or Docker engine unavailable: {exc}")
        return
    if not Path(HF_MODEL, "config.json").is_file() or not Path(VENV, "bin").is_dir():
        _skip_or_fail("vLLM venv or model missing: run `bash scripts/test-env.sh`")
        return
    container = client.containers.run(
        VLLM_IMAGE,
        [
            "--model",
            "/model",
            "--served-model-name",
            "smol",
            "--max-model-len",
            "1024",
            "--dtype",
            "bfloat16",
            "--enforce-eager",
            "--max-num-seqs",
            "1",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
        ],
        name=f"aither-routing-vllm-{uuid.uuid4().hex[:8]}",
        labels={"ai.aitherctl.test": "routing"},
        detach=True,
        shm_size="512m",  # vLLM's shared-memory ring buffer needs 160 MiB; Docker gives 64
        ports={"8000/tcp": ("127.0.0.1", None)},
        volumes={
            VENV: {"bind": "/opt/vllm", "mode": "ro"},
            HF_MODEL: {"bind": "/model", "mode": "ro"},
        },
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running":
                logs = container.logs(tail=30).decode(errors="replace")
                pytest.fail(f"vLLM exited:\n{logs}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("vLLM did not become healthy in 400 s")
        yield url
    finally:
        container.remove(force=True)


def _profile(vllm: str, fallback: str) -> str:
    return f"""
        name: vl
        services: {{}}
        routing:
          max_tokens: 16
          tiers:
            all: {{effort: 1-10, candidates: [vllm, fallback], max_queue: 0, timeout_s: 120}}
        endpoints:
          vllm: {{base_url: "{vllm}/v1", model: smol, engine: vllm, health: /health}}
          fallback: {{base_url: "{fallback}/v1", model: double, engine: llamacpp}}
    """


def _keep_busy(url: str, stop: threading.Event) -> None:
    """Keep one long generation in vLLM until `stop`: a request that ends or fails (a CI
    machine under load can drop one) is sent again, so the queue stays occupied."""
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Count to a thousand."}],
        "max_tokens": 900,
        "ignore_eos": True,
        "stream": True,
    }
    while not stop.is_set():
        try:
            with httpx.stream(
                "POST", url + "/v1/chat/completions", json=body, timeout=300
            ) as answer:
                for _ in answer.iter_bytes():
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            time.sleep(0.2)


def _waiting(url: str) -> float | None:
    return queue_waiting_from_metrics(httpx.get(url + "/metrics", timeout=5).text, "vllm")


def test_vllm_answers_and_its_queue_overflows(
    vllm_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AITHER_STATE_DIR", str(tmp_path / "state"))
    assert _waiting(vllm_url) == 0.0  # the real metric is there, and idle
    with (
        chat_double() as fallback,
        router_for(tmp_path, "vl", _profile(vllm_url, fallback.root)) as router,
    ):
        result = router.run(RunOptions("What is the capital of France?"), lambda _: None)
        assert result.backend == "vllm"
        assert result.answer.strip()
        assert result.tokens_out
        assert result.tokens_in

        stop = threading.Event()
        busy = [
            threading.Thread(target=_keep_busy, args=(vllm_url, stop), daemon=True)
            for _ in range(3)
        ]
        for thread in busy:
            thread.start()
        try:
            # --max-num-seqs 1: one of the three runs, the others wait in vLLM's own queue
            deadline = time.monotonic() + 120
            while (_waiting(vllm_url) or 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert (_waiting(vllm_url) or 0) >= 1, [t.is_alive() for t in busy]
            overflow = router.run(RunOptions("Name a colour."), lambda _: None)
        finally:
            stop.set()
        for thread in busy:
            thread.join(timeout=120)
    assert overflow.backend == "fallback"
    assert overflow.attempts[0].reason is not None
    assert overflow.attempts[0].reason.endswith("> max_queue 0 (vllm:num_requests_waiting)")
