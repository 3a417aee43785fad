"""Find a service's model on this machine and read its metadata: the GGUF header, or
`config.json` with the safetensors index or headers. Only headers are read (a few MB at most),
never the weights.

Where a model is: the service's `model` is a path inside its container, or (vLLM) a Hugging Face
id that vLLM looks up in its cache, `/root/.cache/huggingface/hub/models--ORG--NAME/snapshots/
REV/` (huggingface_hub's cache layout; `refs/main` names the revision). Either is mapped to this
machine through the service's bind-mounted `volumes`. A named Docker volume (the default
`aither-hf-cache`) or a folder on another host cannot be read here: the size is then unknown
until the model is downloaded, which is never a reason to refuse.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aitherctl.engines.vllm import HF_CACHE
from aitherctl.errors import AitherError
from aitherctl.models.gguf import GgufHeader, MetadataError, parse_gguf_header
from aitherctl.models.shape import (
    ModelShape,
    SafetensorsTensors,
    safetensors_tensors,
    shape_from_gguf,
    shape_from_hf,
)
from aitherctl.models.shape_cache import cached_shape
from aitherctl.profiles.profile import LOCAL_HOST, Service, Volume

HF_HUB_IN_CONTAINER = "/root/.cache/huggingface/hub"  # vLLM's image: HF_HOME unset, root user
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


class ModelNotHere(MetadataError):
    """The model's files are not readable on this machine (yet)."""


def _gguf_header(path: Path) -> GgufHeader:
    try:
        with path.open("rb") as handle:
            return parse_gguf_header(handle.read, str(path))
    except OSError as exc:
        raise MetadataError(f"{path}: {exc.strerror or exc}") from None


