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

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from aitherctl.models.hub import HubClient
from aitherctl.models.ollama_pull import ollama_models, ollama_pull, ollama_tag
from aitherctl.models.pull_model import (
    PullEvent,
    PullKind,
    PullPhase,
    PullResult,
    PullTarget,
)
from aitherctl.models.pull_remote import (
    HostFoldersLike,
    RemotePlan,
    check_host_disk,
    plan_remote,
    run_remote,
)
from aitherctl.models.targets import pull_targets, settle_remote
from aitherctl.models.transfer import (
    PROGRESS_EVERY_S,
    Emit,
    FreeBytes,
    Transfer,
    check_disk,
    fetch,
    free_disk_bytes,
    link_snapshot,
    plan_transfers,
)

__all__ = ["free_disk_bytes", "pull", "pull_targets", "settle_remote"]


def pull(
    targets: Sequence[PullTarget],
    hub: HubClient,
    emit: Emit,
    *,
    free_bytes: FreeBytes = free_disk_bytes,
    clock: Callable[[], float] = time.monotonic,
    hosts: Mapping[str, HostFoldersLike] | None = None,
    staging: Path | None = None,
) -> list[PullResult]:
    """Download every target that is not present. The Hub is asked about every file and the
    disk space checked for all of them (this machine's, and for a target on another host,
    that host's folder: `hosts`, its folders; `staging`, where its files wait here) before the
    first byte is downloaded. A remote target's `present` is what `settle_remote` found."""
    planned: list[tuple[PullTarget, list[Transfer]]] = []
    remote: list[RemotePlan] = []
    results: list[PullResult] = []
    ollama: list[PullTarget] = []
    for target in targets:
        if target.remote and not target.present:
            assert hosts is not None
            if staging is None:
                from aitherctl.paths import state_dir

                staging = state_dir() / "pull-staging"
            remote.append(plan_remote(target, hub, hosts[target.host], staging))
            continue
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
            host = target.host if target.remote else None
            emit(PullEvent(PullPhase.PRESENT, target.service, note=target.destination, host=host))
            results.append(PullResult(target.service, target.repo, target.destination, 0, 0, True))
            continue
        planned.append((target, plan_transfers(target, hub)))
    downloads = [t for _, transfers in planned for t in transfers]
    check_disk([*downloads, *(t for plan in remote for t in plan.to_download())], free_bytes)
    check_host_disk(remote)
    for target, transfers in planned:
        downloaded = sum(fetch(transfer, hub, emit, clock) for transfer in transfers)
        if target.kind is PullKind.HF_CACHE:
            link_snapshot(target, transfers)
        results.append(
            PullResult(
                target.service, target.repo, target.destination, downloaded, len(transfers), False
            )
        )
    for plan in remote:
        assert hosts is not None
        results.append(run_remote(plan, hub, hosts[plan.target.host], emit, clock))
    for target in ollama:
        layers = ollama_pull(
            hub.client, target.destination, target.service, target.repo,
            emit=emit, clock=clock, progress_every_s=PROGRESS_EVERY_S,
        )  # fmt: skip
        results.append(
            PullResult(target.service, target.repo, target.destination, layers, 0, False)
        )
    return results
