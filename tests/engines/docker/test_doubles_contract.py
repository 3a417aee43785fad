"""The contract doubles (tests/doubles/images.py) behave as their docstrings say, as containers on
the real Docker engine, started through aitherctl's own drivers from profile entries.

What this proves for the scheduler's tests: a profile service with `engine: vllm` and the
vLLM double's image is ready by the driver's readiness checks, sleeps and wakes as vLLM does
(requests that arrive while it sleeps wait for the wake, a sleep aborts what is in flight) and
records every such hazard; the Ollama double loads on first use, unloads on `keep_alive: 0` only
once its requests have ended and drops idle models after `keep_alive`; ComfyUI's `/free` is
applied between prompts, not during one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml

from aitherctl.engines.registry import build_container
from aitherctl.engines.vllm import parse_vllm_metrics
from aitherctl.monitor.unload import free_vram
from aitherctl.profiles.loader import load_profile_text
from aitherctl.profiles.profile import Service
from aitherctl.switching.readiness import probe_plain
from tests.conftest import free_port
from tests.doubles.images import (
    comfyui_double_image,
    comfyui_service,
    double_state,
    hazards,
    ollama_double_image,
    ollama_service,
    vllm_sleep_image,
    vllm_sleep_service,
)

pytestmark = pytest.mark.docker

__all__ = ["comfyui_double_image", "ollama_double_image", "vllm_sleep_image"]  # fixtures

CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


def service_from(name: str, entry: dict[str, object]) -> Service:
    """The service a profile file with this entry declares (the loader, not a hand-built one)."""
    profile = load_profile_text(yaml.safe_dump({"services": {name: entry}}), "doubles.yaml")
    return profile.services[name]


@pytest.fixture
def run(clean_namespace: Any) -> Any:
    """start(service) -> base URL: creates and starts its container, waits for readiness."""
    engine = clean_namespace

    def start(service: Service) -> str:
        spec = build_container(service, {})
        container_id: str = engine.create(spec, f"double-{service.name}")
        engine.start(container_id)
        deadline = time.monotonic() + 30
        while True:
            result = probe_plain("127.0.0.1", service.port, spec.readiness.checks)
            if result.ok:
                return f"http://127.0.0.1:{service.port}"
            if time.monotonic() > deadline:
                pytest.fail(f"not ready: {result.detail}\n{engine.logs(container_id)}")
            time.sleep(0.1)

    return start


def in_thread(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except Exception as exc:  # surfaced by the assertion that reads the box
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


# -- vLLM ---------------------------------------------------------------------------------------
def test_vllm_double_serves_openai_and_sleeps_like_vllm(vllm_sleep_image: str, run: Any) -> None:
    port = free_port()
    service = service_from("coder", vllm_sleep_service(port, served_name="coder"))
    base = run(service)
    http = httpx.Client(base_url=base, trust_env=False, timeout=10)

    assert http.get("/health").status_code == 200
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["coder"]
    from openai import OpenAI

    direct = httpx.Client(trust_env=False)
    client = OpenAI(base_url=base + "/v1", api_key="none", http_client=direct)  # type: ignore[arg-type]
    answer = client.chat.completions.create(model="coder", **CHAT)  # type: ignore[call-overload]
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content
    chunks = list(
        client.chat.completions.create(  # type: ignore[call-overload]
            model="coder", stream=True, stream_options={"include_usage": True}, **CHAT
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 8
    completion = client.completions.create(model="coder", prompt="hi", max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    missing = http.post("/v1/chat/completions", json={"model": "nope", **CHAT})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFoundError"

    # A request in flight shows in the metrics the router reads.
    thread, _ = in_thread(
        lambda: http.post("/v1/chat/completions", json={"model": "coder", **CHAT})
    )
    time.sleep(0.08)
    assert parse_vllm_metrics(http.get("/metrics").text).requests_running == 1
    thread.join()

    awake = double_state(port)["memory"]["device_bytes"]
    assert awake == 3 * 1024**3
    assert hazards(double_state(port)) == {}

    # Sleep level 1: weights to CPU, KV cache gone, the engine says it sleeps.
    assert http.post("/sleep", params={"level": 1}).status_code == 200
    assert http.get("/is_sleeping").json() == {"is_sleeping": True}
    state = double_state(port)
    assert state["memory"]["device_bytes"] == 0
    assert state["memory"]["cpu_offload_bytes"] == 1024**3
    assert 'sleep_state="weights_offloaded"} 1.0' in http.get("/metrics").text

    # A request sent while it sleeps is queued, not refused, and answered after the wake.
    thread, box = in_thread(
        lambda: http.post("/v1/chat/completions", json={"model": "coder", **CHAT})
    )
    time.sleep(0.3)
    assert thread.is_alive()
    assert parse_vllm_metrics(http.get("/metrics").text).requests_waiting == 1
    started = time.monotonic()
    assert http.post("/wake_up").status_code == 200
    assert time.monotonic() - started >= 0.2  # /wake_up answers once the weights are back
    thread.join(5)
    assert box["result"].json()["choices"][0]["finish_reason"] == "stop"
    assert http.get("/is_sleeping").json() == {"is_sleeping": False}
    assert double_state(port)["memory"]["device_bytes"] == awake

    # Waking an awake engine, and sleeping one with a request in flight (mode=abort, vLLM's
    # default, ends it with finish_reason "abort"): both recorded.
    http.post("/wake_up")
    thread, box = in_thread(
        lambda: http.post("/v1/chat/completions", json={"model": "coder", **CHAT})
    )
    time.sleep(0.06)
    http.post("/sleep", params={"level": 1})
    thread.join(5)
    assert box["result"].json()["choices"][0]["finish_reason"] == "abort"
    http.post("/wake_up", params=[("tags", "weights"), ("tags", "kv_cache")])
    state = double_state(port)
    assert hazards(state) == {
        "requests_while_asleep": 1,
        "wake_while_awake": 1,
        "sleep_with_requests_in_flight": 1,
    }
    assert state["counts"]["sleeps"] == 2
    assert state["counts"]["wakes"] == 2
    assert not state["is_sleeping"]


def test_vllm_double_level2_and_partial_wake(vllm_sleep_image: str, run: Any) -> None:
    port = free_port()
    base = run(service_from("m", vllm_sleep_service(port)))
    http = httpx.Client(base_url=base, trust_env=False, timeout=10)
    http.post("/sleep", params={"level": 2})
    http.post("/wake_up", params={"tags": "weights"})  # weights only: still asleep
    state = double_state(port)
    assert state["is_sleeping"]
    assert state["sleeping_tags"] == ["kv_cache"]
    assert state["memory"]["device_bytes"] == 1024**3
    http.post("/wake_up", params={"tags": "kv_cache"})
    body = {"model": "double/smollm2", **CHAT}
    http.post("/v1/chat/completions", json=body)  # level 2 discarded the weights
    http.post("/collective_rpc", json={"method": "reload_weights"})
    http.post("/v1/chat/completions", json=body)
    assert hazards(double_state(port)) == {"served_with_discarded_weights": 1}


def test_vllm_double_needs_dev_mode_and_sleep_mode(vllm_sleep_image: str, run: Any) -> None:
    plain, no_pool = free_port(), free_port()
    run(service_from("plain", vllm_sleep_service(plain, sleep_mode=False, dev_mode=False)))
    run(service_from("nopool", vllm_sleep_service(no_pool, sleep_mode=False)))
    assert httpx.post(f"http://127.0.0.1:{plain}/sleep", trust_env=False).status_code == 404
    assert httpx.get(f"http://127.0.0.1:{plain}/is_sleeping", trust_env=False).status_code == 404
    httpx.post(f"http://127.0.0.1:{no_pool}/sleep", trust_env=False)
    state = double_state(no_pool)
    assert state["is_sleeping"]
    assert state["memory"]["device_bytes"] == 3 * 1024**3
    assert hazards(state) == {"sleep_without_sleep_mode": 1}


def until(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- Ollama -------------------------------------------------------------------------------------
def test_ollama_double_loads_unloads_and_expires(ollama_double_image: str, run: Any) -> None:
    port = free_port()
    # Each token 0.3 s: the request below is still in flight when the unload is asked for,
    # however loaded the machine is.
    service = service_from(
        "ollama",
        ollama_service(port, keep_alive="1s", env={"OLLAMA_DOUBLE_TOKEN_DELAY_S": "0.3"}),
    )
    base = run(service)
    http = httpx.Client(base_url=base, trust_env=False, timeout=10)
    assert http.get("/api/ps").json() == {"models": []}

    # The first request loads the model; /api/ps then lists it with its VRAM.
    reply = http.post("/v1/chat/completions", json={"model": "smollm2:135m", **CHAT})
    assert reply.json()["system_fingerprint"] == "fp_ollama"
    (loaded,) = http.get("/api/ps").json()["models"]
    assert (loaded["name"], loaded["size_vram"]) == ("smollm2:135m", 300_000_000)

    # keep_alive: 0 while a request is in flight: answered at once, applied after it ends.
    thread, _ = in_thread(
        lambda: http.post(
            "/api/generate", json={"model": "smollm2:135m", "prompt": "hi", "stream": False}
        )
    )
    until(lambda: double_state(port)["in_flight"] == 1, "the request to be in flight")
    assert free_vram("ollama", base) == "asked ollama to unload smollm2:135m"
    assert [m["name"] for m in http.get("/api/ps").json()["models"]] == ["smollm2:135m"]
    thread.join(30)
    deadline = time.monotonic() + 3
    while http.get("/api/ps").json()["models"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get("/api/ps").json() == {"models": []}

    # An idle model leaves after keep_alive (1s here; Ollama's default is 5m).
    http.post("/api/generate", json={"model": "qwen2.5:0.5b", "prompt": "x", "stream": False})
    assert http.get("/api/ps").json()["models"]
    time.sleep(1.6)
    assert http.get("/api/ps").json() == {"models": []}
    state = double_state(port)
    assert hazards(state) == {"unload_with_requests_in_flight": 1}
    assert state["counts"]["expired_by_timer"] == 1
    assert state["counts"]["loads"] == 2
    missing = http.post("/api/generate", json={"model": "nope"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})


# -- ComfyUI ------------------------------------------------------------------------------------
def test_comfyui_double_frees_between_prompts(comfyui_double_image: str, run: Any) -> None:
    port = free_port()
    # A 3 s prompt: still running when the free is asked for, however loaded the machine is.
    base = run(service_from("comfy", comfyui_service(port, env={"COMFY_DOUBLE_PROMPT_S": "3"})))
    http = httpx.Client(base_url=base, trust_env=False, timeout=10)
    http.post("/prompt", json={"prompt": {"1": {"class_type": "KSampler"}}})
    until(lambda: len(http.get("/queue").json()["queue_running"]) == 1, "the prompt to run")
    queue = http.get("/queue").json()
    assert len(queue["queue_running"]) == 1
    assert queue["queue_pending"] == []
    assert double_state(port)["memory_bytes"] == 2 * 1024**3
    assert free_vram("comfyui", base) == "asked comfyui to unload its models and free memory"
    assert double_state(port)["memory_bytes"] == 2 * 1024**3  # the prompt still runs
    deadline = time.monotonic() + 15
    while double_state(port)["memory_bytes"] and time.monotonic() < deadline:
        time.sleep(0.05)
    state = double_state(port)
    assert state["memory_bytes"] == 0
    assert state["frees"][0]["freed_bytes"] == 2 * 1024**3
    assert hazards(state) == {"free_while_prompt_running": 1}
    assert http.get("/system_stats").json()["devices"][0]["type"] == "cpu"
