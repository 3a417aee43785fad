"""`aitherctl models`: the models on this machine that the profiles point at, and the others
beside them, with their size on disk and the services that use them; `models rm`.

Where it looks: for every vLLM service with a Hub id, the cache folder its mount gives
(`.../hub/models--ORG--NAME`), and every other `models--*` folder in that `hub/`; for every
llama.cpp service, its `model` file, and every other `.gguf` file in that folder. A named
volume is looked at through its folder on this machine (`docker volume inspect`), when the
Docker engine can be asked; one that does not exist yet holds nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from aitherctl.docker.stack import ManagedContainer
from aitherctl.errors import AitherError, NotFoundError, RefusedError, UsageError
from aitherctl.models.files import HF_HUB_IN_CONTAINER, ModelNotHere, VolumeMissing, model_place
from aitherctl.models.local_model import (
    LocalModel,
    ModelKind,
    ModelListing,
    ModelState,
    ServiceUse,
    repo_from_folder,
)
from aitherctl.models.ollama_pull import ollama_base, ollama_tag
from aitherctl.models.pull_model import hf_cache_folder_name
from aitherctl.profiles.profile import LOCAL_HOST, Profile

INCOMPLETE = ".incomplete"


def _size_on_disk(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed: a cache's snapshot links
    point at its blobs, counted once)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            entry = Path(folder) / name
            if not entry.is_symlink():
                total += entry.lstat().st_size
    return total


def _cache_state(folder: Path) -> ModelState:
    partial = any((folder / "blobs").glob(f"*{INCOMPLETE}")) or not (folder / "snapshots").is_dir()
    return ModelState.PARTIAL if partial else ModelState.COMPLETE


def list_models(
    profiles: Iterable[Profile],
    volume_folder: Callable[[str], str | None],
    running: set[tuple[str, str]] | None,
    ollama_sizes: Callable[[str], dict[str, int]] | None = None,
) -> ModelListing:
    """Every model found; `running`: the (profile, service) pairs running now (None: unknown);
    `ollama_sizes`: an Ollama server's models (`GET /api/tags`), asked of each profile's."""
    profiles = list(profiles)
    listing = _files_listing(profiles, volume_folder, running)
    if ollama_sizes is None:
        return listing
    ollama, notes = _ollama_models(profiles, running, ollama_sizes)
    return ModelListing((*listing.models, *ollama), (*listing.notes, *notes))


def _ollama_models(
    profiles: Iterable[Profile],
    running: set[tuple[str, str]] | None,
    ollama_sizes: Callable[[str], dict[str, int]],
) -> tuple[list[LocalModel], list[str]]:
    """The models on the disk of every Ollama server of a profile here that answers, and who
    uses them."""
    users: dict[tuple[str, str], list[ServiceUse]] = {}
    servers: dict[str, bool] = {}  # URL → whether one of its services runs now
    for profile in profiles:
        for service in profile.services.values():
            if service.engine.value != "ollama" or service.host != LOCAL_HOST:
                continue
            base = ollama_base(service)
            is_running = None if running is None else (profile.name, service.name) in running
            servers[base] = servers.get(base, False) or bool(is_running)
            if service.model:
                use = ServiceUse(profile.name, service.name, is_running)
                users.setdefault((base, ollama_tag(service.model)), []).append(use)
    found: list[LocalModel] = []
    notes: list[str] = []
    for base, runs in sorted(servers.items()):
        try:
            sizes = ollama_sizes(base)
        except AitherError as exc:
            if runs:  # one that is not running is expected to be silent
                notes.append(f"{exc.message}: its models are not listed")
            continue
        for name, size in sorted(sizes.items()):
            found.append(LocalModel(
                name, "ollama", ModelKind.OLLAMA, base, size, ModelState.COMPLETE,
                tuple(users.get((base, name), ())),
            ))  # fmt: skip
    return found, notes


def _files_listing(
    profiles: Iterable[Profile],
    volume_folder: Callable[[str], str | None],
    running: set[tuple[str, str]] | None,
) -> ModelListing:
    uses: dict[str, list[ServiceUse]] = {}
    hubs: set[Path] = set()
    gguf_folders: set[Path] = set()
    notes: list[str] = []
    for profile in profiles:
        for service in profile.services.values():
            engine, model = service.engine.value, service.model or ""
            if engine not in ("vllm", "llamacpp") or not model or service.host != LOCAL_HOST:
                continue
            is_running = None if running is None else (profile.name, service.name) in running
            use = ServiceUse(profile.name, service.name, is_running)
            try:
                if engine == "vllm" and not model.startswith("/") and model.count("/") == 1:
                    container = f"{HF_HUB_IN_CONTAINER}/{hf_cache_folder_name(model)}"
                    place = Path(model_place(service, container, volume_folder, writable=False))
                    hubs.add(place.parent)
                elif engine == "llamacpp" and model.endswith(".gguf"):
                    place = Path(model_place(service, model, volume_folder, writable=False))
                    gguf_folders.add(place.parent)
                else:
                    continue
            except VolumeMissing:
                continue
            except ModelNotHere as exc:
                if "Docker volume" in str(exc):
                    notes.append(f"{profile.name}/{service.name}: {exc}")
                continue
            uses.setdefault(str(place), []).append(use)
    found: list[LocalModel] = []
    for hub in sorted(hubs):
        for folder in sorted(hub.glob("models--*")):
            repo = repo_from_folder(folder.name)
            if repo is None or not folder.is_dir():
                continue
            found.append(LocalModel(
                repo, "vllm", ModelKind.HF_CACHE, str(folder), _size_on_disk(folder),
                _cache_state(folder), tuple(uses.get(str(folder), ())),
            ))  # fmt: skip
    for folder in sorted(gguf_folders):
        names = {p.name.removesuffix(INCOMPLETE) for p in folder.glob(f"*.gguf{INCOMPLETE}")}
        names |= {p.name for p in folder.glob("*.gguf") if p.is_file()}
        for name in sorted(names):
            path = folder / name
            partial = path.with_name(name + INCOMPLETE)
            size = sum(p.stat().st_size for p in (path, partial) if p.is_file())
            state = ModelState.COMPLETE if path.is_file() else ModelState.PARTIAL
            found.append(LocalModel(
                name, "llamacpp", ModelKind.GGUF, str(path), size, state,
                tuple(uses.get(str(path), ())),
            ))  # fmt: skip
    return ModelListing(tuple(found), tuple(notes))


def with_last_used(
    listing: ModelListing,
    profiles: Iterable[Profile],
    last_use: Mapping[tuple[str, str, str], float],
) -> ModelListing:
    """Each model's `last_used_ts`: the newest request answered by a service that uses it, from
    the usage ledger's (profile, backend, served model) → time. A row counts for a service only
    while the service still serves that model name, so requests a service answered with
    another model before its profile changed are not put on this one."""
    served = {
        (profile.name, service.name): service.model_name
        for profile in profiles
        for service in profile.services.values()
    }
    models = []
    for model in listing.models:
        times = [
            ts
            for use in model.used_by
            if (name := served.get((use.profile, use.service))) is not None
            and (ts := last_use.get((use.profile, use.service, name))) is not None
        ]
        models.append(replace(model, last_used_ts=max(times, default=None)))
    return replace(listing, models=tuple(models))


def find_model(listing: ModelListing, name: str) -> LocalModel:
    """The model named `name` (its name or its path)."""
    matches = [m for m in listing.models if name in (m.name, m.path)]
    if not matches:
        known = ", ".join(sorted({m.name for m in listing.models})) or "none"
        raise NotFoundError(f"no model {name!r} on this machine (there are: {known})")
    if len(matches) > 1:
        paths = ", ".join(m.path for m in matches)
        raise UsageError(f"{name!r} is in several places ({paths}): name one by its path")
    return matches[0]


def removal_refusal(model: LocalModel) -> str | None:
    """Why `model` must stay: a running service uses it, or nobody can tell."""
    running = model.running_users
    if running:
        names = ", ".join(f"{use.service!r} (profile {use.profile})" for use in running)
        first = running[0].service
        return (
            f"model {model.name} is used by running service {names}: stop it first "
            f"(`aitherctl down {first}`)"
        )
    if any(use.running is None for use in model.used_by):
        return (
            f"model {model.name} is used by {', '.join(u.label for u in model.used_by)}, and "
            "the Docker engine cannot be asked whether it runs"
        )
    return None


def remove_model(
    model: LocalModel, ollama_delete: Callable[[str, str], None] | None = None
) -> None:
    """Delete the model's files (a cache folder whole; a GGUF file and its partial download;
    an Ollama model through its server's `DELETE /api/delete`)."""
    refusal = removal_refusal(model)
    if refusal is not None:
        raise RefusedError(refusal)
    if model.kind is ModelKind.OLLAMA:
        assert ollama_delete is not None
        ollama_delete(model.path, model.name)
        return
    path = Path(model.path)
    if model.kind is ModelKind.HF_CACHE:
        shutil.rmtree(path)
        return
    for item in (path, path.with_name(path.name + INCOMPLETE)):
        if item.is_file():
            item.unlink()


def running_services(containers: Iterable[ManagedContainer]) -> set[tuple[str, str]]:
    """(profile, service) of every running managed container."""
    return {(item.profile, item.service) for item in containers if item.running}
