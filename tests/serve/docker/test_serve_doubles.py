"""`aitherctl serve` evicting and reloading engines that cannot run here, through their contract
doubles (tests/doubles/images.py: vLLM with sleep mode, Ollama, ComfyUI) started as profile
services on the real Docker engine, in a host-RAM pool (`ram:` budgets) sized so that two of
them do not fit at once.

The gateway runs as its own process (`python -m aitherctl serve`) and is spoken to only with the
official `openai` client and curl. What the scheduler did is read from the doubles themselves
(`GET /_double/state`: what they went through, and the hazards a scheduler must never cause:
a request sent to a sleeping vLLM, a sleep with requests in flight, an unload or `/free` while
the engine works) and from `GET /status` (the scheduler's own states and events).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import free_port, run_cli
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
from tests.serve.docker.serve_helpers import Served, curl, openai_client, serving

pytestmark = pytest.mark.docker

__all__ = ["comfyui_double_image", "ollama_double_image", "vllm_sleep_image"]  # fixtures

HELLO = [{"role": "user", "content": "hello there"}]
# Each service claims 400 MiB of a 600 MiB pool: one fits, two do not.
POOL = {"limit": "600MiB"}
CLAIM = "400MiB"


def chat(served: Served, model: str) -> tuple[str, str, Any]:
    """(backend header, answer text, the completion) through the openai client."""
    client = openai_client(served)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    answer = raw.parse()
    return raw.headers.get("x-aither-backend"), answer.choices[0].message.content, answer


def events_of(state: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [event for event in state["events"] if event["event"] == kind]


def scheduler_events(served: Served, kind: str, backend: str) -> list[dict[str, Any]]:
    return [e for e in served.events() if e["event"] == kind and e["backend"] == backend]


# -- vLLM sleep mode ------------------------------------------------------------------------------
def test_vllm_sleep_mode_swaps_two_services_that_do_not_fit(
    vllm_sleep_image: str, clean_namespace: Any, write_profile: Callable[..., Any]
) -> None:
    alpha_port, beta_port = free_port(), free_port()
    write_profile(
        "sleepers",
        ram=POOL,
        services={
            "alpha": vllm_sleep_service(alpha_port, served_name="alpha", ram=CLAIM, on_demand=True),
            "beta": vllm_sleep_service(beta_port, served_name="beta", ram=CLAIM, on_demand=True),
        },
    )
    with serving("sleepers") as served:
        assert served.backend("alpha")["state"] == "stopped"
        assert served.backend("beta")["state"] == "stopped"

        # The first request starts alpha (on demand) and is answered by it.
        backend, text, _ = chat(served, "alpha")
        assert (backend, text) == ("alpha", "Hello from the vLLM sleep double, token")
        assert served.backend("alpha")["state"] == "ready"

        # beta does not fit beside alpha: alpha, idle, is put to sleep (not stopped).
        backend, text, _ = chat(served, "beta")
        assert backend == "beta"
        assert text
        assert served.backend("alpha")["state"] == "asleep"
        alpha = double_state(alpha_port)
        assert alpha["is_sleeping"]
        assert alpha["counts"]["sleeps"] == 1
        assert alpha["memory"]["device_bytes"] == 0
        (slept,) = events_of(alpha, "sleep")
        assert (slept["level"], slept["in_flight"]) == (1, 0)
        assert hazards(alpha) == {}

        # alpha again, with curl: beta is put to sleep first, then alpha is woken, then asked.
        reply = curl("POST", served.v1 + "/chat/completions", {"model": "alpha", "messages": HELLO})
        assert reply.status == 200, reply.body
        assert reply.headers["x-aither-backend"] == "alpha"
        assert reply.json()["choices"][0]["finish_reason"] == "stop"
        assert float(reply.headers["x-aither-load-wait"]) > 0  # it waited for the wake
        alpha, beta = double_state(alpha_port), double_state(beta_port)
        assert not alpha["is_sleeping"]
        assert alpha["counts"]["wakes"] == 1
        assert alpha["counts"]["completed"] == 2
        assert beta["is_sleeping"]
        assert beta["counts"]["sleeps"] == 1
        (beta_slept,) = events_of(beta, "sleep")
        (alpha_woke,) = events_of(alpha, "wake_up")
        assert beta_slept["t"] <= alpha_woke["t"]  # room first, then the wake
        assert hazards(alpha) == {}
        assert hazards(beta) == {}
        assert served.backend("alpha")["state"] == "ready"
        assert served.backend("beta")["state"] == "asleep"
        assert scheduler_events(served, "woke", "alpha")

        # Streaming through the openai client, from the awake alpha.
        stream = openai_client(served).chat.completions.create(
            model="alpha", messages=HELLO, stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == "Hello from the vLLM sleep double, token"

        metrics = curl("GET", served.url + "/metrics").body
        assert 'aither_sleeps_total{backend="alpha"} 1.0' in metrics
        assert 'aither_sleeps_total{backend="beta"} 1.0' in metrics
        assert 'aither_wakes_total{backend="alpha"} 1.0' in metrics
    # Both containers still run: eviction by sleep never stopped them, nor did serve's exit.
    running = {item.service for item in clean_namespace.list_managed() if item.running}
    assert running == {"alpha", "beta"}
    assert hazards(double_state(alpha_port)) == {}
    assert hazards(double_state(beta_port)) == {}


def _wait(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_vllm_with_a_request_in_flight_is_never_slept(
    vllm_sleep_image: str, clean_namespace: Any, write_profile: Callable[..., Any]
) -> None:
    alpha_port, beta_port = free_port(), free_port()
    write_profile(
        "sleepers",
        ram=POOL,
        services={
            # 8 tokens at 0.5 s: a streamed answer that lasts about 4 s.
            "alpha": vllm_sleep_service(
                alpha_port, served_name="alpha", ram=CLAIM, on_demand=True, token_delay_s=0.5
            ),
            "beta": vllm_sleep_service(beta_port, served_name="beta", ram=CLAIM, on_demand=True),
        },
    )
    with serving("sleepers") as served:
        client = openai_client(served)
        client.chat.completions.create(model="alpha", messages=HELLO, max_tokens=1)  # load it
        assert served.backend("alpha")["state"] == "ready"

        stream = client.chat.completions.create(model="alpha", messages=HELLO, stream=True)
        chunks = iter(stream)
        first = next(chunks)  # alpha is now generating: one request in flight
        assert first.choices[0].delta is not None
        assert served.backend("alpha")["in_flight"] == 1

        box: dict[str, Any] = {}

        def ask_beta() -> None:
            try:
                box["reply"] = curl(
                    "POST", served.v1 + "/chat/completions", {"model": "beta", "messages": HELLO}
                )
            except AssertionError as exc:
                box["error"] = exc
            box["done_at"] = time.time()

        beta_thread = threading.Thread(target=ask_beta, daemon=True)
        beta_thread.start()
        served.wait_state("beta", "loading", timeout_s=20)
        _wait(lambda: bool(scheduler_events(served, "waiting_for_room", "beta")), 20)
        # beta waits for room: alpha is busy, so it is neither slept nor stopped.
        assert beta_thread.is_alive()
        assert served.backend("alpha")["state"] == "ready"
        assert served.backend("beta")["state"] == "loading"
        assert scheduler_events(served, "waiting_for_room", "beta")
        assert double_state(alpha_port)["counts"]["sleeps"] == 0

        rest = [c.choices[0] for c in chunks if c.choices]
        stream_ended = time.time()
        assert rest[-1].finish_reason == "stop"  # not "abort": the sleep did not cut it short
        text = (first.choices[0].delta.content or "") + "".join(c.delta.content or "" for c in rest)
        assert text == "Hello from the vLLM sleep double, token"

        beta_thread.join(60)
        assert not beta_thread.is_alive()
        assert "error" not in box, box.get("error")
        reply = box["reply"]
        assert reply.status == 200, reply.body
        assert reply.headers["x-aither-backend"] == "beta"
        assert box["done_at"] >= stream_ended
        alpha = double_state(alpha_port)
        (slept,) = events_of(alpha, "sleep")
        assert slept["in_flight"] == 0
        assert slept["t"] >= stream_ended - 0.5  # container clock vs ours: same host clock
        assert alpha["counts"]["aborted"] == 0
        assert hazards(alpha) == {}
        assert hazards(double_state(beta_port)) == {}
        assert served.backend("alpha")["state"] == "asleep"


# -- Ollama ---------------------------------------------------------------------------------------
def test_ollama_is_unloaded_with_keep_alive_0_and_reloads_on_request(
    ollama_double_image: str,
    vllm_sleep_image: str,
    clean_namespace: Any,
    write_profile: Callable[..., Any],
) -> None:
    ollama_port, other_port = free_port(), free_port()
    write_profile(
        "ollama-swap",
        ram=POOL,
        services={
            "ollama": ollama_service(ollama_port, model="smollm2:135m", ram=CLAIM, on_demand=True),
            # No sleep mode: the scheduler's last resort, stopping the container.
            "other": vllm_sleep_service(
                other_port, served_name="other", sleep_mode=False, ram=CLAIM, on_demand=True
            ),
        },
    )
    with serving("ollama-swap") as served:
        backend, text, _ = chat(served, "smollm2:135m")
        assert backend == "ollama"
        assert text
        ollama = double_state(ollama_port)
        assert ollama["counts"]["loads"] == 1
        assert [m["name"] for m in ollama["loaded"]] == ["smollm2:135m"]

        backend, _, _ = chat(served, "other")
        assert backend == "other"
        assert served.backend("ollama")["state"] == "unloaded"
        deadline = time.monotonic() + 5  # the double drops the model 0.2 s after the answer
        while double_state(ollama_port)["loaded"] and time.monotonic() < deadline:
            time.sleep(0.05)
        ollama = double_state(ollama_port)
        assert ollama["loaded"] == []
        assert ollama["counts"]["unload_requests"] == 1
        assert ollama["counts"]["unload_requests_not_loaded"] == 0  # it named the loaded model
        assert ollama["counts"]["unloads"] == 1
        assert hazards(ollama) == {}
        (unload,) = events_of(ollama, "unloading")
        assert unload["model"] == "smollm2:135m"
        assert curl("GET", f"http://127.0.0.1:{ollama_port}/api/ps").json() == {"models": []}

        # The next request for it: `other` is stopped for room, Ollama loads on the request.
        reply = curl(
            "POST", served.v1 + "/chat/completions", {"model": "smollm2:135m", "messages": HELLO}
        )
        assert reply.status == 200, reply.body
        assert reply.headers["x-aither-backend"] == "ollama"
        assert reply.json()["system_fingerprint"] == "fp_ollama"
        assert served.backend("ollama")["state"] == "ready"
        assert served.backend("other")["state"] == "stopped"
        ollama = double_state(ollama_port)
        assert ollama["counts"]["loads"] == 2
        assert ollama["counts"]["completed"] == 2
        assert hazards(ollama) == {}
    running = {item.service for item in clean_namespace.list_managed() if item.running}
    assert running == {"ollama"}


# -- ComfyUI --------------------------------------------------------------------------------------
def _comfy_profile(
    write_profile: Callable[..., Any], comfy_port: int, chat_port: int, prompt_s: float = 0.5
) -> None:
    write_profile(
        "comfy-swap",
        ram=POOL,
        services={
            # Resident (not on demand): part of the profile's steady state.
            "comfy": comfyui_service(
                comfy_port, ram=CLAIM, env={"COMFY_DOUBLE_PROMPT_S": str(prompt_s)}
            ),
            "chat": vllm_sleep_service(
                chat_port, served_name="chat", sleep_mode=False, ram=CLAIM, on_demand=True
            ),
        },
    )


def _start_comfy() -> None:
    """`aitherctl up comfy`, before serving: ComfyUI runs and holds its share of the pool."""
    result = run_cli("up", "comfy", "--profile", "comfy-swap", "--yes")
    assert result.returncode == 0, result.stderr[-3000:]


def _run_prompt(comfy_port: int) -> None:
    answer = curl(
        "POST",
        f"http://127.0.0.1:{comfy_port}/prompt",
        {"prompt": {"1": {"class_type": "KSampler"}}},
    )
    assert answer.status == 200, answer.body
    deadline = time.monotonic() + 5
    while double_state(comfy_port)["queue_running"] == 0:
        assert time.monotonic() < deadline, "the ComfyUI double never ran the prompt"
        time.sleep(0.05)


def test_comfyui_holding_memory_is_freed_for_a_load(
    comfyui_double_image: str,
    vllm_sleep_image: str,
    clean_namespace: Any,
    write_profile: Callable[..., Any],
) -> None:
    comfy_port, chat_port = free_port(), free_port()
    _comfy_profile(write_profile, comfy_port, chat_port)
    _start_comfy()
    with serving("comfy-swap") as served:
        assert served.backend("comfy")["state"] == "ready"
        _run_prompt(comfy_port)  # it now holds a model (2 GiB in the double's books)
        deadline = time.monotonic() + 10
        while double_state(comfy_port)["queue_running"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert double_state(comfy_port)["memory_bytes"] == 2 * 1024**3

        backend, text, _ = chat(served, "chat")
        assert (backend, bool(text)) == ("chat", True)
        assert served.backend("comfy")["state"] == "unloaded"
        deadline = time.monotonic() + 3  # the worker applies /free on its next poll (0.1 s)
        while double_state(comfy_port)["memory_bytes"] and time.monotonic() < deadline:
            time.sleep(0.05)
        comfy = double_state(comfy_port)
        (free,) = comfy["frees"]
        assert (free["unload_models"], free["free_memory"]) == (True, True)
        assert free["applied_at"] is not None
        assert free["freed_bytes"] == 2 * 1024**3
        assert comfy["memory_bytes"] == 0
        assert hazards(comfy) == {}
    running = {item.service for item in clean_namespace.list_managed() if item.running}
    assert running == {"comfy", "chat"}  # /free leaves ComfyUI running


def test_comfyui_is_not_freed_while_a_prompt_runs(
    comfyui_double_image: str,
    vllm_sleep_image: str,
    clean_namespace: Any,
    write_profile: Callable[..., Any],
) -> None:
    """ComfyUI's prompts do not pass through the gateway, so only the engine knows one runs
    (`GET /queue`). A `/free` sent during a prompt is applied only after it (ComfyUI reads the
    flags between prompts), so a scheduler that sends it then and starts the next load at once
    loads into memory that is still held."""
    comfy_port, chat_port = free_port(), free_port()
    _comfy_profile(write_profile, comfy_port, chat_port, prompt_s=4.0)
    _start_comfy()
    with serving("comfy-swap") as served:
        assert served.backend("comfy")["state"] == "ready"
        _run_prompt(comfy_port)
        backend, _, _ = chat(served, "chat")
        assert backend == "chat"
        deadline = time.monotonic() + 10
        while double_state(comfy_port)["memory_bytes"] and time.monotonic() < deadline:
            time.sleep(0.05)
        comfy = double_state(comfy_port)
        assert comfy["counts"]["completed"] == 1
        assert comfy["frees"], "ComfyUI was never asked to free its memory"
        events = [e for e in served.events() if e["backend"] in ("comfy", "chat")]
        seen = f"frees: {comfy['frees']}\nscheduler events: {events}"
        assert [f["prompt_running"] for f in comfy["frees"]] == [False] * len(comfy["frees"]), seen
        assert hazards(comfy) == {}, seen
        # The memory was really given back before the scheduler called comfy evicted.
        (evicted,) = [e for e in events if e["event"] == "evicted" and e["backend"] == "comfy"]
        assert comfy["frees"][-1]["applied_at"] <= evicted["ts"], seen


def test_resident_comfyui_stopped_at_start_is_brought_back(
    comfyui_double_image: str,
    vllm_sleep_image: str,
    clean_namespace: Any,
    write_profile: Callable[..., Any],
) -> None:
    """A resident service found stopped when serve starts is brought back (the profile's
    resident set is the steady state), whether or not it takes chat requests."""
    comfy_port, chat_port = free_port(), free_port()
    _comfy_profile(write_profile, comfy_port, chat_port)
    with serving("comfy-swap") as served:
        served.wait_state("comfy", "ready", timeout_s=20)
        assert curl("GET", f"http://127.0.0.1:{comfy_port}/system_stats").status == 200
