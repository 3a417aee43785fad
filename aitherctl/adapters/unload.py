"""Ask an engine to release its VRAM without stopping its container, where it can.

- Ollama: `POST /api/generate` with `{"model": NAME, "keep_alive": 0}` unloads that model
  (docs.ollama.com/api: "keep_alive: 0 unloads the model"), for each model `/api/ps` lists.
- ComfyUI: `POST /free` with `{"unload_models": true, "free_memory": true}` (server.py); it sets
  a flag its prompt worker acts on, so the memory goes a moment after the answer.
vLLM and llama.cpp keep their weights and KV cache until the process ends: stop them instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from aitherctl.errors import AitherError, RefusedError


def free_vram(
    engine: str, base_url: str, models: Sequence[str] = (), *, timeout_s: float = 10.0
) -> str:
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            if engine == "ollama":
                names = list(models)
                if not names:
                    listed = client.get(f"{base_url}/api/ps").raise_for_status().json()
                    names = [m.get("name") or m.get("model") for m in listed.get("models", [])]
                for name in names:
                    client.post(
                        f"{base_url}/api/generate", json={"model": name, "keep_alive": 0}
                    ).raise_for_status()
                return f"asked Ollama to unload {', '.join(names) or 'nothing (none loaded)'}"
            if engine == "comfyui":
                client.post(
                    f"{base_url}/free", json={"unload_models": True, "free_memory": True}
                ).raise_for_status()
                return "asked ComfyUI to unload its models and free memory"
    except httpx.HTTPError as exc:
        raise AitherError(f"{engine} at {base_url} did not free its VRAM: {exc}") from None
    raise RefusedError(
        f"{engine} cannot release VRAM while it runs; stop the service (s) to free it"
    )
