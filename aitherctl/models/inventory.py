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
from collections.abc import Callable, Iterable
from pathlib import Path

from aitherctl.docker.stack import ManagedContainer
from aitherctl.errors import NotFoundError, RefusedError, UsageError
from aitherctl.models.files import HF_HUB_IN_CONTAINER, ModelNotHere, VolumeMissing, model_place
from aitherctl.models.local_model import (
    LocalModel,
    ModelKind,
    ModelListing,
    ModelState,
    ServiceUse,
    repo_from_folder,
)
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
) -> ModelListing:
    """Every model found; `running`: the (profile, service) pairs running now (None: unknown)."""
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


def remove_model(model: LocalModel) -> None:
    """Delete the model's files (a cache folder whole; a GGUF file and its partial download)."""
    refusal = removal_refusal(model)
    if refusal is not None:
        raise RefusedError(refusal)
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
