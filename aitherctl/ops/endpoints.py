"""Where a running service answers, in the form its clients expect."""

from __future__ import annotations

# Engines whose clients want the OpenAI-compatible base URL (`…/v1`): vLLM and llama-server
# serve `/v1/chat/completions`; Ollama's native API is at the root (its OpenAI API is `/v1`
# too, but its own clients take the root), ComfyUI's web UI and API are at the root.
OPENAI_BASE = {"vllm": "/v1", "llamacpp": "/v1"}


def base_url(engine: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{OPENAI_BASE.get(engine, '')}"
