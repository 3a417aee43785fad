"""An Ollama service's models, through Ollama's own server (docs/api.md): `GET /api/tags` lists
the models on its disk (`models[].name`, `NAME` meaning `NAME:latest`); `POST /api/pull`
(`{"model", "stream": true}`) downloads one into its models volume and streams NDJSON:
`{"status"}` lines, one `{"status": "pulling <digest>", "digest", "total", "completed"}` per
layer as it grows, `{"status": "success"}` at the end, or `{"error"}` (after a 200: the headers
were already sent). Ollama resumes its own partial layers and manages its own disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from aitherctl.errors import AitherError, NotFoundError
from aitherctl.models.pull_model import PullEvent, PullPhase, RateMeter
from aitherctl.profiles.profile import Service

if TYPE_CHECKING:
    import httpx


def ollama_tag(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def ollama_base(service: Service) -> str:
    """Where this machine reaches the service's Ollama server."""
    address = service.reach or service.bind
    if address in ("0.0.0.0", "::", ""):
        address = "127.0.0.1"
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{service.port}"


def ollama_sizes(client: httpx.Client, base: str) -> dict[str, int]:
    """`GET /api/tags`: each model on the server's disk and its size (`AitherError` when the
    server does not answer)."""
    import httpx

    try:
        response = client.get(f"{base}/api/tags", timeout=10.0)
        response.raise_for_status()
        return {
            ollama_tag(str(item["name"])): int(item.get("size") or 0)
            for item in response.json().get("models", [])
        }
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AitherError(f"Ollama does not answer at {base} ({type(exc).__name__})") from None


def ollama_delete(client: httpx.Client, base: str, model: str) -> None:
    """`DELETE /api/delete` `{"model"}`: 200, or 404 when the server has no such model."""
    import httpx

    try:
        response = client.request("DELETE", f"{base}/api/delete", json={"model": model})
    except httpx.HTTPError as exc:
        raise AitherError(f"Ollama does not answer at {base} ({type(exc).__name__})") from None
    if response.status_code == 404:
        raise NotFoundError(f"Ollama at {base} has no model {model}")
    if response.status_code >= 400:
        raise AitherError(f"Ollama at {base} refused to delete {model}: {response.text.strip()}")


def ollama_models(client: httpx.Client, base: str, service: str) -> set[str]:
    """The models on the Ollama server's disk."""
    import httpx

    try:
        response = client.get(f"{base}/api/tags", timeout=10.0)
        response.raise_for_status()
        return {ollama_tag(str(item["name"])) for item in response.json().get("models", [])}
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AitherError(
            f"service {service!r}: Ollama does not answer at {base} ({type(exc).__name__}): "
            f"start it (`aitherctl up {service}`); Ollama downloads through its own server"
        ) from None


class PullCancelled(AitherError):
    """The caller asked the pull to stop (a switch rolling back); Ollama keeps the partial
    layers and continues them on the next pull."""


def ollama_pull(
    client: httpx.Client,
    base: str,
    service: str,
    model: str,
    *,
    emit: Callable[[PullEvent], None],
    clock: Callable[[], float],
    progress_every_s: float = 1.0,
    cancelled: Callable[[], bool] = lambda: False,
) -> int:
    """Pull `model` through the server; the bytes of its layers. `cancelled` is asked at every
    line of the stream (`PullCancelled` when it says so; the connection is closed)."""
    import httpx

    layers: dict[str, int] = {}
    meters: dict[str, RateMeter] = {}
    last = clock()
    try:
        with client.stream(
            "POST", f"{base}/api/pull", json={"model": model, "stream": True}, timeout=None
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _refusal(service, model, response.text)
            for raw in response.iter_lines():
                if cancelled():
                    raise PullCancelled(f"service {service!r}: the pull of {model} was cancelled")
                if not raw.strip():
                    continue
                item = json.loads(raw)
                if "error" in item:
                    raise _refusal(service, model, str(item["error"]))
                digest, total = item.get("digest"), item.get("total")
                if not digest or not isinstance(total, int):
                    continue
                done = int(item.get("completed") or 0)
                label = f"{model} {str(digest).removeprefix('sha256:')[:12]}"
                if digest not in layers:
                    meters[digest] = RateMeter(clock())
                    emit(PullEvent(PullPhase.START, service, label, done, total))
                meters[digest].add(done - layers.get(digest, 0))
                layers[digest] = done
                now = clock()
                if done >= total:
                    emit(PullEvent(
                        PullPhase.DONE, service, label, done, total, meters[digest].rate(now)
                    ))  # fmt: skip
                elif now - last >= progress_every_s:
                    last = now
                    meter = meters[digest]
                    emit(PullEvent(
                        PullPhase.PROGRESS, service, label, done, total, meter.rate(now),
                        meter.eta(now, total - done),
                    ))  # fmt: skip
    except httpx.HTTPError as exc:
        raise AitherError(
            f"service {service!r}: the pull of {model} through Ollama at {base} broke "
            f"({type(exc).__name__}); `aitherctl pull` again continues it"
        ) from None
    except ValueError:
        raise AitherError(
            f"service {service!r}: Ollama at {base} answered the pull with something else than "
            "NDJSON"
        ) from None
    return sum(layers.values())


def _refusal(service: str, model: str, error: str) -> AitherError:
    if "file does not exist" in error or "not found" in error:
        return NotFoundError(
            f"service {service!r}: Ollama's registry has no model {model} ({error.strip()})"
        )
    return AitherError(f"service {service!r}: Ollama could not pull {model}: {error.strip()}")


def ensure_ollama_model(
    client: httpx.Client,
    base: str,
    service: str,
    model: str,
    *,
    pull: bool,
    emit: Callable[[PullEvent], None],
    clock: Callable[[], float],
    cancelled: Callable[[], bool] = lambda: False,
) -> bool:
    """Make sure the Ollama server at `base` has `model` on its disk (`GET /api/tags`), pulling
    it through the server (`POST /api/pull`) when `pull`; `RefusedError` otherwise. Returns
    whether it pulled. `cancelled` is asked at every line of the pull's stream."""
    from aitherctl.errors import RefusedError

    if ollama_tag(model) in ollama_models(client, base, service):
        return False
    if not pull:
        raise RefusedError(
            f"service {service!r}: Ollama has no model {model} on its disk: leave out "
            "--no-pull to pull it through Ollama"
        )
    ollama_pull(client, base, service, model, emit=emit, clock=clock, cancelled=cancelled)
    return True
