"""Writes GGUF headers for the tests, following GGUF's layout (ggml docs/gguf.md): enough to
give the reader a model of a published shape without its gigabytes of weights."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(value: object) -> bytes:
    if isinstance(value, str):
        return struct.pack("<I", 8) + _string(value)
    if isinstance(value, list):
        items = b"".join(struct.pack("<i", item) for item in value)
        return struct.pack("<I", 9) + struct.pack("<IQ", 5, len(value)) + items
    assert isinstance(value, int)
    return struct.pack("<I", 4) + struct.pack("<I", value)


def gguf_header(
    metadata: Mapping[str, object], tensors: Sequence[tuple[str, tuple[int, ...], int]]
) -> bytes:
    """GGUF v3: metadata (str, u32 or i32 arrays) and tensor infos (name, shape, ggml type)."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(metadata))]
    for key, value in metadata.items():
        out.append(_string(key) + _value(value))
    for offset, (name, shape, kind) in enumerate(tensors):
        out.append(_string(name) + struct.pack("<I", len(shape)))
        out.append(b"".join(struct.pack("<Q", size) for size in shape))
        out.append(struct.pack("<IQ", kind, offset))
    return b"".join(out)
