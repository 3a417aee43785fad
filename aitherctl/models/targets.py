"""What `aitherctl pull` would download for each service, and whether it is there already:
read from the profile and the folders the services mount, with nothing of the download itself
imported (hashing, the Hub client, the transfers), so that a switch whose models are all in
place pays for this part only (`pull.py` downloads what is missing).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from aitherctl.engines.vllm import HF_CACHE
from aitherctl.models.files import (
    HF_HUB_IN_CONTAINER,
    ModelNotHere,
    hf_cache_present,
    model_place,
    mount_of,
)
from aitherctl.models.ollama_pull import ollama_base
from aitherctl.models.pull_model import (
    NotPullable,
    PullKind,
    PullTarget,
    hf_cache_folder_name,
    parse_source,
)
from aitherctl.profiles.profile import LOCAL_HOST, Profile, Service

if TYPE_CHECKING:
    from aitherctl.models.pull_remote import HostFoldersLike


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
    from aitherctl.models.pull_remote import remote_present

    return [
        replace(t, present=remote_present(t, hosts[t.host])) if t.remote else t for t in targets
    ]
