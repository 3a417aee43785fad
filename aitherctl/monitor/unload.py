"""Asks an engine to give its GPU memory back without stopping its container, where it can.

What to send comes from the engine's driver (`EngineDriver.release_memory`: Ollama unloads each
model with `keep_alive: 0`, ComfyUI has `POST /free`); this module sends it. An engine whose
driver has no such request (vLLM, llama.cpp) keeps its memory until it stops: stop it instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aitherctl.engines.metrics import MetricsFormatError
from aitherctl.engines.registry import MetricsEndpoint, driver_for
from aitherctl.errors import AitherError, RefusedError

if TYPE_CHECKING:
    import httpx


def free_vram(
    engine: str, base_url: str, models: Sequence[str] = (), *, timeout_s: float = 10.0
) -> str:
    """Sends the driver's release requests to the server at `base_url`; returns what was asked.
    `models` are the loaded models when the caller knows them (the monitor does)."""
    import httpx

    try:
        driver = driver_for(engine)
    except KeyError:
        raise RefusedError(f"aitherctl does not know the engine {engine!r}") from None
    names = list(models)
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            if driver.release_needs_models and not names:
                names = _loaded_models(client, base_url, driver.metrics)
            requests = driver.release_memory(names)
            if requests is None:
                raise RefusedError(
                    f"{engine} cannot release VRAM while it runs; stop the service (s) to free it"
                )
            for request in requests:
                client.request(
                    request.method, base_url + request.path, json=request.json_body
                ).raise_for_status()
    except httpx.HTTPError as exc:
        raise AitherError(f"{engine} at {base_url} did not free its VRAM: {exc}") from None
    if driver.release_needs_models:
        return f"asked {engine} to unload {', '.join(names) or 'nothing (none loaded)'}"
    return f"asked {engine} to unload its models and free memory"


def _loaded_models(
    client: httpx.Client, base_url: str, endpoints: Sequence[MetricsEndpoint]
) -> list[str]:
    """The loaded models' names, read from the driver's metrics pages."""
    names: list[str] = []
    for endpoint in endpoints:
        response = client.get(base_url + endpoint.path).raise_for_status()
        try:
            if endpoint.format == "prometheus":
                reading = endpoint.parse(response.text)
            else:
                reading = endpoint.parse(json.loads(response.content))
        except (ValueError, MetricsFormatError) as exc:
            raise AitherError(f"{base_url}{endpoint.path}: {exc}") from None
        names += [model.name for model in reading.loaded_models]
    return names