# llama.cpp's split files: PREFIX-00001-of-00003.gguf (`llama_split_path`, src/llama.cpp); the
# first holds the metadata and `split.count`, each its own tensors.
_SPLIT = re.compile(r"^(?P<prefix>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def read_gguf(path: Path) -> ModelShape:
    """A GGUF file's shape; for a split model (its first file), every file's tensors. Kept in
    the shape cache while the files are unchanged (walking the header costs tens of ms)."""
    return cached_shape(path, _read_gguf)


def _read_gguf(path: Path) -> tuple[ModelShape, list[Path]]:
    header = _gguf_header(path)
    count = header.metadata.get("split.count")
    shape = shape_from_gguf(header, str(path))
    if not isinstance(count, int) or count <= 1:
        return shape, [path]
    match = _SPLIT.match(path.name)
    if match is None:
        raise MetadataError(f"{path}: split into {count} files, but not named PREFIX-00001-of-N")
    weights = parameters = 0
    parts = []
    for index in range(1, count + 1):
        part = path.with_name(f"{match['prefix']}-{index:05d}-of-{count:05d}.gguf")
        if not part.is_file():
            raise ModelNotHere(f"no {part.name} yet")
        tensors = (header if part == path else _gguf_header(part)).tensors
        weights += sum(tensor.nbytes for tensor in tensors)
        parameters += sum(tensor.elements for tensor in tensors)
        parts.append(part)
    return replace(shape, weights_bytes=weights, parameters=parameters), parts


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetadataError(f"{path}: cannot read it as JSON ({exc})") from None


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header at the start of a .safetensors file: u64 little-endian length, then JSON."""
    try:
        with path.open("rb") as handle:
            start = handle.read(8)
            if len(start) != 8:
                raise MetadataError(f"{path}: too short for a safetensors file")
            (size,) = struct.unpack("<Q", start)
            if size > _MAX_SAFETENSORS_HEADER:
                raise MetadataError(f"{path}: not a safetensors file (header of {size} bytes)")
            header = json.loads(handle.read(size))
    except OSError as exc:
        raise MetadataError(f"{path}: {exc.strerror or exc}") from None
    except ValueError:
        raise MetadataError(f"{path}: its safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise MetadataError(f"{path}: its safetensors header is not a JSON object")
    return header


def read_hf_folder(folder: Path) -> ModelShape:
    """`config.json` plus the safetensors headers of every shard present, or, when shards are
    missing, the index's `metadata.total_size`."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelNotHere(f"{folder} has no config.json")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise MetadataError(f"{config_path}: not a JSON object")
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        index = _read_json(index_path)
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if shards and all((folder / shard).is_file() for shard in shards):
            tensors = safetensors_tensors([_safetensors_header(folder / s) for s in shards])
        else:
            total = (index.get("metadata") or {}).get("total_size")
            if not isinstance(total, int):
                raise MetadataError(f"{index_path}: no metadata.total_size")
            tensors = SafetensorsTensors(total, None)
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ModelNotHere(f"{folder} has no .safetensors files")
        tensors = safetensors_tensors([_safetensors_header(path) for path in files])
    return shape_from_hf(config, tensors, str(folder))


def hf_snapshot(repo_folder: Path) -> Path | None:
    """The snapshot huggingface_hub would use: `refs/main`'s revision, else the only one."""
    ref = repo_folder / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8").strip()
        if (repo_folder / "snapshots" / revision).is_dir():
            return repo_folder / "snapshots" / revision
    if not repo_folder.is_dir():
        return None
    snapshots = sorted((repo_folder / "snapshots").glob("*"))
    return snapshots[0] if len(snapshots) == 1 else None


def mount_of(
    service: Service, container_path: str, defaults: tuple[Volume, ...] = ()
) -> tuple[Volume, str] | None:
    """The deepest of the service's mounts (then `defaults`) that holds `container_path`, and
    the path relative to it ("." for the mount itself); None when none does."""
    best = None
    for volume in (*service.volumes, *defaults):  # the service's own mounts win
        target = volume.container.rstrip("/") or "/"
        inside = container_path == target or container_path.startswith(target.rstrip("/") + "/")
        if inside and (best is None or len(target) > len(best.container)):
            best = volume
    if best is None:
        return None
    return best, posixpath.relpath(container_path, best.container)


def host_path(service: Service, container_path: str, defaults: tuple[Volume, ...] = ()) -> Path:
    """Where `container_path` is on this machine through the service's bind mounts (the deepest
    mount that holds it). `ModelNotHere` when it is not on this machine: a named volume, another
    host, no mount."""
    if service.host != LOCAL_HOST:
        raise ModelNotHere(f"on host {service.host!r}, not read from here")
    found = mount_of(service, container_path, defaults)
    if found is None:
        raise ModelNotHere(f"{container_path} is in no folder mounted from this machine")
    best, relative = found
    if not best.host.startswith("/"):
        raise ModelNotHere(f"in Docker volume {best.host!r}, not read from here")
    return Path(best.host) / relative if relative != "." else Path(best.host)


def read_model_shape(service: Service) -> ModelShape:
    """The shape of `service`'s model as its engine will load it. Raises `ModelNotHere` when the
    files cannot be read on this machine, `MetadataError` when they are there but unreadable."""
    model = service.model
    if not model:
        raise ModelNotHere("the service names no model")
    if model.startswith("/"):
        path = host_path(service, model)
        if path.is_file():
            return read_gguf(path)
        if path.is_dir():
            return read_hf_folder(path)
        raise ModelNotHere(f"no {model} yet")
    if service.engine.value != "vllm" or model.count("/") != 1:
        raise ModelNotHere(f"{model} is not a file path")
    repo = f"{HF_HUB_IN_CONTAINER}/models--{model.replace('/', '--')}"
    # vLLM's driver mounts its cache volume unless the service mounts that folder itself.
    snapshot = hf_snapshot(host_path(service, repo, (HF_CACHE,)))
    if snapshot is None:
        raise ModelNotHere("not in the Hugging Face cache yet")
    return read_hf_folder(snapshot)


class VolumeMissing(ModelNotHere):
    """The named volume does not exist yet: it holds nothing."""


def model_place(
    service: Service,
    container_path: str,
    volume_folder: Callable[[str], str | None],
    *,
    writable: bool = True,
) -> str:
    """Where `container_path` of `service` is on this machine, through its bind mounts or a
    named volume's folder (`volume_folder`: `docker volume inspect` → `Mountpoint`, None when
    the volume does not exist; vLLM's cache volume when the service mounts no folder there).
    `ModelNotHere` says why not."""
    defaults = (HF_CACHE,) if service.engine.value == "vllm" else ()
    found = mount_of(service, container_path, defaults)
    if found is None:
        raise ModelNotHere(
            f"{container_path} is in no folder or volume the service mounts: add one under "
            "`volumes:` so the model outlives the container"
        )
    volume, relative = found
    base = volume.host
    if not base.startswith("/"):
        try:
            folder = volume_folder(volume.host)
        except AitherError as exc:
            raise ModelNotHere(f"Docker volume {volume.host!r}: {exc.message}") from None
        if folder is None:
            raise VolumeMissing(f"Docker volume {volume.host!r} does not exist yet")
        base = folder
        if writable and not os.access(base, os.W_OK):
            raise ModelNotHere(
                f"Docker volume {volume.host!r} ({base}) cannot be written from here: mount a "
                "folder of this machine instead"
            )
    return base if relative == "." else f"{base.rstrip('/')}/{relative}"


def hf_cache_present(folder: Path) -> bool:
    """A snapshot huggingface_hub would use, and no transfer left unfinished."""
    if hf_snapshot(folder) is None:
        return False
    return not any((folder / "blobs").glob("*.incomplete"))
