"""The models on this machine, as `aitherctl models` lists them: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ModelKind(StrEnum):
    HF_CACHE = "hf-cache"  # a repository in huggingface_hub's cache layout (vLLM reads it)
    GGUF = "gguf"  # one GGUF file (llama.cpp reads it)
    OLLAMA = "ollama"  # a model on an Ollama server's disk (`path`: the server's URL)


class ModelState(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"  # a download left `.incomplete` files: `aitherctl pull` continues it


@dataclass(frozen=True, slots=True)
class ServiceUse:
    """A profile's service that uses a model, and whether it is running now."""

    profile: str
    service: str
    running: bool | None  # None: the Docker engine could not be asked

    @property
    def label(self) -> str:
        return f"{self.profile}/{self.service}" + (" (running)" if self.running else "")


@dataclass(frozen=True, slots=True)
class LocalModel:
    """One model on a Docker host (this machine's or another): what it is called, which engine
    reads it, where it is, its size and state, and which services use it."""

    name: str  # ORG/NAME for a cache folder, the file name for a GGUF file, Ollama's NAME:TAG
    engine: str  # the engine that reads it: vllm, llamacpp or ollama
    kind: ModelKind
    path: str  # on this machine
    size_bytes: int  # on disk, `.incomplete` parts included
    state: ModelState
    used_by: tuple[ServiceUse, ...] = ()
    # The newest request one of `used_by` answered (unix time, from the usage ledger: `run` and
    # `serve` requests); None: none recorded.
    last_used_ts: float | None = None
    host: str = "local"  # the profile's name for the Docker host it is on
    # On another host: (what the services mount there: a path of that host or a named volume,
    # the model's path inside it), for `models rm`; `path` is then only what is shown.
    remote_place: tuple[str, str] | None = None

    @property
    def running_users(self) -> tuple[ServiceUse, ...]:
        return tuple(use for use in self.used_by if use.running)


@dataclass(frozen=True, slots=True)
class ModelListing:
    """Every model `aitherctl models` found, and a note for each place it could not look at."""

    models: tuple[LocalModel, ...]
    notes: tuple[str, ...] = ()  # what could not be looked at, one line each


def repo_from_folder(folder_name: str) -> str | None:
    """`models--ORG--NAME` → `ORG/NAME` (huggingface_hub's `repo_folder_name`, reversed)."""
    if not folder_name.startswith("models--"):
        return None
    parts = folder_name.removeprefix("models--").split("--", 1)
    return "/".join(parts) if all(parts) else None
