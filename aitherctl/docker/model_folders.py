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

Pulling to the host (`HostFolders`, for `aitherctl.models.pull_remote`) asks the folder what it
holds already (`stat -c %s` of the files to come, `df -Pk` of the mount for the free space),
then copies each file in with the engine's archive API (`PUT /containers/ID/archive`, what
`docker cp` uses) into a container that is created and never started (the engine mounts its
volumes for the copy all the same: checked on the SSH test host), as `NAME.incomplete`
(a copy cut off leaves a partial file under the name it was sent as: checked too), and
finally renames the complete ones and writes the snapshot links and refs in one more run.

The container carries the label `ai.aitherctl.probe=models`, has no network, and is removed
when done, failed or timed out.
"""

from __future__ import annotations

import contextlib
import functools
import posixpath
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
# Arguments: the mount, then KIND PATH pairs (PATH relative to the mount; KIND `file`: its size
# when it is a regular file, `text`: its content, `dir`: whether it is a folder, `partials`: the
# `.incomplete` files in it). Output, tab-separated: `free BYTES` (`df -Pk`: available 1K blocks),
# `file PATH BYTES`, `text PATH CONTENT`, `dir PATH`, `partial PATH NAME`.
STATE_SNIPPET = r"""
root=$1; shift
df -Pk "$root" | awk 'NR == 2 {printf "free\t%.0f\n", $4 * 1024}'
while [ $# -ge 2 ]; do
  kind=$1; p=$2; shift 2
  case $kind in
    file) [ -f "$root/$p" ] && printf 'file\t%s\t%s\n' "$p" "$(stat -c %s "$root/$p")" ;;
    text) [ -f "$root/$p" ] && printf 'text\t%s\t%s\n' "$p" "$(head -c 200 "$root/$p")" ;;
    dir) [ -d "$root/$p" ] && printf 'dir\t%s\n' "$p" ;;
    partials) for f in "$root/$p"/*.incomplete; do
        [ -f "$f" ] && printf 'partial\t%s\t%s\n' "$p" "${f##*/}"; done ;;
  esac
done
exit 0
"""
# Arguments: the mount, then OP A B triples: `check SHA256 PATH` (a file whose content must
# have that sha256: else it is removed and the snippet fails, saying which), `mv FROM TO`,
# `ln TARGET LINK` (a symbolic link, replaced when there), `write TEXT PATH`; paths relative to
# the mount, parents made.
FINISH_SNIPPET = r"""
set -e
root=$1; shift
while [ $# -ge 3 ]; do
  op=$1; a=$2; b=$3; shift 3
  mkdir -p "$(dirname "$root/$b")"
  case $op in
    check) if ! printf '%s  %s\n' "$a" "$root/$b" | sha256sum -c - >/dev/null 2>&1; then
        rm -f "$root/$b"
        printf '%s arrived damaged (its sha256 is not the Hub'"'"'s) and was removed: %s\n' \
          "${b%.incomplete}" '`aitherctl pull` copies it again' >&2
        exit 3
      fi ;;
    mv) mv -f "$root/$a" "$root/$b" ;;
    ln) ln -sfn "$a" "$root/$b" ;;
    write) printf %s "$a" > "$root/$b.tmp"; mv -f "$root/$b.tmp" "$root/$b" ;;
  esac
done
"""
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RemoteFolder:
    """A folder to look in on the host: `source` is what the service mounts (a path of that
    host, or a named volume), `relative` the folder inside it ("." for the mount itself)."""

    source: str
    relative: str
    kind: str  # "hub" (a Hugging Face cache's hub/) or "gguf" (a llama.cpp model folder)


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One model in a folder on another host: a Hugging Face `models--*` folder or a `.gguf`
    file, its bytes on disk, and whether its download is unfinished (`partial`)."""

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


@dataclass(frozen=True, slots=True)
class FolderState:
    """What a folder on the host holds of the paths asked about (see `STATE_SNIPPET`)."""

    free_bytes: int | None
    sizes: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    dirs: frozenset[str] = frozenset()
    partials: dict[str, tuple[str, ...]] = field(default_factory=dict)


