"""What `pull` downloads, where to, and what it says while it does: plain data, no I/O.

A target is one service's model: a Hugging Face repository (vLLM's `model`, downloaded whole
into the cache layout `models--ORG--NAME/{blobs,snapshots/COMMIT,refs}` that vLLM reads) or one
GGUF file of a repository (a llama.cpp service's `source: ORG/NAME:FILE`, written to the path
its `model` names). `destination` is that place on this machine: the repository's cache folder,
or the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from aitherctl.units import format_bytes, format_duration


class PullKind(StrEnum):
    HF_CACHE = "hf-cache"  # a whole repository, in huggingface_hub's cache layout
    FILE = "file"  # one file, at a path
    OLLAMA = "ollama"  # a model an Ollama server pulls into its own volume (`destination`: URL)


@dataclass(frozen=True, slots=True)
class PullTarget:
    """One service's model as `pull` sees it: the repository and revision, the kind of download,
    where it goes (on this machine or another host), and whether it is there already."""

    service: str
    engine: str
    repo: str
    revision: str
    kind: PullKind
    destination: str  # the cache folder `.../models--ORG--NAME`, or the file's path
    filename: str | None = None  # FILE: the file in the repository
    present: bool = False  # already on disk: nothing to download
    # Another Docker host's ("local": this machine): what the service mounts there (a path of
    # that host or a named volume of its engine) and the place inside it (the cache folder
    # `hub/models--ORG--NAME`, or the file); `destination` then says it as `models` shows it.
    host: str = "local"
    source: str | None = None
    relative: str = ""

    @property
    def remote(self) -> bool:
        return self.source is not None


@dataclass(frozen=True, slots=True)
class NotPullable:
    """A service `pull` cannot download for, and why (one line a user can act on)."""

    service: str
    reason: str
    missing: bool = True  # False: an engine whose models aitherctl does not manage (yet)


def parse_source(text: str) -> tuple[str, str]:
    """`ORG/NAME:FILE` → (repository, file); the profile loader has checked the form."""
    repo, _, filename = text.partition(":")
    return repo, filename


def hf_cache_folder_name(repo: str) -> str:
    """huggingface_hub's `repo_folder_name`: `models--ORG--NAME`."""
    return "models--" + repo.replace("/", "--")


# What vLLM loads of a repository (`model_loader/default_loader.py` `_prepare_weights`, load
# format auto; `weight_utils.py` `download_weights_from_hf`): the weights of the first of these
# formats the repository has, only the shards its `model.safetensors.index.json` names when it
# has one (a repository may also hold a consolidated copy), nothing under `original/` (its
# default ignore pattern); config, tokenizer and template files come with the model.
VLLM_WEIGHT_FORMATS = (".safetensors", ".bin", ".pt")
WEIGHT_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".onnx_data", ".h5", ".msgpack",
    ".ot", ".tflite", ".ckpt", ".npz", ".mlmodel", ".mlpackage", ".nemo",
)  # fmt: skip
SAFETENSORS_INDEX = "model.safetensors.index.json"


def vllm_files(names: Sequence[str], index_shards: set[str] | None = None) -> list[str]:
    """The files of a repository vLLM needs (see above), in the listing's order."""
    kept = [name for name in names if not name.startswith("original/")]
    weights_format = next(
        (fmt for fmt in VLLM_WEIGHT_FORMATS if any(n.endswith(fmt) for n in kept)), None
    )
    chosen = []
    for name in kept:
        if not name.endswith(WEIGHT_SUFFIXES):
            chosen.append(name)
        elif weights_format is not None and name.endswith(weights_format):
            if weights_format == ".safetensors" and index_shards and name not in index_shards:
                continue
            chosen.append(name)
    return chosen


class PullPhase(StrEnum):
    PRESENT = "present"  # the model is already there
    START = "start"  # a file's transfer begins (`resumed_from_bytes` when it continues one)
    PROGRESS = "progress"
    DONE = "done"  # a file is complete and in place
    RETRY = "retry"  # a transfer broke; it continues from where it stopped
    COPY = "copy"  # a downloaded file goes on to another host (`host`): bytes copied so far
    COPIED = "copied"  # ... and is there, whole


@dataclass(frozen=True, slots=True)
class PullEvent:
    """One step of a pull: `--json` writes each as a line, the terminal renders them."""

    phase: PullPhase
    service: str
    file: str | None = None
    done_bytes: int = 0
    total_bytes: int | None = None
    rate_bytes_per_s: float | None = None
    eta_s: float | None = None
    resumed_from_bytes: int = 0
    note: str | None = None
    host: str | None = None  # set for a service on another host


