"""A GGUF header parser: magic, version, metadata key/values and tensor infos.

Pure: it reads through a `read(n) -> bytes` callable, so the file access stays in `files.py`.
The layout is GGUF's (ggml's `docs/gguf.md`, `ggml/src/gguf.cpp` `gguf_init_from_file_impl`):
little-endian; `GGUF` magic, u32 version (2 and 3 have 64-bit counts), u64 tensor count, u64
metadata count, the key/values (string key, u32 type, value), then per tensor its name, u32
number of dimensions, u64 sizes, u32 ggml type and u64 offset. Tensor data (not read here)
follows, aligned to `general.alignment` (32 by default).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAGIC = b"GGUF"


class MetadataError(ValueError):
    """A model's metadata cannot be read: the message says which file and why."""


# ggml_type → (elements per block, bytes per block): ggml's `type_traits` table
# (ggml/src/ggml.c, `blck_size` and `type_size`), the same numbers as the `gguf` Python
# package's GGML_QUANT_SIZES.
GGML_TYPE_SIZES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# GGUF metadata value types (gguf.md `gguf_metadata_value_type`): struct format of the scalars.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
# Arrays longer than this (the tokenizer's vocabulary) are skipped, not kept: their values are
# not needed for a size estimate and would cost memory.
_KEEP_ARRAY = 64
_MAX_STRING = 1 << 24  # a corrupt length must not make us allocate gigabytes
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class GgufTensor:
    """One tensor as a GGUF header describes it: its name, its shape and its ggml type."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def elements(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count

    @property
    def nbytes(self) -> int:
        """Its data's size in the file and in memory: whole blocks of its type."""
        _, block, size = GGML_TYPE_SIZES[self.ggml_type]
        return self.elements // block * size


@dataclass(frozen=True, slots=True)
class GgufHeader:
    """What a GGUF file's header holds: its version, its metadata key/values and its tensors."""

    version: int
    metadata: dict[str, Any]
    tensors: tuple[GgufTensor, ...]

    @property
    def weights_bytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def arch_value(self, key: str) -> Any:
        """`<architecture>.<key>` (`llama.block_count`), or None."""
        arch = self.architecture
        return None if arch is None else self.metadata.get(f"{arch}.{key}")


class _Reader:
    """Reads ahead in chunks: a header is tens of thousands of small fields (the vocabulary),
    and one `read` call each would take a tenth of a second."""

    _CHUNK = 1 << 20

    def __init__(self, read: Callable[[int], bytes], source: str) -> None:
        self._read = read
        self._buffer = b""
        self._position = 0
        self.source = source

    def _fill(self, size: int) -> None:
        if self._position + size <= len(self._buffer):
            return
        pending = [self._buffer[self._position :]]
        have = len(pending[0])
        while have < size:
            data = self._read(max(size - have, self._CHUNK))
            if not data:
                raise MetadataError(
                    f"{self.source}: GGUF header is cut short (a partial download?)"
                )
            pending.append(data)
            have += len(data)
        self._buffer = b"".join(pending)
        self._position = 0

    def take(self, size: int) -> bytes:
        self._fill(size)
        data = self._buffer[self._position : self._position + size]
        self._position += size
        return data

    def unpack(self, fmt: str) -> Any:
        width = struct.calcsize(fmt)
        self._fill(width)
        value = struct.unpack_from(fmt, self._buffer, self._position)[0]
        self._position += width
        return value

    def _length(self) -> int:
        size: int = self.unpack("<Q")
        if size > _MAX_STRING:
            raise MetadataError(f"{self.source}: GGUF string of {size} bytes: not a GGUF file?")
        return size

    def string(self) -> str:
        return self.take(self._length()).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if count > _KEEP_ARRAY and item_kind in _SCALARS:
                self.skip(struct.calcsize(_SCALARS[item_kind]) * count)  # fixed size
                return None
            if count > _KEEP_ARRAY and item_kind == _STRING:
                self._skip_strings(count)  # the vocabulary, the merges: not decoded
                return None
            items = [self.value(item_kind) for _ in range(count)]
            return items if count <= _KEEP_ARRAY else None
        raise MetadataError(f"{self.source}: unknown GGUF value type {kind}: not a GGUF file?")

    def _skip_strings(self, count: int) -> None:
        """Past `count` strings (u64 length, bytes), in one tight loop over the buffer."""
        unpack = _U64.unpack_from
        while count:
            buffer, position, end = self._buffer, self._position, len(self._buffer)
            while count and position + 8 <= end:
                (size,) = unpack(buffer, position)
                if position + 8 + size > end:
                    break
                position += 8 + size
                count -= 1
            self._position = position
            if count:  # the next string crosses the buffer's end: read on
                self._fill(8 + self._peek_length())

    def _peek_length(self) -> int:
        self._fill(8)
        (size,) = _U64.unpack_from(self._buffer, self._position)
        if size > _MAX_STRING:
            raise MetadataError(f"{self.source}: GGUF string of {size} bytes: not a GGUF file?")
        return int(size)

    def skip(self, size: int) -> None:
        available = len(self._buffer) - self._position
        if size <= available:
            self._position += size
            return
        size -= available
        self._buffer, self._position = b"", 0
        while size > 0:
            data = self._read(min(size, self._CHUNK))
            if not data:
                raise MetadataError(
                    f"{self.source}: GGUF header is cut short (a partial download?)"
                )
            size -= len(data)


def parse_gguf_header(read: Callable[[int], bytes], source: str = "GGUF file") -> GgufHeader:
    """The header of a GGUF file, read from its start. Raises `MetadataError` naming `source`
    when it is not GGUF, an unsupported version or cut short."""
    reader = _Reader(read, source)
    if reader.take(4) != MAGIC:
        raise MetadataError(f"{source}: not a GGUF file (no GGUF magic at its start)")
    version = reader.unpack("<I")
    if version not in (2, 3):
        raise MetadataError(f"{source}: GGUF version {version}; versions 2 and 3 are understood")
    tensor_count, kv_count = reader.unpack("<Q"), reader.unpack("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.unpack("<I"))
    tensors = []
    for _ in range(tensor_count):
        name = reader.string()
        dims = reader.unpack("<I")
        shape = tuple(reader.unpack("<Q") for _ in range(dims))
        ggml_type = reader.unpack("<I")
        reader.unpack("<Q")  # offset in the data section
        if ggml_type not in GGML_TYPE_SIZES:
            raise MetadataError(
                f"{source}: tensor {name!r} has ggml type {ggml_type}, unknown here"
            )
        tensors.append(GgufTensor(name, shape, ggml_type))
    return GgufHeader(version, metadata, tuple(tensors))
