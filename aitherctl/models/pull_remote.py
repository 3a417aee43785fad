"""A pull for a service on another Docker host: downloaded here, then copied into the folder that
host's container will read.

Why through this machine: the Hub (or the mirror `HF_ENDPOINT` names, or the token that opens a
gated repository) is what this machine reaches, and another host may have no route to it; what
reaches the host is its Docker engine, over the transport `host:` names (SSH), which can create
a container and copy files into it. So each file is downloaded, resumably and checked as for
this machine (`transfer.py`), into a staging folder under aitherctl's state folder
(`pull-staging/HOST/...`), then copied into the host's folder (`docker.model_folders.
HostFolders`: the engine's archive API into a container that is never started and has no
network) as `NAME.incomplete`, and renamed when every file is there (an LFS file once its
sha256 there is its ETag's: a damaged one is removed, and the next `pull` copies it again);
the staged copy is then removed. Same layout as on this machine: huggingface_hub's cache
(`blobs/ETAG`, `snapshots/COMMIT/FILE` links, `refs/main`, written last) for vLLM, the file at
`model`'s path for llama.cpp.

Asked of the host first, in one short-lived container: is the model there already (`refs/main`
and no `.incomplete` blob; the file), which files are (same size, under their final name or as
a whole `.incomplete` left by a copy that was cut off before its rename), and the free space of
its folder (`df`). A re-run after Ctrl-C or a dropped link downloads and copies only what is
missing. Both disks are checked before a byte is downloaded: this machine's for the staging,
the host's for the copy.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from aitherctl.errors import RefusedError
from aitherctl.models.hub import HubClient
from aitherctl.models.pull_model import (
    PullEvent,
    PullKind,
    PullPhase,
    PullResult,
    PullTarget,
    RateMeter,
)
from aitherctl.models.transfer import (
    PROGRESS_EVERY_S,
    Emit,
    Transfer,
    fetch,
    plan_transfers,
)
from aitherctl.units import format_bytes

INCOMPLETE = ".incomplete"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FolderStateLike(Protocol):
    @property
    def free_bytes(self) -> int | None: ...
    @property
    def sizes(self) -> dict[str, int]: ...
    @property
    def texts(self) -> dict[str, str]: ...
    @property
    def dirs(self) -> frozenset[str]: ...
    @property
    def partials(self) -> dict[str, tuple[str, ...]]: ...


class HostFoldersLike(Protocol):
    """`aitherctl.docker.model_folders.HostFolders`: one host's folders, read and written."""

    host: str

    def state(self, source: str, queries: Sequence[tuple[str, str]]) -> FolderStateLike: ...

    def copy(
        self, source: str, files: Sequence[tuple[Path, str]], on_bytes: Callable[[int, int], None]
    ) -> None: ...

    def finish(self, source: str, operations: Sequence[tuple[str, str, str]]) -> None: ...


def remote_present(target: PullTarget, folders: HostFoldersLike) -> bool:
    """Whether the host holds the model whole: the file; or the cache's `refs/main` (written
    last) with no `.incomplete` blob."""
    source, rel = _where(target)
    if target.kind is PullKind.FILE:
        return rel in folders.state(source, [("file", rel)]).sizes
    ref, blobs = posixpath.join(rel, "refs", target.revision), posixpath.join(rel, "blobs")
    state = folders.state(source, [("text", ref), ("partials", blobs)])
    return bool(state.texts.get(ref)) and not state.partials.get(blobs)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a pull to another host: its staged download here, its final place in the
    host's folder, and how much of it is there already."""

    transfer: Transfer  # the staged download
    relative: str  # its final place, relative to the host folder
    on_host: bool  # there already, whole, under its final name
    sent: bool  # there whole as `.incomplete`: only the rename is left

    @property
    def to_copy(self) -> bool:
        return not self.on_host and not self.sent


@dataclass(frozen=True, slots=True)
class RemotePlan:
    """A pull to another host, after asking the host: each file and what it still needs, and the
    free space of the host's folder."""

    target: PullTarget
    files: tuple[RemoteFile, ...]
    free_bytes: int | None  # the host folder's

    @property
    def copy_bytes(self) -> int:
        return sum(f.transfer.meta.size or 0 for f in self.files if f.to_copy)

    def to_download(self) -> list[Transfer]:
        return [f.transfer for f in self.files if f.to_copy]


def staging_place(staging: Path, target: PullTarget) -> Path:
    """Where `target` is downloaded to here: `STAGING/HOST/SOURCE/RELATIVE` (the source's `/`
    made safe for one folder name)."""
    source, rel = _where(target)
    return staging / target.host / source.strip("/").replace("/", "%") / rel


def plan_remote(
    target: PullTarget, hub: HubClient, folders: HostFoldersLike, staging: Path
) -> RemotePlan:
    """The files of `target` (asked of the Hub), what the host has of them, its free space."""
    source, rel = _where(target)
    staged = replace(target, destination=str(staging_place(staging, target)))
    transfers = plan_transfers(staged, hub)
    finals = [_final(target, rel, t) for t in transfers]
    queries = [("file", p) for final in finals for p in (final, final + INCOMPLETE)]
    state = folders.state(source, queries)
    files = []
    for transfer, final in zip(transfers, finals, strict=True):
        size = transfer.meta.size
        there = state.sizes.get(final)
        sent = state.sizes.get(final + INCOMPLETE)
        on_host = there is not None and (size is None or there == size)
        files.append(RemoteFile(transfer, final, on_host, not on_host and sent == size))
    return RemotePlan(target, tuple(files), state.free_bytes)


