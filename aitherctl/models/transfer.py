"""One file's way from the Hub to its place on this machine: what is already there, the disk
check before any byte, the resumable transfer (`NAME.incomplete` beside its final place,
continued with `Range`; an LFS file's sha256, its ETag, checked before it takes its place) and
huggingface_hub's snapshot links. `pull` runs them for this machine's services; `pull_remote`
for another host's, into a staging folder here first."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aitherctl.errors import AitherError, RefusedError
from aitherctl.models.hub import FileMeta, HubClient, HubUnreachableError
from aitherctl.models.pull_model import (
    SAFETENSORS_INDEX,
    PullEvent,
    PullKind,
    PullPhase,
    PullTarget,
    RateMeter,
    vllm_files,
)
from aitherctl.units import format_bytes

RETRIES = 3  # a broken transfer continues from where it stopped this many times
PROGRESS_EVERY_S = 1.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

FreeBytes = Callable[[Path], int]  # free bytes of the file system holding a folder
Emit = Callable[[PullEvent], None]


def free_disk_bytes(folder: Path) -> int:
    """`statvfs` as `df` reports the space available to this user."""
    return shutil.disk_usage(folder).free


@dataclass(frozen=True, slots=True)
class Transfer:
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


def plan_transfers(target: PullTarget, hub: HubClient) -> list[Transfer]:
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
        transfer = Transfer(target, name, meta, final, 0)
        if final.is_file() and (meta.size is None or final.stat().st_size == meta.size):
            have = final.stat().st_size
        elif transfer.incomplete.is_file():
            have = transfer.incomplete.stat().st_size
        else:
            have = 0
        transfers.append(Transfer(target, name, meta, final, have))
    return transfers


def _existing_folder(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(transfers: Iterable[Transfer], free_bytes: FreeBytes) -> None:
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


def fetch(transfer: Transfer, hub: HubClient, emit: Emit, clock: Callable[[], float]) -> int:
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
                    handle.flush()  # on disk as received: what `ls` and a resume after kill -9 see
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


def link_snapshot(target: PullTarget, transfers: Sequence[Transfer]) -> None:
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
