"""Where a running service answers, in the form its clients expect (the engine driver's
`client_path`: `/v1` for vLLM and llama.cpp, the root for Ollama and ComfyUI)."""

from __future__ import annotations

from aitherctl.engines.registry import client_path
from aitherctl.switching.readiness import netloc


def base_url(engine: str, host: str, port: int) -> str:
    return f"http://{netloc(host)}:{port}{client_path(engine)}"
