"""Model shapes already read, so a switch does not walk a GGUF header again.

A GGUF header holds the whole vocabulary and merge list before the tensors (about 100,000 strings
for a small model): walking it costs 30-60 ms per file on this kind of machine, and a switch reads
each service's model while planning and again while checking. A shape is kept, per process and in
`<state dir>/cache/model-shapes.json`, under the files it was read from; it is used again only
while every one of those files has the same size, modification time and inode (as `make` and
Python's own bytecode cache decide). A changed, moved or re-downloaded file is read again; a cache
that cannot be read or written is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from aitherctl.models.shape import ModelShape

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

MAX_ENTRIES = 200  # a workstation's models, many times over; the oldest go first
_FIELDS = {field.name for field in fields(ModelShape)}
_memory: dict[str, tuple[list[list[Any]], ModelShape]] = {}


def _stamp(path: Path) -> list[Any] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _cache_file() -> Path:
    from aitherctl.paths import state_dir

    return state_dir() / "cache" / "model-shapes.json"


def _load() -> dict[str, Any]:
    try:
        document = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _fresh(stamps: list[list[Any]]) -> bool:
    from pathlib import Path

    return all(isinstance(s, list) and s and _stamp(Path(s[0])) == s for s in stamps)


def _shape_of(entry: Any) -> tuple[list[list[Any]], ModelShape] | None:
    if not isinstance(entry, dict):
        return None
    stamps, shape = entry.get("files"), entry.get("shape")
    if not isinstance(stamps, list) or not isinstance(shape, dict) or set(shape) != _FIELDS:
        return None
    try:
        return stamps, ModelShape(**shape)
    except TypeError:
        return None


def cached_shape(
    path: Path, read: Callable[[Path], tuple[ModelShape, Sequence[Path]]]
) -> ModelShape:
    """`path`'s shape: from the cache while its files are unchanged, else `read(path)`, which
    returns the shape and every file it was read from (a split model's parts)."""
    key = str(path.resolve())
    remembered = _memory.get(key)
    if remembered is not None and _fresh(remembered[0]):
        return remembered[1]
    document = _load()
    found = _shape_of(document.get(key))
    if found is not None and _fresh(found[0]):
        _memory[key] = found
        return found[1]
    shape, files = read(path)
    stamps = [stamp for stamp in (_stamp(file) for file in files) if stamp is not None]
    if len(stamps) != len(files):
        return shape  # a file vanished while it was read: nothing to vouch for
    _memory[key] = (stamps, shape)
    document.pop(key, None)
    document[key] = {"files": stamps, "shape": asdict(shape)}
    while len(document) > MAX_ENTRIES:
        document.pop(next(iter(document)))
    _store(document)
    return shape


def _store(document: dict[str, Any]) -> None:
    target = _cache_file()
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, target)
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)
