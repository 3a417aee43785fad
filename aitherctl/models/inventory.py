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
import posixpath
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from aitherctl.docker.model_folders import RemoteEntry, RemoteFolder
from aitherctl.docker.stack import ManagedContainer
from aitherctl.engines.vllm import HF_CACHE
from aitherctl.errors import AitherError, NotFoundError, RefusedError, UsageError
from aitherctl.models.files import (
    HF_HUB_IN_CONTAINER,
    ModelNotHere,
    VolumeMissing,
    model_place,
    mount_of,
)
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
from aitherctl.profiles.profile import LOCAL_HOST, Profile, Service

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


def ollama_listing(
    profiles: Iterable[Profile],
    running: set[tuple[str, str]] | None,
    ollama_sizes: Callable[[str], dict[str, int]],
    host: str = LOCAL_HOST,
    base_of: Callable[[Service], str] = ollama_base,
) -> ModelListing:
    """The models on the disk of every Ollama server of a profile on `host` that answers
    (`base_of`: where this machine reaches a service there), and who uses them."""
    found, notes = _ollama_models(profiles, running, ollama_sizes, host, base_of)
    return ModelListing(tuple(found), tuple(notes))


def _ollama_models(
    profiles: Iterable[Profile],
    running: set[tuple[str, str]] | None,
    ollama_sizes: Callable[[str], dict[str, int]],
    host: str = LOCAL_HOST,
    base_of: Callable[[Service], str] = ollama_base,
) -> tuple[list[LocalModel], list[str]]:
    """The models on the disk of every Ollama server of a profile on `host` that answers, and
    who uses them."""
    users: dict[tuple[str, str], list[ServiceUse]] = {}
    servers: dict[str, bool] = {}  # URL → whether one of its services runs now
    for profile in profiles:
        for service in profile.services.values():
            if service.engine.value != "ollama" or service.host != host:
                continue
            base = base_of(service)
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
                tuple(users.get((base, name), ())), host=host,
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


def remote_listing(
    host: str,
    profiles: Iterable[Profile],
    running: set[tuple[str, str]] | None,
    volume_exists: Callable[[str], bool],
    read: Callable[[Sequence[RemoteFolder]], Sequence[RemoteEntry]],
) -> ModelListing:
    """The models in the folders the profiles' services on `host` mount (`read` lists them
    there: `aitherctl.docker.model_folders.list_remote`), as `list_models` finds them here: every
    `models--*` of a vLLM service's `hub/`, every `.gguf` of a llama.cpp service's folder. A named
    volume that does not exist there holds nothing (and is not created by looking)."""
    folders: set[RemoteFolder] = set()
    uses: dict[tuple[str, str, str], list[ServiceUse]] = {}
    for profile in profiles:
        for service in profile.services.values():
            engine, model = service.engine.value, service.model or ""
            if service.host != host or not model:
                continue
            if engine == "vllm" and not model.startswith("/") and model.count("/") == 1:
                container, kind = f"{HF_HUB_IN_CONTAINER}/{hf_cache_folder_name(model)}", "hub"
                found = mount_of(service, container, (HF_CACHE,))
            elif engine == "llamacpp" and model.endswith(".gguf"):
                container, kind = model, "gguf"
                found = mount_of(service, container)
            else:
                continue
            if found is None:
                continue
            volume, relative = found
            if not volume.host.startswith("/") and not volume_exists(volume.host):
                continue
            folder = RemoteFolder(volume.host, posixpath.dirname(relative) or ".", kind)
            folders.add(folder)
            is_running = None if running is None else (profile.name, service.name) in running
            key = (folder.source, folder.relative, posixpath.basename(relative))
            uses.setdefault(key, []).append(ServiceUse(profile.name, service.name, is_running))
    entries = read(sorted(folders, key=lambda f: (f.source, f.relative, f.kind)))
    found_models: list[LocalModel] = []
    ggufs: dict[tuple[RemoteFolder, str], list[RemoteEntry]] = {}
    for entry in entries:
        if entry.folder.kind == "hub":
            repo = repo_from_folder(entry.name)
            if repo is None:
                continue
            state = ModelState.PARTIAL if entry.partial else ModelState.COMPLETE
            found_models.append(_remote_model(
                repo, "vllm", ModelKind.HF_CACHE, entry.folder, entry.name, entry.size_bytes,
                state, uses, host,
            ))  # fmt: skip
        else:
            ggufs.setdefault((entry.folder, entry.name.removesuffix(INCOMPLETE)), []).append(entry)
    for (folder, name), parts in sorted(ggufs.items(), key=lambda item: item[0][1]):
        complete = any(part.name == name for part in parts)
        state = ModelState.COMPLETE if complete else ModelState.PARTIAL
        size = sum(part.size_bytes for part in parts)
        found_models.append(_remote_model(
            name, "llamacpp", ModelKind.GGUF, folder, name, size, state, uses, host
        ))  # fmt: skip
    return ModelListing(tuple(found_models))


def _remote_model(  # noqa: PLR0917 - one caller, positions read as the columns
    name: str,
    engine: str,
    kind: ModelKind,
    folder: RemoteFolder,
    entry: str,
    size: int,
    state: ModelState,
    uses: Mapping[tuple[str, str, str], list[ServiceUse]],
    host: str,
) -> LocalModel:
    relative = posixpath.normpath(posixpath.join(folder.relative, entry))
    if folder.source.startswith("/"):
        shown = posixpath.join(folder.source, relative)
    else:  # a named volume, as `docker run -v` writes it
        shown = f"{folder.source}:/{relative}"
    return LocalModel(
        name, engine, kind, shown, size, state,
        tuple(uses.get((folder.source, folder.relative, entry), ())),
        host=host, remote_place=(folder.source, relative),
    )  # fmt: skip


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


def find_model(listing: ModelListing, name: str, host: str | None = None) -> LocalModel:
    """The model named `name` (its name or its path), on `host` when given."""
    matches = [m for m in listing.models if name in (m.name, m.path) and host in (None, m.host)]
    if not matches:
        known = ", ".join(sorted({m.name for m in listing.models})) or "none"
        where = "this machine" if host in (None, LOCAL_HOST) else f"host {host!r}"
        if host is None and any(m.host != LOCAL_HOST for m in listing.models):
            where = "any host"
        raise NotFoundError(f"no model {name!r} on {where} (there are: {known})")
    if len(matches) > 1:
        paths = ", ".join(_where(m) for m in matches)
        hosts = {m.host for m in matches}
        how = "pass --host" if len(hosts) > 1 and host is None else "name one by its path"
        raise UsageError(f"{name!r} is in several places ({paths}): {how}")
    return matches[0]


def _where(model: LocalModel) -> str:
    return model.path if model.host == LOCAL_HOST else f"{model.host}: {model.path}"


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
    model: LocalModel,
    ollama_delete: Callable[[str, str], None] | None = None,
    remote_delete: Callable[[str, str, Sequence[str]], None] | None = None,
) -> None:
    """Delete the model's files (a cache folder whole; a GGUF file and its partial download;
    an Ollama model through its server's `DELETE /api/delete`; on another host, `remote_delete`
    (host, mounted source, paths inside it) does it there)."""
    refusal = removal_refusal(model)
    if refusal is not None:
        raise RefusedError(refusal)
    if model.remote_place is not None:
        assert remote_delete is not None
        source, relative = model.remote_place
        paths = (
            [relative] if model.kind is ModelKind.HF_CACHE else [relative, relative + INCOMPLETE]
        )
        remote_delete(model.host, source, paths)
        return
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
