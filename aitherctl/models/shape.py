"""What a model is, as far as memory goes: its weights and the shape of its attention, read from
its own metadata (the GGUF header, or Hugging Face's `config.json` and safetensors headers).

Pure: the callers in `files.py` read the files and pass their contents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aitherctl.models.gguf import GGML_TYPE_SIZES, GgufHeader, MetadataError

# Bytes per element of the dtypes Hugging Face configs and safetensors headers name.
DTYPE_BYTES = {
    "float32": 4, "F32": 4, "float16": 2, "F16": 2, "bfloat16": 2, "BF16": 2, "float64": 8,
    "F64": 8, "int8": 1, "I8": 1, "U8": 1, "uint8": 1, "int16": 2, "I16": 2, "int32": 4,
    "I32": 4, "int64": 8, "I64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelShape:
    """One model's memory-relevant facts.

    `weights_bytes`: the weights as stored (exact: the tensors' own sizes). `parameters`: their
    element count when known (Hugging Face files; an engine may load them at another dtype).
    `weights_dtype`: the quantisation or dtype they are stored at (`Q4_1`, `bfloat16`).
    `layers`, `kv_heads`, `key_length`, `value_length`: what sizes the KV cache per token.
    `context_length`: the longest context the model was trained for (an engine's default).
    `quantized`: stored in a packed format (GGUF quantisation, AWQ, GPTQ), loaded as it is.
    """

    source: str  # the file or folder it was read from
    format: str  # "gguf" or "hf"
    weights_bytes: int
    weights_dtype: str
    layers: int
    kv_heads: int
    key_length: int
    value_length: int
    context_length: int | None
    parameters: int | None = None
    quantized: bool = False

    @property
    def kv_elements_per_token(self) -> tuple[int, int]:
        """K and V elements one token takes in the cache, over every layer."""
        return (
            self.layers * self.kv_heads * self.key_length,
            self.layers * self.kv_heads * self.value_length,
        )


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return int(max(value))  # per-layer values (head_count_kv of hybrid models): the largest
    return None


def shape_from_gguf(header: GgufHeader, source: str) -> ModelShape:
    """From the GGUF header: the tensors' bytes at their quantisation and the architecture's
    `block_count`, `attention.head_count`, `attention.head_count_kv`, `embedding_length`,
    `attention.key_length`/`value_length` (default: embedding_length / head_count, as
    llama.cpp's `llama_model_loader` does) and `context_length`."""
    arch = header.architecture
    if arch is None:
        raise MetadataError(f"{source}: GGUF header has no general.architecture")
    layers = _positive_int(header.arch_value("block_count"))
    heads = _positive_int(header.arch_value("attention.head_count"))
    embedding = _positive_int(header.arch_value("embedding_length"))
    if layers is None or heads is None or embedding is None:
        raise MetadataError(
            f"{source}: GGUF header lacks {arch}.block_count, {arch}.attention.head_count or "
            f"{arch}.embedding_length"
        )
    kv_heads = _positive_int(header.arch_value("attention.head_count_kv")) or heads
    key_length = _positive_int(header.arch_value("attention.key_length")) or embedding // heads
    value_length = _positive_int(header.arch_value("attention.value_length")) or key_length
    types: dict[int, int] = {}
    for tensor in header.tensors:
        types[tensor.ggml_type] = types.get(tensor.ggml_type, 0) + tensor.nbytes
    # The type holding most bytes names the file's quantisation (Q4_K_M files mix Q4_K, Q6_K).
    main = max(types, key=lambda kind: types[kind]) if types else 0
    return ModelShape(
        source=source,
        format="gguf",
        weights_bytes=header.weights_bytes,
        weights_dtype=GGML_TYPE_SIZES[main][0],
        layers=layers,
        kv_heads=kv_heads,
        key_length=key_length,
        value_length=value_length,
        context_length=_positive_int(header.arch_value("context_length")),
        parameters=sum(tensor.elements for tensor in header.tensors),
        quantized=main not in (0, 1, 28, 30),  # F32, F16, F64, BF16
    )


@dataclass(frozen=True, slots=True)
class SafetensorsTensors:
    """What the safetensors headers (or the index alone) say: bytes and elements."""

    total_bytes: int
    elements: int | None  # None when only the index's `metadata.total_size` was read


def safetensors_tensors(headers: Sequence[Mapping[str, Any]]) -> SafetensorsTensors:
    """Sum over the headers of every shard (safetensors format: a JSON map of tensor name to
    `dtype`, `shape`, `data_offsets`, plus `__metadata__`)."""
    total = elements = 0
    for header in headers:
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, Mapping):
                continue
            start, end = info.get("data_offsets", (0, 0))
            total += int(end) - int(start)
            count = 1
            for size in info.get("shape", ()):
                count *= int(size)
            elements += count
    return SafetensorsTensors(total, elements)


def shape_from_hf(
    config: Mapping[str, Any], tensors: SafetensorsTensors, source: str
) -> ModelShape:
    """From `config.json` (num_hidden_layers, num_attention_heads, num_key_value_heads,
    hidden_size, head_dim, torch_dtype or dtype, max_position_embeddings; a multimodal model's
    `text_config`) and its safetensors sizes."""
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), Mapping):
        config = {**config["text_config"], **{k: v for k, v in config.items() if k == "dtype"}}
    layers = _positive_int(config.get("num_hidden_layers"))
    heads = _positive_int(config.get("num_attention_heads"))
    hidden = _positive_int(config.get("hidden_size"))
    if layers is None or heads is None or hidden is None:
        raise MetadataError(
            f"{source}: config.json lacks num_hidden_layers, num_attention_heads or hidden_size"
        )
    kv_heads = _positive_int(config.get("num_key_value_heads")) or heads
    head_dim = _positive_int(config.get("head_dim")) or hidden // heads
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        dtype = "float32"
    return ModelShape(
        source=source,
        format="hf",
        weights_bytes=tensors.total_bytes,
        weights_dtype=dtype,
        layers=layers,
        kv_heads=kv_heads,
        key_length=head_dim,
        value_length=head_dim,
        context_length=_positive_int(config.get("max_position_embeddings")),
        parameters=tensors.elements
        if tensors.elements is not None
        else tensors.total_bytes // DTYPE_BYTES[dtype],
        quantized="quantization_config" in config,
    )
