"""`free VRAM`: the driver says what to send, monitor/unload.py sends it (to contract doubles of
Ollama and ComfyUI, tests/doubles/ollama_server.py, which follows Ollama's docs/api.md)."""

from __future__ import annotations

import pytest

from aitherctl.errors import RefusedError
from aitherctl.monitor.unload import free_vram
from tests.doubles.ollama_server import GIB, ollama_double


def test_ollama_unloads_every_loaded_model_it_lists() -> None:
    with ollama_double({"qwen3:8b": 6 * GIB, "llama3.2:1b": GIB}) as (url, state):
        message = free_vram("ollama", url)
        assert state.loaded == {}
        posts = [body for method, path, body in state.requests if method == "POST"]
    assert posts == [
        {"model": "qwen3:8b", "keep_alive": 0},
        {"model": "llama3.2:1b", "keep_alive": 0},
    ]
    assert message == "asked ollama to unload qwen3:8b, llama3.2:1b"


def test_ollama_with_the_models_the_monitor_saw() -> None:
    with ollama_double({"a:1b": GIB, "b:1b": GIB}) as (url, state):
        free_vram("ollama", url, ["b:1b"])
        assert list(state.loaded) == ["a:1b"]
        assert ("GET", "/api/ps", None) not in state.requests


def test_ollama_with_nothing_loaded() -> None:
    with ollama_double({}) as (url, _state):
        assert free_vram("ollama", url) == "asked ollama to unload nothing (none loaded)"


def test_comfyui_is_asked_to_free_its_memory() -> None:
    with ollama_double({}, comfyui=True) as (url, state):
        free_vram("comfyui", url)
        assert state.requests == [("POST", "/free", {"unload_models": True, "free_memory": True})]


@pytest.mark.parametrize("engine", ["vllm", "llamacpp", "generic"])
def test_engines_that_cannot_release_say_to_stop_them(engine: str) -> None:
    with pytest.raises(RefusedError, match="stop the service"):
        free_vram(engine, "http://127.0.0.1:9")