@dataclass(frozen=True, slots=True)
class PullResult:
    """What `pull` did for one service: the repository, where it went, the bytes this run
    downloaded and the number of files, or that it was all there already."""

    service: str
    repo: str
    destination: str
    downloaded_bytes: int  # this run's transfer, not counting what an earlier run left
    files: int
    already_present: bool


def progress_line(event: PullEvent, width: int | None = None) -> str:
    """One line per file: `service  file  done / total  rate  ETA` (a copy to another host:
    `done / total to host 'a'`). With `width` (a terminal's, where the line is rewritten in
    place and must not wrap) a copy's host gives way first, then the file name, keeping its
    end: `…00002-of-00004.safetensors`."""
    line = _line(event, event.file or "")
    if width is None or len(line) < width:
        return line
    if event.phase is PullPhase.COPY and event.done_bytes:
        line = _line(event, event.file or "", with_host=False)  # the copy's first line named it
    if len(line) < width or not event.file:
        return line
    room = len(event.file) - (len(line) - (width - 1)) - 1
    if room < 8:
        return line[: width - 2] + "…"
    return _line(event, "…" + event.file[-room:], with_host=False)


def _line(event: PullEvent, file: str, *, with_host: bool = True) -> str:
    name = f"{event.service}  {file}".rstrip()
    if event.phase is PullPhase.PRESENT:
        where = f"on host {event.host!r}" if event.host else "downloaded"
        return f"{name}: already {where} ({event.note})" if event.note else f"{name}: present"
    total = format_bytes(event.total_bytes) if event.total_bytes is not None else "?"
    if event.phase is PullPhase.START:
        resumed = (
            f", continuing from {format_bytes(event.resumed_from_bytes)}"
            if event.resumed_from_bytes
            else ""
        )
        return f"{name}  {total}{resumed}"
    if event.phase is PullPhase.RETRY:
        return f"{name}  {event.note}; continuing from {format_bytes(event.done_bytes)}"
    to_host = f" to host {event.host!r}"
    if event.phase is PullPhase.COPY and not event.done_bytes:
        return f"{name}  {total}, copying{to_host}"
    rate = (
        f"{format_bytes(int(event.rate_bytes_per_s))}/s"
        if event.rate_bytes_per_s is not None
        else "-"
    )
    if event.phase is PullPhase.DONE:
        return f"{name}  {total} done  {rate}"
    if event.phase is PullPhase.COPIED:
        return f"{name}  {total} copied{to_host}  {rate}"
    eta = format_duration(event.eta_s, unknown="?") if event.eta_s is not None else "?"
    whither = to_host if event.phase is PullPhase.COPY and with_host else ""
    return f"{name}  {format_bytes(event.done_bytes)} / {total}{whither}  {rate}  ETA {eta}"


class RateMeter:
    """Bytes per second over the transfer so far (`now` from the caller's clock)."""

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self.bytes = 0

    def add(self, count: int) -> None:
        self.bytes += count

    def rate(self, now_s: float) -> float | None:
        elapsed = now_s - self.start_s
        return self.bytes / elapsed if elapsed > 0 and self.bytes else None

    def eta(self, now_s: float, remaining_bytes: int | None) -> float | None:
        rate = self.rate(now_s)
        if rate is None or remaining_bytes is None:
            return None
        return remaining_bytes / rate


def download_percent(event: PullEvent) -> int | None:
    """How far a file's download is, in whole percent (None when its size is unknown)."""
    if not event.total_bytes:
        return None
    return min(100, event.done_bytes * 100 // event.total_bytes)


def download_detail(event: PullEvent) -> str:
    """A service's status detail while its model downloads (switch progress, the monitor's
    services panel, serve's keep-alive comments): `FILE  DONE / TOTAL (P%)`."""
    total = format_bytes(event.total_bytes) if event.total_bytes is not None else "?"
    percent = download_percent(event)
    share = f" ({percent}%)" if percent is not None else ""
    return f"{event.file or ''}  {format_bytes(event.done_bytes)} / {total}{share}".strip()


@dataclass(frozen=True, slots=True)
class DownloadState:
    """A service's model download in progress, as the monitor shows it (`state_text`): the file
    and how far it is, reported by whichever process downloads (`models/downloads.py`)."""

    service: str
    host: str
    file: str | None
    done_bytes: int
    total_bytes: int | None
    updated_ts: float  # unix time of the last report
    engine: str | None = None  # the service's, when the reporter knew it
    model: str | None = None

    @property
    def percent(self) -> int | None:
        if not self.total_bytes:
            return None
        return min(100, self.done_bytes * 100 // self.total_bytes)