def check_host_disk(plans: Sequence[RemotePlan]) -> None:
    """Refuse before any download when a host folder cannot hold what is still to copy."""
    needs: dict[tuple[str, str], tuple[int, int | None, list[str]]] = {}
    for plan in plans:
        key = (plan.target.host, _where(plan.target)[0])
        needed, _, services = needs.get(key, (0, plan.free_bytes, []))
        services.append(plan.target.service)
        needs[key] = (needed + plan.copy_bytes, plan.free_bytes, services)
    for (host, source), (needed, free, services) in needs.items():
        if free is not None and needed > free:
            names = ", ".join(repr(name) for name in services)
            raise RefusedError(
                f"not enough disk space on host {host!r} in {source} for {names}: the copy "
                f"needs {format_bytes(needed)}, {format_bytes(free)} is free; nothing was "
                "downloaded"
            )


def run_remote(
    plan: RemotePlan,
    hub: HubClient,
    folders: HostFoldersLike,
    emit: Emit,
    clock: Callable[[], float] = time.monotonic,
) -> PullResult:
    """Download what the host lacks, copy it there, put it in place, drop the staged copy."""
    target = plan.target
    source, rel = _where(target)

    def tagged(event: PullEvent) -> None:
        emit(replace(event, host=target.host))

    downloaded = sum(fetch(t, hub, tagged, clock) for t in plan.to_download())
    sending = [f for f in plan.files if f.to_copy]
    if sending:
        _copy(target, folders, sending, emit, clock)
    operations: list[tuple[str, str, str]] = []
    for item in plan.files:
        if item.on_host:
            continue
        if _SHA256.match(item.transfer.meta.etag):  # an LFS file: its ETag is its sha256
            operations.append(("check", item.transfer.meta.etag, item.relative + INCOMPLETE))
        operations.append(("mv", item.relative + INCOMPLETE, item.relative))
    commit = next((f.transfer.meta.commit for f in plan.files), None)
    if target.kind is PullKind.HF_CACHE and commit is not None:
        for item in plan.files:
            link = posixpath.join(rel, "snapshots", commit, item.transfer.name)
            operations.append(("ln", posixpath.relpath(item.relative, posixpath.dirname(link)),
                               link))  # fmt: skip
        # refs/REV last: it is what says the model is whole (`remote_present`).
        operations.append(("write", commit, posixpath.join(rel, "refs", target.revision)))
    folders.finish(source, operations)
    for item in plan.files:
        for path in (item.transfer.final, item.transfer.incomplete):
            path.unlink(missing_ok=True)
    if target.kind is PullKind.HF_CACHE:
        shutil.rmtree(plan.files[0].transfer.final.parent.parent, ignore_errors=True)
    return PullResult(
        target.service, target.repo, target.destination, downloaded, len(plan.files), False
    )


def _copy(
    target: PullTarget,
    folders: HostFoldersLike,
    sending: Sequence[RemoteFile],
    emit: Emit,
    clock: Callable[[], float],
) -> None:
    """Copy `sending` to the host, a COPY event per file as it starts and every second, then
    COPIED."""
    sizes = [item.transfer.final.stat().st_size for item in sending]
    done = [0] * len(sending)
    meters: dict[int, RateMeter] = {}
    last = [clock()]

    def event(phase: PullPhase, index: int) -> PullEvent:
        now = clock()
        meter = meters.setdefault(index, RateMeter(now))
        return PullEvent(
            phase, target.service, sending[index].transfer.name, done[index], sizes[index],
            meter.rate(now), meter.eta(now, sizes[index] - done[index]), host=target.host,
        )  # fmt: skip

    started: set[int] = set()

    def finished_before(index: int) -> None:
        # Files go in order: when one starts, those before it are there.
        for before in range(index):
            if before not in started:
                started.add(before)
                emit(event(PullPhase.COPY, before))
            if before not in copied:
                copied.add(before)
                emit(event(PullPhase.COPIED, before))

    copied: set[int] = set()

    def on_bytes(index: int, count: int) -> None:
        if index not in started:
            finished_before(index)
            started.add(index)
            emit(event(PullPhase.COPY, index))
        done[index] += count
        meters[index].add(count)
        if clock() - last[0] >= PROGRESS_EVERY_S:
            last[0] = clock()
            emit(event(PullPhase.COPY, index))

    files = [(item.transfer.final, item.relative + INCOMPLETE) for item in sending]
    folders.copy(_where(target)[0], files, on_bytes)
    finished_before(len(sending))


def _where(target: PullTarget) -> tuple[str, str]:
    assert target.source is not None
    return target.source, target.relative


def _final(target: PullTarget, rel: str, transfer: Transfer) -> str:
    if target.kind is PullKind.FILE:
        return rel
    return posixpath.join(rel, "blobs", transfer.meta.etag)


def group_by_host(targets: Sequence[PullTarget]) -> Mapping[str, list[PullTarget]]:
    by_host: dict[str, list[PullTarget]] = {}
    for target in targets:
        by_host.setdefault(target.host, []).append(target)
    return by_host
