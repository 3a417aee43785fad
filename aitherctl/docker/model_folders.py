"""The models on another Docker host, read (and removed) by a short-lived container there.

A folder on another host cannot be walked from here, so, as the GPU reading does
(`aitherctl.gpu.remote`), a container of an image already on that host (one of its services'
images: never pulled) mounts the folders the profiles' services mount (a bind path of that host,
or a named volume of its engine), under `/aither-models/N`, and a POSIX shell snippet lists them:
every `models--*` folder of a Hugging Face `hub/` (the bytes of its regular files, links not
followed, as `du` counts them once; `partial` when a blob is `.incomplete` or there is no
`snapshots/`), every `.gguf` and `.gguf.incomplete` file of a llama.cpp model folder. `sh`,
`find`, `stat -c` and `awk` are all it needs (GNU coreutils and busybox both have them).
Removing mounts the one folder read-write and runs `rm -rf` on the model's paths.

The container carries the label `ai.aitherctl.probe=models`, has no network, and is removed
when done, failed or timed out.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aitherctl.errors import AitherError

PROBE_LABEL = "ai.aitherctl.probe"
PROBE_KIND = "models"
MOUNT_ROOT = "/aither-models"

# Arguments: KIND DIR pairs (KIND `hub` or `gguf`, DIR inside the probe). Output, tab-separated:
# `hf DIR NAME BYTES STATE` and `gguf DIR NAME BYTES`.
LIST_SNIPPET = r"""
while [ $# -ge 2 ]; do
  kind=$1; dir=$2; shift 2
  [ -d "$dir" ] || continue
  if [ "$kind" = hub ]; then
    for m in "$dir"/models--*; do
      [ -d "$m" ] || continue
      size=$(find "$m" -type f -exec stat -c %s {} + 2>/dev/null | awk '{s+=$1} END {print s+0}')
      state=complete
      [ -d "$m/snapshots" ] || state=partial
      for f in "$m"/blobs/*.incomplete; do [ -e "$f" ] && state=partial; break; done
      printf 'hf\t%s\t%s\t%s\t%s\n' "$dir" "${m##*/}" "$size" "$state"
    done
  else
    for f in "$dir"/*.gguf "$dir"/*.gguf.incomplete; do
      [ -f "$f" ] || continue
      printf 'gguf\t%s\t%s\t%s\n' "$dir" "${f##*/}" "$(stat -c %s "$f")"
    done
  fi
done
"""
REMOVE_SNIPPET = 'rm -rf -- "$@"'


@dataclass(frozen=True, slots=True)
class RemoteFolder:
    """A folder to look in on the host: `source` is what the service mounts (a path of that
    host, or a named volume), `relative` the folder inside it ("." for the mount itself)."""

    source: str
    relative: str
    kind: str  # "hub" (a Hugging Face cache's hub/) or "gguf" (a llama.cpp model folder)


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    folder: RemoteFolder
    name: str  # `models--ORG--NAME`, or a file name (`.incomplete` included)
    size_bytes: int
    partial: bool


def _mounts(sources: Sequence[str], mode: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    inside = {source: f"{MOUNT_ROOT}/{index}" for index, source in enumerate(sorted(set(sources)))}
    return {source: {"bind": target, "mode": mode} for source, target in inside.items()}, inside


def _inside(folder: RemoteFolder, inside: dict[str, str]) -> str:
    return posixpath.normpath(posixpath.join(inside[folder.source], folder.relative))


def list_remote(
    client: Any, image: str, folders: Sequence[RemoteFolder], timeout_s: float = 60.0
) -> list[RemoteEntry]:
    """What `folders` hold on the host behind `client` (a Docker SDK client)."""
    if not folders:
        return []
    volumes, inside = _mounts([f.source for f in folders], "ro")
    by_path = {_inside(folder, inside): folder for folder in folders}
    args = [part for folder in folders for part in (folder.kind, _inside(folder, inside))]
    text = _run(client, image, LIST_SNIPPET, args, volumes=volumes, timeout_s=timeout_s)
    entries = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 4 or fields[1] not in by_path:
            continue
        folder = by_path[fields[1]]
        try:
            size = int(fields[3])
        except ValueError:
            continue
        partial = fields[0] == "hf" and fields[4:5] == ["partial"]
        entries.append(RemoteEntry(folder, fields[2], size, partial))
    return entries


def remove_remote(
    client: Any, image: str, source: str, relative_paths: Sequence[str], timeout_s: float = 60.0
) -> None:
    """Delete `relative_paths` (inside `source`) on the host behind `client`."""
    volumes, inside = _mounts([source], "rw")
    targets = []
    for relative in relative_paths:
        target = posixpath.normpath(posixpath.join(inside[source], relative))
        if not target.startswith(inside[source] + "/"):
            raise AitherError(f"refusing to delete {relative!r}: not inside {source}")
        targets.append(target)
    _run(client, image, REMOVE_SNIPPET, targets, volumes=volumes, timeout_s=timeout_s)


def _run(
    client: Any,
    image: str,
    snippet: str,
    args: Sequence[str],
    *,
    volumes: dict[str, dict[str, str]],
    timeout_s: float,
) -> str:
    """Run `snippet` with `args` in a container of `image`; its stdout (AitherError, one line,
    when it could not run or failed)."""
    import docker.errors
    import requests.exceptions

    container: Any = None
    try:
        container = client.containers.create(
            image,
            command=[snippet, "aither-models", *args],
            entrypoint=["sh", "-c"],
            labels={PROBE_LABEL: PROBE_KIND},
            network_mode="none",
            volumes=volumes,
        )
        container.start()
        started = time.monotonic()
        try:
            status = container.wait(timeout=timeout_s)
        except requests.exceptions.RequestException:
            if time.monotonic() - started >= timeout_s - 0.05:
                raise AitherError(
                    f"the models probe did not finish within {timeout_s:g} s"
                ) from None
            raise
        output = container.logs(stdout=True, stderr=False)
        errors = container.logs(stdout=False, stderr=True)
    except docker.errors.ImageNotFound:
        raise AitherError(f"image {image} is not on that host") from None
    except docker.errors.APIError as exc:
        raise AitherError(f"the engine refused the models probe: {_one_line(str(exc))}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise AitherError(f"Docker engine unreachable: {_one_line(str(exc))}") from None
    finally:
        if container is not None:
            # A failure to clean up is not the probe's: the label finds what was left.
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
    code = int(status.get("StatusCode", -1))
    if code != 0:
        reason = _one_line(errors.decode("utf-8", "replace")) or f"exit code {code}"
        raise AitherError(f"the models probe failed: {reason}")
    return str(output.decode("utf-8", "replace"))


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