class HostFolders:
    """The folders (bind paths or named volumes) of one Docker host, read and written through
    short-lived networkless containers of `image` (one already on that host) over `client`."""

    def __init__(self, client: Any, image: str, host: str, timeout_s: float = 120.0) -> None:
        self.client = client
        self.image = image
        self.host = host
        self.timeout_s = timeout_s

    def state(self, source: str, queries: Sequence[tuple[str, str]]) -> FolderState:
        """`queries`: (KIND, PATH) pairs, PATH relative to `source`'s mount."""
        volumes, inside = _mounts([source], "ro")
        args = [inside[source], *(part for query in queries for part in query)]
        text = _run(
            self.client, self.image, STATE_SNIPPET, args, volumes=volumes, timeout_s=self.timeout_s
        )
        free: int | None = None
        sizes: dict[str, int] = {}
        texts: dict[str, str] = {}
        dirs: set[str] = set()
        partials: dict[str, list[str]] = {}
        for line in text.splitlines():
            kind, _, rest = line.partition("\t")
            fields = rest.split("\t")
            if kind == "free" and fields[0].isdigit():
                free = int(fields[0])
            elif kind == "file" and len(fields) == 2 and fields[1].isdigit():
                sizes[fields[0]] = int(fields[1])
            elif kind == "text" and len(fields) >= 2:
                texts[fields[0]] = "\t".join(fields[1:]).strip()
            elif kind == "dir":
                dirs.add(fields[0])
            elif kind == "partial" and len(fields) == 2:
                partials.setdefault(fields[0], []).append(fields[1])
        return FolderState(
            free, sizes, texts, frozenset(dirs), {k: tuple(v) for k, v in partials.items()}
        )

    def copy(
        self,
        source: str,
        files: Sequence[tuple[Path, str]],
        on_bytes: Callable[[int, int], None],
    ) -> None:
        """Copy each (local file, PATH relative to `source`) in, in order; `on_bytes(index,
        count)` after each chunk sent of `files[index]`. Raises AitherError (one line) when the
        engine refuses or the link drops; what was sent of the file being copied stays there
        under its name."""
        import docker.errors
        import requests.exceptions

        volumes, inside = _mounts([source], "rw")
        container: Any = None
        try:
            container = self.client.containers.create(
                self.image,
                command=["true"],
                entrypoint=["sh", "-c"],
                labels={PROBE_LABEL: PROBE_KIND},
                network_mode="none",
                volumes=volumes,
            )
            for index, (local, relative) in enumerate(files):
                stream = _tar_stream(local, relative, functools.partial(on_bytes, index))
                if not container.put_archive(inside[source], stream):
                    raise AitherError(f"the engine did not take {relative}")
        except docker.errors.ImageNotFound:
            raise AitherError(f"image {self.image} is not on that host") from None
        except docker.errors.APIError as exc:
            raise AitherError(f"the engine refused the copy: {_one_line(str(exc))}") from None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise AitherError(
                f"the copy to host {self.host!r} broke: {_one_line(str(exc))}"
            ) from None
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)

    def finish(self, source: str, operations: Sequence[tuple[str, str, str]]) -> None:
        """Run `FINISH_SNIPPET`'s operations (`mv`, `ln`, `write`) in `source`."""
        if not operations:
            return
        volumes, inside = _mounts([source], "rw")
        args = [inside[source], *(part for op in operations for part in op)]
        _run(self.client, self.image, FINISH_SNIPPET, args, volumes=volumes,
             timeout_s=self.timeout_s, what="putting the model in place")  # fmt: skip


def _tar_stream(local: Path, name: str, sent: Callable[[int], None]) -> Iterator[bytes]:
    """A tar archive of one file, `name` inside it, made as it is read (never whole in memory);
    `sent(count)` after each chunk."""
    size = local.stat().st_size
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(time.time())
    yield info.tobuf(format=tarfile.GNU_FORMAT)
    with local.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            yield chunk
            sent(len(chunk))
    yield b"\0" * ((-size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


def _run(
    client: Any,
    image: str,
    snippet: str,
    args: Sequence[str],
    *,
    volumes: dict[str, dict[str, str]],
    timeout_s: float,
    what: str = "the models probe",
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
                raise AitherError(f"{what} did not finish within {timeout_s:g} s") from None
            raise
        output = container.logs(stdout=True, stderr=False)
        errors = container.logs(stdout=False, stderr=True)
    except docker.errors.ImageNotFound:
        raise AitherError(f"image {image} is not on that host") from None
    except docker.errors.APIError as exc:
        raise AitherError(f"the engine refused {what}: {_one_line(str(exc))}") from None
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
        raise AitherError(f"{what} failed: {reason}")
    return str(output.decode("utf-8", "replace"))


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
