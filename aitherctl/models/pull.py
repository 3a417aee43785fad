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

import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from aitherctl.engines.vllm import HF_CACHE
from aitherctl.models.files import (
    HF_HUB_IN_CONTAINER,
    ModelNotHere,
    hf_cache_present,
    model_place,
    mount_of,
)
from aitherctl.models.hub import HubClient
from aitherctl.models.ollama_pull import ollama_base, ollama_models, ollama_pull, ollama_tag
from aitherctl.models.pull_model import (
    NotPullable,
    PullEvent,
    PullKind,
    PullPhase,
    PullResult,
    PullTarget,
    hf_cache_folder_name,
    parse_source,
)
from aitherctl.models.pull_remote import (
    HostFoldersLike,
    RemotePlan,
    check_host_disk,
    plan_remote,
    remote_present,
    run_remote,
)
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
from aitherctl.profiles.profile import LOCAL_HOST, Profile, Service

__all__ = ["free_disk_bytes", "pull", "pull_targets"]


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
        return _remote_target(service)
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


def _remote_target(service: Service) -> PullTarget | NotPullable:
    """A service on another host: where its container will read the model there (the mount's
    source on that host, and the place inside it); whether it is there is asked later."""
    engine, model = service.engine.value, service.model or ""
    where = f"on host {service.host!r}"
    if engine == "ollama":
        return NotPullable(
            service.name, f"{where}: its Ollama server pulls it when the switch starts it",
            missing=False,
        )  # fmt: skip
    if engine == "vllm" and not model.startswith("/"):
        if model.count("/") != 1:
            return NotPullable(service.name, f"{model!r} is not a Hub id ORG/NAME")
        container = f"{HF_HUB_IN_CONTAINER}/{hf_cache_folder_name(model)}"
        repo, revision, kind, filename = model, "main", PullKind.HF_CACHE, None
    elif service.source is not None and model.startswith("/"):
        repo, filename = parse_source(service.source)
        container, revision, kind = model, "main", PullKind.FILE
    else:
        return NotPullable(
            service.name,
            f"{where}: its model {model} is a path and no `source: ORG/NAME:FILE` says where "
            "to download it from",
            missing=False,
        )
    found = mount_of(service, container, (HF_CACHE,) if engine == "vllm" else ())
    if found is None:
        return NotPullable(
            service.name,
            f"{container} is in no folder or volume the service mounts: add one under "
            "`volumes:` so the model outlives the container",
        )
    volume, relative = found
    if volume.host.startswith("/"):
        shown = posixpath.join(volume.host, relative)
    else:  # a named volume, as `docker run -v` writes it (and `models` shows it)
        shown = f"{volume.host}:/{relative}"
    return PullTarget(
        service.name, engine, repo, revision, kind, shown, filename=filename,
        host=service.host, source=volume.host, relative=relative,
    )  # fmt: skip


def settle_remote(
    targets: Sequence[PullTarget], hosts: Mapping[str, HostFoldersLike]
) -> list[PullTarget]:
    """`targets`, each on another host with `present` as that host's folder says (one
    short-lived container per target there)."""
    return [
        replace(t, present=remote_present(t, hosts[t.host])) if t.remote else t for t in targets
    ]


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
