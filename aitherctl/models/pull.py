"""`aitherctl pull`: download the models a profile's services need, into the very places their
engines read, before anything is switched.

- vLLM (`model: ORG/NAME`): the repository's files vLLM loads (`pull_model.vllm_files`: one
  weights format, not `original/`) into huggingface_hub's cache layout under the
  folder the service mounts at `/root/.cache/huggingface` (its own bind mount, or the named
  volume `aither-hf-cache`): `hub/models--ORG--NAME/blobs/ETAG`, `snapshots/COMMIT/FILE` a
  relative link to the blob, `refs/main` the commit. This is what vLLM (through
  huggingface_hub) finds without a download.
- llama.cpp (`source: ORG/NAME:FILE`): that file, at the path `model` names, through the
  service's mounts.
- Ollama (`model: NAME[:TAG]`): through the running Ollama server's own `POST /api/pull`, into
  its models volume (`ollama_pull.py`); Ollama resumes and checks its own disk.

A transfer writes `NAME.incomplete` beside its final place and continues it with `Range` on the
next try (a broken connection is retried from where it stopped, three times; Ctrl-C leaves the
file for the next `pull`). Free disk space is checked for every target before a byte is
downloaded; an LFS file's sha256 (its ETag) is checked before it takes its place.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aitherctl.errors import AitherError, RefusedError
from aitherctl.models.files import (
    HF_HUB_IN_CONTAINER,
    ModelNotHere,
    hf_cache_present,
    model_place,
)
from aitherctl.models.hub import FileMeta, HubClient, HubUnreachableError
from aitherctl.models.ollama_pull import ollama_base, ollama_models, ollama_pull, ollama_tag
from aitherctl.models.pull_model import (
    SAFETENSORS_INDEX,
    NotPullable,
    PullEvent,
    PullKind,
    PullPhase,
    PullResult,
    PullTarget,
    RateMeter,
    hf_cache_folder_name,
    parse_source,
    vllm_files,
)
from aitherctl.profiles.profile import LOCAL_HOST, Profile, Service
from aitherctl.units import format_bytes

RETRIES = 3  # a broken transfer continues from where it stopped this many times
PROGRESS_EVERY_S = 1.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

FreeBytes = Callable[[Path], int]  # free bytes of the file system holding a folder
Emit = Callable[[PullEvent], None]


def free_disk_bytes(folder: Path) -> int:
    """`statvfs` as `df` reports the space available to this user."""
    return shutil.disk_usage(folder).free


def pull_targets(
    profile: Profile, names: Sequence[str] | None, volume_folder: Callable[[str], str]
) -> list[PullTarget | NotPullable]:
    """What to download for each named service (all of the profile's when `names` is None)."""
    chosen = [profile.service(name) for name in names] if names else profile.services.values()
    targets: list[PullTarget | NotPullable] = []
    for service in chosen:
        targets.append(_target(service, volume_folder))
    return targets


def _target(service: Service, volume_folder: Callable[[str], str]) -> PullTarget | NotPullable:
    engine = service.engine.value
    model = service.model or ""
    if engine == "ollama" and service.host == LOCAL_HOST:
        if not model:
            return NotPullable(service.name, "it names no `model` to pull", missing=False)
        return PullTarget(service.name, engine, model, "", PullKind.OLLAMA, ollama_base(service))
    if engine not in ("vllm", "llamacpp", "ollama"):
        return NotPullable(
            service.name, f"{engine}: its models are not pulled by aitherctl yet", missing=False
        )
    if service.host != LOCAL_HOST:
        return NotPullable(
            service.name, f"on host {service.host!r}: pull downloads to this machine only, yet"
        )
    try:
        if engine == "vllm" and not model.startswith("/"):
            if model.count("/") != 1:
                return NotPullable(service.name, f"{model!r} is not a Hub id ORG/NAME")
            container = f"{HF_HUB_IN_CONTAINER}/{hf_cache_folder_name(model)}"
            folder = model_place(service, container, volume_folder)
            return PullTarget(
                service.name, engine, model, "main", PullKind.HF_CACHE, folder,
                present=hf_cache_present(Path(folder)),
            )  # fmt: skip
        if service.source is None:
            path = model_place(service, model, volume_folder) if model.startswith("/") else ""
            if path and Path(path).exists():
                return PullTarget(
                    service.name, engine, "", "main", PullKind.FILE, path, present=True
                )
            if engine == "vllm":
                return NotPullable(
                    service.name,
                    f"its model {model} is a path, not a Hub id: put the model there, or name "
                    "it ORG/NAME",
                )
            return NotPullable(
                service.name,
                f"its model {model} is a path and no `source: ORG/NAME:FILE` says where to "
                "download it from: add one, or put the file there",
            )
        repo, filename = parse_source(service.source)
        path = model_place(service, model, volume_folder)
        return PullTarget(
            service.name, engine, repo, "main", PullKind.FILE, path, filename=filename,
            present=Path(path).is_file(),
        )  # fmt: skip
    except ModelNotHere as exc:
        return NotPullable(service.name, str(exc))


@dataclass(frozen=True, slots=True)
class _Transfer:
    """One file to fetch: its metadata, where it ends up, what is already on disk."""

    target: PullTarget
    name: str
    meta: FileMeta
    final: Path  # the blob (cache) or the file
    have_bytes: int  # complete: its size; else the `.incomplete` part's

    @property
    def incomplete(self) -> Path:
        return self.final.with_name(self.final.name + ".incomplete")

    @property
    def missing_bytes(self) -> int:
        return max(0, (self.meta.size or 0) - self.have_bytes)


def _transfers(target: PullTarget, hub: HubClient) -> list[_Transfer]:
    if target.kind is PullKind.FILE:
        assert target.filename is not None
        names = [target.filename]
    else:
        names = [name for name, _ in hub.listing(target.repo, target.revision).files]
        shards = None
        if SAFETENSORS_INDEX in names:
            index = hub.read_json(target.repo, target.revision, SAFETENSORS_INDEX)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if isinstance(weight_map, dict):
                shards = {str(shard) for shard in weight_map.values()}
        names = vllm_files(names, shards)
    transfers = []
    for name in names:
        meta = hub.file_meta(target.repo, target.revision, name)
        if target.kind is PullKind.FILE:
            final = Path(target.destination)
        else:
            final = Path(target.destination) / "blobs" / meta.etag
        transfer = _Transfer(target, name, meta, final, 0)
        if final.is_file() and (meta.size is None or final.stat().st_size == meta.size):
            have = final.stat().st_size
        elif transfer.incomplete.is_file():
            have = transfer.incomplete.stat().st_size
        else:
            have = 0
        transfers.append(_Transfer(target, name, meta, final, have))
    return transfers


def _existing_folder(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(transfers: Iterable[_Transfer], free_bytes: FreeBytes) -> None:
    """Refuse before any download when a file system cannot hold what is still missing."""
    needs: dict[int, tuple[Path, int, list[str]]] = {}
    for transfer in transfers:
        if not transfer.missing_bytes:
            continue
        folder = _existing_folder(transfer.final.parent)
        device = folder.stat().st_dev
        where, total, services = needs.get(device, (folder, 0, []))
        if transfer.target.service not in services:
            services.append(transfer.target.service)
        needs[device] = (where, total + transfer.missing_bytes, services)
    for folder, needed, services in needs.values():
        free = free_bytes(folder)
        if needed > free:
            names = ", ".join(repr(name) for name in services)
            raise RefusedError(
                f"not enough disk space in {folder} for {names}: the download needs "
                f"{format_bytes(needed)}, {format_bytes(free)} is free; nothing was downloaded"
            )


def _fetch(transfer: _Transfer, hub: HubClient, emit: Emit, clock: Callable[[], float]) -> int:
    """Download one file to its final place; the bytes transferred."""
    meta = transfer.meta
    service, name = transfer.target.service, transfer.name
    if transfer.final.is_file() and transfer.have_bytes == (meta.size or transfer.have_bytes):
        return 0
    transfer.final.parent.mkdir(parents=True, exist_ok=True)
    partial = transfer.incomplete
    start = partial.stat().st_size if partial.is_file() else 0
    if meta.size is not None and start > meta.size:
        start = 0
    digest = hashlib.sha256() if _SHA256.match(meta.etag) else None
    if digest is not None and start:
        with partial.open("rb") as handle:
            while block := handle.read(4 * 1024 * 1024):
                digest.update(block)
    emit(PullEvent(PullPhase.START, service, name, start, meta.size, resumed_from_bytes=start))
    meter = RateMeter(clock())
    last = clock()
    done = start
    tries = 0
    with partial.open("ab" if start else "wb") as handle:
        while True:
            try:
                for chunk in hub.stream(meta, done, f"{transfer.target.repo}/{name}"):
                    handle.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    done += len(chunk)
                    meter.add(len(chunk))
                    now = clock()
                    if now - last >= PROGRESS_EVERY_S:
                        last = now
                        remaining = None if meta.size is None else meta.size - done
                        emit(PullEvent(
                            PullPhase.PROGRESS, service, name, done, meta.size,
                            meter.rate(now), meter.eta(now, remaining),
                        ))  # fmt: skip
                break
            except HubUnreachableError as exc:
                tries += 1
                handle.flush()
                if tries > RETRIES:
                    raise HubUnreachableError(
                        f"{exc.message}; `aitherctl pull` continues it from there"
                    ) from None
                emit(PullEvent(PullPhase.RETRY, service, name, done, meta.size, note=exc.message))
    if meta.size is not None and done != meta.size:
        raise HubUnreachableError(
            f"{name}: got {done:,} of {meta.size:,} bytes; `aitherctl pull` continues it"
        )
    if digest is not None and digest.hexdigest() != meta.etag:
        partial.unlink()
        raise AitherError(
            f"{transfer.target.repo}/{name}: the download does not match its sha256; it was "
            "removed, run `aitherctl pull` again"
        )
    os.replace(partial, transfer.final)
    now = clock()
    emit(PullEvent(PullPhase.DONE, service, name, done, meta.size or done, meter.rate(now)))
    return done - start


def _link_snapshot(target: PullTarget, transfers: Sequence[_Transfer]) -> None:
    """snapshots/COMMIT/FILE → ../../blobs/ETAG (deeper files: more `..`), refs/REV."""
    folder = Path(target.destination)
    commit = transfers[0].meta.commit if transfers else None
    if commit is None:
        return
    snapshot = folder / "snapshots" / commit
    for transfer in transfers:
        link = snapshot / transfer.name
        link.parent.mkdir(parents=True, exist_ok=True)
        relative = os.path.relpath(transfer.final, link.parent)
        if link.is_symlink() or link.exists():
            if os.readlink(link) == relative:
                continue
            link.unlink()
        link.symlink_to(relative)
    if target.revision != commit:
        refs = folder / "refs" / target.revision
        refs.parent.mkdir(parents=True, exist_ok=True)
        refs.write_text(commit, encoding="utf-8")


def pull(
    targets: Sequence[PullTarget],
    hub: HubClient,
    emit: Emit,
    *,
    free_bytes: FreeBytes = free_disk_bytes,
    clock: Callable[[], float] = time.monotonic,
) -> list[PullResult]:
    """Download every target that is not present. The Hub is asked about every file and the
    disk space checked for all of them before the first byte is downloaded."""
    planned: list[tuple[PullTarget, list[_Transfer]]] = []
    results: list[PullResult] = []
    ollama: list[PullTarget] = []
    for target in targets:
        if target.kind is PullKind.OLLAMA:
            have = ollama_models(hub.client, target.destination, target.service)
            if ollama_tag(target.repo) in have:
                emit(PullEvent(PullPhase.PRESENT, target.service, note=f"Ollama has {target.repo}"))
                results.append(
                    PullResult(target.service, target.repo, target.destination, 0, 0, True)
                )
            else:
                ollama.append(target)
            continue
        if target.present:
            emit(PullEvent(PullPhase.PRESENT, target.service, note=target.destination))
            results.append(PullResult(target.service, target.repo, target.destination, 0, 0, True))
            continue
        planned.append((target, _transfers(target, hub)))
    check_disk((t for _, transfers in planned for t in transfers), free_bytes)
    for target, transfers in planned:
        downloaded = sum(_fetch(transfer, hub, emit, clock) for transfer in transfers)
        if target.kind is PullKind.HF_CACHE:
            _link_snapshot(target, transfers)
        results.append(
            PullResult(
                target.service, target.repo, target.destination, downloaded, len(transfers), False
            )
        )
    for target in ollama:
        layers = ollama_pull(
            hub.client, target.destination, target.service, target.repo,
            emit=emit, clock=clock, progress_every_s=PROGRESS_EVERY_S,
        )  # fmt: skip
        results.append(
            PullResult(target.service, target.repo, target.destination, layers, 0, False)
        )
    return results
